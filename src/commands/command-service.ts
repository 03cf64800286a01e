/**
 * Run Command on the control plane: validates and records a command with one invocation per target
 * host, delivers it over the agents' connections, and follows every invocation to a terminal status.
 * Agent events and timeouts are handled in dispatch.ts; this file is the user-facing half.
 */
import { EventEmitter } from 'node:events';
import { aggregateStatus, isTerminal, type InvocationStatus } from '../core/command-status.js';
import { BerthError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import type { CommandsRepo, InvocationOutcome } from '../store/commands-repo.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow, InvocationRow } from '../store/schema.js';
import { cancelWaiting, decide, resolveRateControl, waitingDetail } from './rate-control.js';
import type { LiveOutput, FollowEvent } from './live-output.js';
import { OpenCommands, type FinishedCommand } from './open-commands.js';
import { AgentRoundTrips } from './latency.js';
import { toCommandView, type CommandView } from './views.js';
import type { RunShellScriptParameters, ServerMessage } from '../protocol/messages.js';
import { commandEvent } from '../events/changes.js';
import type { EventSink } from '../events/types.js';

export interface SendCommandRequest {
  /** Host ids, plus every live host with all `tags` (within `group` when given) or of `group`. */
  targets: { hostIds?: string[] | undefined; tags?: Record<string, string> | undefined; group?: string | undefined };
  document?: 'RunShellScript';
  parameters: {
    commands: string[];
    workingDirectory?: string | undefined;
    /** Seconds; default 3600 as in SSM. */
    executionTimeout?: number | undefined;
    /** Seconds between TERM and KILL on timeout or cancel; default the agent's (5). */
    killGrace?: number | undefined;
    env?: Record<string, string> | undefined;
  };
  /** Seconds a target's agent has to accept the invocation (counted from when it is sent); default 30. */
  deliveryTimeout?: number | undefined;
  /** At most this many invocations at once: a count, or a percentage of the targets ("10%"). Default: all. */
  maxConcurrency?: number | string | undefined;
  /** Stop sending once more than this many invocations failed: a count or a percentage. Default: never stop. */
  maxErrors?: number | string | undefined;
}

/** What the command service needs from the agent channel. */
export interface AgentSender {
  isConnected(hostId: string): boolean;
  /** The connected agent's session (its tenant was verified when it authenticated). */
  session(hostId: string): { tenantId: string } | undefined;
  send(hostId: string, msg: ServerMessage): boolean;
}

export interface CommandServiceDeps {
  commands: CommandsRepo;
  hosts: HostsRepo;
  agents: AgentSender;
  live: LiveOutput;
  /** Where a command's end (its aggregate status) is reported; its invocations' changes come from the repo. */
  events?: EventSink;
}

export const DEFAULT_EXECUTION_TIMEOUT_S = 3600;
export const DEFAULT_DELIVERY_TIMEOUT_S = 30;

export class CommandService {
  /**
   * Fires `<commandId>` when a command reaches a terminal status, with the finished command when
   * this process has it in memory (see OpenCommands).
   */
  readonly completions = new EventEmitter();
  private readonly open = new OpenCommands();
  /** Latency of the agent's part of each invocation sent by this process. */
  readonly roundTrips = new AgentRoundTrips();
  /** Per rate-controlled command, the end of its last rate-control work (see inTurn). */
  private readonly rateTurns = new Map<string, Promise<void>>();

  constructor(private readonly deps: CommandServiceDeps) {
    this.completions.setMaxListeners(0);
  }

  /**
   * Records the command and delivers it. With `waitMs`, answers when the command is done or the wait
   * ends (whichever is first); the wait is armed before delivery so a fast command is never missed.
   */
  async send(tenantId: string, req: SendCommandRequest, opts: { waitMs?: number; signal?: AbortSignal; createdBy?: { tokenId: string; name: string } } = {}): Promise<CommandView> {
    const targets = await this.resolveTargets(tenantId, req.targets);
    const rateControl = resolveRateControl(req, targets.length);
    let room = rateControl?.maxConcurrency?.limit ?? Infinity;
    const parameters: RunShellScriptParameters = {
      commands: req.parameters.commands,
      executionTimeoutSeconds: req.parameters.executionTimeout ?? DEFAULT_EXECUTION_TIMEOUT_S,
      ...(req.parameters.workingDirectory !== undefined ? { workingDirectory: req.parameters.workingDirectory } : {}),
      ...(req.parameters.env !== undefined ? { env: req.parameters.env } : {}),
      ...(req.parameters.killGrace !== undefined ? { killGraceSeconds: req.parameters.killGrace } : {}),
    };
    // Host id order, so that under rate control the invocations go out in an order a user can predict.
    if (rateControl) targets.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const invocations = targets.map((target): { hostId: string; status: InvocationStatus; statusDetail: string; sent: boolean } => {
      const connected = this.deps.agents.isConnected(target.id);
      if (!connected && target.row) return { hostId: target.id, status: 'Undeliverable', statusDetail: notConnectedMessage(target.row), sent: false };
      if (rateControl && room <= 0) return { hostId: target.id, status: 'Pending', statusDetail: waitingDetail(rateControl), sent: false };
      room--;
      return { hostId: target.id, status: 'Pending', statusDetail: '', sent: true };
    });
    const id = newId('c');
    const status = aggregateStatus(invocations.map((i) => i.status));
    const done = opts.waitMs && !isTerminal(status) ? this.completion(id, opts.waitMs, opts.signal) : undefined;
    const created = await this.deps.commands.create({
      id,
      tenantId,
      document: 'RunShellScript',
      parameters,
      targets: req.targets,
      deliveryTimeoutS: req.deliveryTimeout ?? DEFAULT_DELIVERY_TIMEOUT_S,
      rateControl,
      createdBy: opts.createdBy,
      invocations,
    });
    this.open.track(created.command, created.invocations);
    const deliverBy = deliveryDeadline(created.command.created_at, created.command.delivery_timeout_s);
    for (const inv of invocations) if (inv.sent) this.deliver(id, inv.hostId, parameters, deliverBy);
    if (isTerminal(status)) return toCommandView(created.command, created.invocations);
    if (!done) return toCommandView(created.command, created.invocations, this.deps.live);
    const finished = await done;
    return finished ? toCommandView(finished.command, finished.invocations) : this.get(tenantId, id);
  }

  deliver(commandId: string, hostId: string, parameters: RunShellScriptParameters, deliverBy: Date): boolean {
    this.roundTrips.sent(commandId, hostId);
    return this.deps.agents.send(hostId, {
      type: 'run',
      invocationId: commandId,
      document: 'RunShellScript',
      parameters,
      streamOutput: true,
      deliverBy: deliverBy.toISOString(),
    });
  }

  async get(tenantId: string, id: string): Promise<CommandView> {
    const found = await this.deps.commands.get(tenantId, id);
    if (!found) throw commandNotFound(id);
    return toCommandView(found.command, found.invocations, this.deps.live);
  }

  async list(tenantId: string, limit = 50): Promise<CommandView[]> {
    const rows = await this.deps.commands.list(tenantId, limit);
    return rows.map((row) => toCommandView(row.command, row.invocations, this.deps.live));
  }

  /** Waits until the command is terminal or `timeoutMs` passes; returns its view either way. */
  async wait(tenantId: string, id: string, timeoutMs: number, signal?: AbortSignal): Promise<CommandView> {
    const controller = new AbortController();
    const done = this.completion(id, timeoutMs, AbortSignal.any([controller.signal, ...(signal ? [signal] : [])]));
    const first = await this.get(tenantId, id);
    if (isTerminal(first.status as InvocationStatus) || timeoutMs <= 0) {
      controller.abort();
      return first;
    }
    const finished = await done;
    return finished ? toCommandView(finished.command, finished.invocations) : this.get(tenantId, id);
  }

  /**
   * Resolves when the command completes (with the finished command when it is known in memory), the
   * time is up or the signal aborts (with undefined); never rejects.
   */
  private completion(id: string, timeoutMs: number, signal?: AbortSignal): Promise<FinishedCommand | undefined> {
    return new Promise((resolve) => {
      const done = (finished?: FinishedCommand) => {
        clearTimeout(timer);
        this.completions.off(id, done);
        signal?.removeEventListener('abort', abort);
        resolve(finished);
      };
      const abort = () => done();
      const timer = setTimeout(done, timeoutMs);
      this.completions.on(id, done);
      // An abort already past fires no event: it must end the wait all the same.
      if (signal?.aborted) abort();
      else signal?.addEventListener('abort', abort);
    });
  }

  follow(commandId: string, listener: (event: FollowEvent) => void): () => void {
    return this.deps.live.subscribe(commandId, listener);
  }

  /**
   * Cancels every open invocation: those not yet accepted end Cancelled at once when their agent is
   * away; the others go to Cancelling until their agent confirms that no process is left.
   */
  async cancel(tenantId: string, id: string): Promise<CommandView> {
    const known = await this.deps.commands.get(tenantId, id);
    if (!known) throw commandNotFound(id);
    // Those still waiting their turn first, in step with rate control (which could send one meanwhile).
    if (known.command.rate_control) {
      const step = await this.inTurn(id, () => this.deps.commands.rateStep(id, cancelWaiting('cancelled before it was sent')));
      for (const row of step?.cancelled ?? []) await this.settled(row);
    }
    const found = known.command.rate_control ? await this.deps.commands.get(tenantId, id) : known;
    for (const inv of found?.invocations ?? []) {
      const status = inv.status as InvocationStatus;
      if (isTerminal(status) || status === 'Cancelling') continue;
      const sent = this.deps.agents.send(inv.host_id, { type: 'cancel', invocationId: id });
      if (sent) {
        await this.deps.commands.updateInvocation(id, inv.host_id, ['Pending', 'InProgress'], { status: 'Cancelling', statusDetail: 'cancel requested' });
        this.deps.live.status(id, inv.host_id, 'Cancelling');
      } else if (status === 'Pending') {
        await this.settle(id, inv.host_id, ['Pending'], { status: 'Cancelled', statusDetail: 'cancelled before delivery', finishedAt: new Date() });
      } else {
        await this.deps.commands.updateInvocation(id, inv.host_id, ['InProgress'], { status: 'Cancelling', statusDetail: 'cancel requested; waiting for the agent to reconnect' });
      }
    }
    return this.get(tenantId, id);
  }

  /** Moves an invocation to a terminal status and tells waiters and followers. */
  async settle(
    commandId: string,
    hostId: string,
    from: readonly InvocationStatus[],
    outcome: InvocationOutcome,
  ): Promise<boolean> {
    this.roundTrips.forget(commandId, hostId);
    const row = await this.deps.commands.updateInvocation(commandId, hostId, from, outcome);
    if (!row) return false;
    const rateControlled = this.open.rateControlled(commandId);
    const done = await this.settled(row);
    // Its end may make room for a waiting invocation, or pass the error threshold. (Not known here
    // when the command was sent before a restart: the store says.)
    if (!done && rateControlled !== false) await this.stepRate(commandId);
    return true;
  }

  /**
   * One rate-control step for a command (see rate-control.ts): sends the waiting invocations there
   * is room for, or cancels them all once too many failed. Runs after every end of one of its
   * invocations, and from the sweep (which carries on after a restart).
   */
  stepRate(commandId: string): Promise<void> {
    return this.inTurn(commandId, async () => {
      const step = await this.deps.commands.rateStep(commandId, decide);
      if (!step) return;
      for (const row of step.sent) {
        this.open.update(row);
        this.deliver(commandId, row.host_id, step.command.parameters as unknown as RunShellScriptParameters, deliveryDeadline(row.sent_at ?? new Date(), step.command.delivery_timeout_s));
      }
      for (const row of step.cancelled) await this.settled(row);
    });
  }

  /** Runs `work` after every earlier rate-control work of the same command in this process. */
  private inTurn<T>(commandId: string, work: () => Promise<T>): Promise<T> {
    const before = this.rateTurns.get(commandId) ?? Promise.resolve();
    const result = before.then(work);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.rateTurns.set(commandId, tail);
    void tail.then(() => {
      if (this.rateTurns.get(commandId) === tail) this.rateTurns.delete(commandId);
    });
    return result;
  }

  /**
   * Tells waiters and followers about an invocation that reached a terminal status, and completes
   * the command when it was the last open one; returns whether the command is done.
   */
  private async settled(row: InvocationRow): Promise<boolean> {
    const commandId = row.command_id;
    const hostId = row.host_id;
    this.deps.live.status(commandId, hostId, row.status);
    this.deps.live.drop(commandId, hostId);
    const finished = this.open.settle(row);
    // Not sent by this process (it restarted since): the store knows. Each settler commits before it
    // looks, so the last one to settle always sees them all done.
    const statuses = finished === undefined ? await this.deps.commands.statusesOf(commandId) : (finished?.invocations.map((i) => i.status as InvocationStatus) ?? []);
    const status = finished === null ? undefined : aggregateStatus(statuses);
    const done = status !== undefined && isTerminal(status);
    if (done) {
      this.deps.live.done(commandId);
      this.completions.emit(commandId, finished ?? undefined);
      const hostIds = finished ? finished.invocations.map((i) => i.host_id) : statuses.length === 1 ? [hostId] : [];
      this.deps.events?.emit(commandEvent(row.tenant_id, commandId, status, hostIds));
    }
    return done;
  }

  /** Target hosts; `row` is read from the store only for hosts whose agent is not connected. */
  private async resolveTargets(tenantId: string, targets: SendCommandRequest['targets']): Promise<{ id: string; row?: HostRow }[]> {
    // A host named twice is one target (SSM's InstanceIds too), not a clash in the store.
    const ids = [...new Set(targets.hostIds ?? [])];
    const tags = targets.tags ?? {};
    const group = targets.group;
    if (ids.length === 0 && Object.keys(tags).length === 0 && group === undefined) {
      throw new BerthError('no_targets', 'no targets given', 'Name hosts (`--host ID`), tags (`--tag k=v`) or a group (`--group NAME`).');
    }
    const hosts: { id: string; row?: HostRow }[] = [];
    for (const id of ids) {
      // A connected agent of this tenant is all we need to know: no store read on the hot path.
      if (this.deps.agents.session(id)?.tenantId === tenantId) {
        hosts.push({ id });
        continue;
      }
      const host = await this.deps.hosts.get(tenantId, id);
      if (!host || host.state === 'terminated') {
        throw new BerthError('host_not_found', `host ${id} does not exist${host ? ' any more (terminated)' : ''}`, 'List hosts with `berth host ls`.', { hostId: id });
      }
      // A host named explicitly must be reachable now: fail at once, and say why, instead of queueing
      // work that cannot be delivered (SSM's opaque InvalidInstanceId).
      if (!this.deps.agents.isConnected(id)) {
        throw new BerthError('host_not_connected', notConnectedMessage(host), 'Check the host with `berth host ls`; relaunch it if it is lost.', {
          hostId: id,
          state: host.state,
          agentLastSeen: host.agent_last_seen ? new Date(host.agent_last_seen).toISOString() : null,
        });
      }
      hosts.push({ id, row: host });
    }
    if (Object.keys(tags).length > 0 || group !== undefined) {
      const matching = await this.deps.hosts.list(tenantId, { states: LIVE_HOST_STATES, tags, ...(group !== undefined ? { group } : {}) });
      for (const host of matching) if (!hosts.some((h) => h.id === host.id)) hosts.push({ id: host.id, row: host });
      if (matching.length === 0 && ids.length === 0) {
        const what = [group !== undefined ? `in group ${group}` : '', Object.keys(tags).length > 0 ? `with the tags ${formatTags(tags)}` : ''].filter(Boolean).join(' ');
        throw new BerthError('no_targets', `no live host ${what}`, 'List hosts with `berth host ls`, and groups with `berth group ls`.');
      }
    }
    return hosts;
  }
}

/** The moment after which a command's invocations count as DeliveryTimedOut. */
export function deliveryDeadline(createdAt: Date, deliveryTimeoutS: number): Date {
  return new Date(createdAt.getTime() + deliveryTimeoutS * 1000);
}

function commandNotFound(id: string): BerthError {
  return new BerthError('command_not_found', `command ${id} does not exist`, 'List commands with `berth cmd ls`.');
}

export function notConnectedMessage(host: HostRow): string {
  const seen = host.agent_last_seen ? `agent last seen ${new Date(host.agent_last_seen).toISOString()}` : 'its agent has never connected';
  return `host ${host.id} (${host.hostname}) is ${host.state} and its agent is not connected; ${seen}`;
}

function formatTags(tags: Record<string, string>): string {
  return Object.entries(tags)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
