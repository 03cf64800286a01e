/**
 * The SSM agent as a berth agent (the driver's BackendAgents): a host launched with the `ssm`
 * command channel has no berth agent, and this object speaks for it. It says hello once SSM
 * reports the instance's agent Online (and disconnects it when it is not), turns each `run` into
 * one SendCommand of AWS-RunShellScript and follows it with GetCommandInvocation until it ends,
 * reporting `accepted` and `result` as berth's agent does. So the control plane's Run Command —
 * statuses, delivery and execution deadlines, cancel, at-most-once — is the same on both channels.
 *
 * At most once across a control-plane restart: every command carries `berth <invocation id>` as
 * its SSM comment. Before the first hello after a restart the host's recent commands are listed,
 * so an invocation already sent is followed (or its result reported), never sent again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BerthError, errorMessage } from '../../core/errors.js';
import { isTerminal } from '../../core/command-status.js';
import { HOST_TAGS_PATH, PROTOCOL_VERSION, type AgentMessage, type InvocationResult, type KnownInvocation, type ServerMessage } from '../../protocol/messages.js';
import type { BackendAgentHandlers, BackendAgents } from '../types.js';
import type { AwsDriverLogger } from './config.js';
import { DELIVERY_TIMEOUT_S, EXECUTION_TIMEOUT_S, type SsmChannel, type SsmInvocation } from './ssm.js';

/** Prefix of the SSM comment of every command berth sends; the invocation id follows. */
export const COMMENT_PREFIX = 'berth ';
/** SSM keeps the first 24,000 characters of each stream. */
const SSM_OUTPUT_LIMIT = 24_000;
const IDS_PER_CALL = 50;

export type SsmApi = Pick<SsmChannel, 'agentPings' | 'send' | 'status' | 'cancel' | 'commandsFor'>;

export interface SsmAgentsOptions {
  /** How often agents not online yet are looked for. */
  pollMs: number;
  /** How often an online agent is checked again (it can go ConnectionLost). Default 12 polls. */
  recheckMs?: number;
  /** First wait before a command's status is asked; it grows by half each time up to 5 s. Default 250 ms. */
  resultPollMs?: number;
  /** How long a host may take from its launch until SSM says its agent is online. Default 10 min. */
  registrationTimeoutMs?: number;
  /** Where the host's tags are on it (its boot script writes them there). Default /etc/berth/tags.json; tests use a relative one. */
  tagsFile?: string;
  logger: AwsDriverLogger;
}

interface Run {
  invocationId: string;
  commandId?: string;
  sentAt?: number;
  startedAt: string;
  cancelRequested: boolean;
  /** Kept until the control plane acknowledges it (it goes into the next hello until then). */
  result?: InvocationResult;
}

interface Followed {
  id: string;
  tenantId: string;
  instanceId: string;
  online: boolean;
  checkedAt: number;
  /** Commands sent before this process started have been looked for (see recover). */
  recovered: boolean;
  runs: Map<string, Run>;
  stop: AbortController;
  /** The host's tags (JSON) since the control plane last sent them; unset: those its boot script wrote. */
  tags?: string;
}

export class SsmAgents implements BackendAgents {
  private readonly hosts = new Map<string, Followed>();
  private handlers: BackendAgentHandlers | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private again = false;
  private lastPollError = 0;

  constructor(
    private readonly ssm: SsmApi,
    private readonly opts: SsmAgentsOptions,
  ) {}

  get bootTimeoutMs(): number {
    return this.opts.registrationTimeoutMs ?? 10 * 60_000;
  }

  handles(driverData: Record<string, unknown>): boolean {
    return driverData['channel'] === 'ssm' && typeof driverData['instanceId'] === 'string';
  }

  start(handlers: BackendAgentHandlers): void {
    this.handlers = handlers;
    this.schedule(this.opts.pollMs);
  }

  attach(host: { id: string; tenantId: string; driverData: Record<string, unknown> }): void {
    const instanceId = host.driverData['instanceId'];
    if (!this.handles(host.driverData) || typeof instanceId !== 'string' || this.hosts.has(host.id)) return;
    this.hosts.set(host.id, { id: host.id, tenantId: host.tenantId, instanceId, online: false, checkedAt: 0, recovered: false, runs: new Map(), stop: new AbortController() });
    this.schedule(0);
  }

  detach(hostId: string): void {
    const host = this.hosts.get(hostId);
    if (!host) return;
    this.hosts.delete(hostId);
    host.stop.abort();
    if (host.online) this.handlers?.onDisconnect(hostId);
  }

  isAttached(hostId: string): boolean {
    return this.hosts.has(hostId);
  }

  isConnected(hostId: string): boolean {
    return this.hosts.get(hostId)?.online === true;
  }

  session(hostId: string): { tenantId: string } | undefined {
    const host = this.hosts.get(hostId);
    return host?.online ? { tenantId: host.tenantId } : undefined;
  }

  connectedHostIds(): string[] {
    return [...this.hosts.values()].filter((h) => h.online).map((h) => h.id);
  }

  send(hostId: string, msg: ServerMessage): boolean {
    const host = this.hosts.get(hostId);
    if (host && msg.type === 'tags') {
      // No agent of berth's to tell: the next commands write them to the tags file and give them
      // to their commands as BERTH_TAGS (the boot script wrote those the host started with).
      // Kept while the agent is offline too: its next command must not run with the old ones.
      host.tags = JSON.stringify(msg.tags);
      return true;
    }
    if (!host?.online) return false;
    switch (msg.type) {
      case 'run': {
        // A run may be delivered again (after a reconnect): one SendCommand per invocation, ever.
        if (host.runs.has(msg.invocationId)) return true;
        const run: Run = { invocationId: msg.invocationId, startedAt: new Date().toISOString(), cancelRequested: false };
        host.runs.set(msg.invocationId, run);
        this.execute(host, run, msg).catch((err: unknown) => this.opts.logger.warn({ hostId, invocationId: msg.invocationId, err: errorMessage(err) }, 'SSM run failed'));
        return true;
      }
      case 'cancel': {
        const run = host.runs.get(msg.invocationId);
        if (!run) {
          // Nothing was sent for it: cancelled before it ever started, as berth's agent answers.
          this.report(host.id, { type: 'result', invocationId: msg.invocationId, result: ended('Cancelled', 'cancelled before it was sent to SSM', []) });
          return true;
        }
        run.cancelRequested = true;
        if (run.commandId && !run.result) this.cancelCommand(host, run);
        return true;
      }
      case 'ack': {
        if (host.runs.get(msg.invocationId)?.result) host.runs.delete(msg.invocationId);
        return true;
      }
      case 'tags':
        return true; // taken above
      case 'services':
      case 'serviceAction':
      case 'welcome':
      case 'trust':
      case 'switch':
      case 'shellOpen':
      case 'shellInput':
      case 'shellResize':
      case 'shellClose':
      case 'shellAck':
      case 'statsRequest':
        // No supervisor, no berth terminal and no berth agent to read the machine run on an SSM
        // host: the caller must be told the message went nowhere (shells on such hosts are SSM's
        // Session Manager's).
        return false;
    }
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.handlers = undefined;
    for (const host of this.hosts.values()) host.stop.abort();
    this.hosts.clear();
    await this.polling;
  }

  /** Runs a poll `delayMs` from now (sooner wins); a poll under way is followed by another. */
  private schedule(delayMs: number): void {
    if (!this.handlers) return;
    if (this.polling) {
      if (delayMs === 0) this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.polling = this.poll()
        .catch((err: unknown) => this.opts.logger.warn({ err: errorMessage(err) }, 'SSM agent poll failed'))
        .finally(() => {
          this.polling = undefined;
          const next = this.again ? 0 : this.opts.pollMs;
          this.again = false;
          this.schedule(next);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** Which agents are online: one DescribeInstanceInformation per 50 hosts that are due. */
  private async poll(): Promise<void> {
    const now = Date.now();
    const recheck = this.opts.recheckMs ?? 12 * this.opts.pollMs;
    const due = [...this.hosts.values()].filter((h) => !h.online || now - h.checkedAt >= recheck);
    for (let i = 0; i < due.length; i += IDS_PER_CALL) {
      const batch = due.slice(i, i + IDS_PER_CALL);
      let pings: Map<string, string>;
      try {
        pings = await this.ssm.agentPings(batch.map((h) => h.instanceId));
      } catch (err) {
        // Logged at most once a minute: the same failure (permissions, an emulator) repeats every poll.
        if (Date.now() - this.lastPollError > 60_000) {
          this.lastPollError = Date.now();
          this.opts.logger.warn({ hosts: batch.map((h) => h.id), err: errorMessage(err), hint: err instanceof BerthError ? err.hint : undefined }, 'cannot ask SSM which agents are online');
        }
        continue;
      }
      for (const host of batch) {
        if (this.hosts.get(host.id) !== host) continue; // detached meanwhile
        host.checkedAt = now;
        const online = pings.get(host.instanceId) === 'Online';
        if (online && !host.online) await this.hello(host);
        else if (!online && host.online) {
          host.online = false;
          this.opts.logger.info({ hostId: host.id, instanceId: host.instanceId, ping: pings.get(host.instanceId) ?? 'not registered' }, 'SSM agent no longer online');
          this.handlers?.onDisconnect(host.id);
        }
      }
    }
  }

  /** Says hello for the host: with what it still holds, as berth's agent's hello does. */
  private async hello(host: Followed): Promise<void> {
    if (!host.recovered) {
      try {
        await this.recover(host);
        host.recovered = true;
      } catch (err) {
        // Without the list a restarted control plane would take sent commands for lost ones: wait.
        this.opts.logger.warn({ hostId: host.id, err: errorMessage(err) }, 'cannot list the commands sent to the host; trying again at the next poll');
        return;
      }
    }
    const invocations: KnownInvocation[] = [];
    for (const run of host.runs.values()) {
      if (run.result) invocations.push({ invocationId: run.invocationId, state: 'finished', result: run.result });
      else if (run.commandId) invocations.push({ invocationId: run.invocationId, state: 'running', startedAt: run.startedAt });
    }
    host.online = true;
    this.handlers?.onHello(host.id, { type: 'hello', protocol: PROTOCOL_VERSION, hostId: host.id, agentVersion: 'amazon-ssm-agent', bootId: `ssm-${host.instanceId}`, pid: 0, invocations });
  }

  /** Commands this host was sent by an earlier control plane: followed again, or their results kept. */
  private async recover(host: Followed): Promise<void> {
    const sent = await this.ssm.commandsFor(host.instanceId, COMMENT_PREFIX, { signal: host.stop.signal });
    for (const command of sent) {
      const invocationId = command.comment.slice(COMMENT_PREFIX.length);
      if (host.runs.has(invocationId)) continue;
      const inv = await this.ssm.status(command.commandId, host.instanceId, { signal: host.stop.signal });
      const run: Run = { invocationId, commandId: command.commandId, startedAt: new Date().toISOString(), cancelRequested: false };
      if (isTerminal(inv.status)) run.result = toResult(inv, run.startedAt);
      host.runs.set(invocationId, run);
      if (!run.result) void this.follow(host, run);
    }
  }

  private async execute(host: Followed, run: Run, msg: Extract<ServerMessage, { type: 'run' }>): Promise<void> {
    const deliverBy = msg.deliverBy ? Date.parse(msg.deliverBy) : Date.now() + 30_000;
    if (deliverBy <= Date.now()) {
      // The control plane has settled it as DeliveryTimedOut already; starting it now would be wrong.
      host.runs.delete(run.invocationId);
      return;
    }
    const p = msg.parameters;
    const tags = host.tags;
    try {
      const sent = await this.ssm.send(
        [host.instanceId],
        {
          commands: p.commands,
          ...(p.workingDirectory !== undefined ? { workingDirectory: p.workingDirectory } : {}),
          ...(p.env !== undefined ? { env: p.env } : {}),
          executionTimeoutS: clamp(Math.ceil(p.executionTimeoutSeconds), EXECUTION_TIMEOUT_S),
          deliveryTimeoutS: clamp(Math.ceil((deliverBy - Date.now()) / 1000), DELIVERY_TIMEOUT_S),
          comment: `${COMMENT_PREFIX}${run.invocationId}`,
          // Once changed, every command writes them too (cheap): one that never ran cannot leave the file stale.
          tags: { ...(tags !== undefined ? { json: tags } : {}), file: this.opts.tagsFile ?? HOST_TAGS_PATH },
        },
        // The host's agent was Online at the last poll; another check per command would double the calls.
        { skipAgentCheck: true, signal: host.stop.signal },
      );
      run.commandId = sent.commandId;
      run.sentAt = sent.sentAt;
    } catch (err) {
      if (host.stop.signal.aborted) return;
      const refused = err instanceof BerthError && (err.code === 'host_not_connected' || err.code === 'validation_failed');
      const detail = err instanceof BerthError ? `${err.message}. ${err.hint}` : errorMessage(err);
      this.finish(host, run, ended(refused && err.code === 'host_not_connected' ? 'Undeliverable' : 'Failed', `SSM did not take the command: ${detail}`, []));
      return;
    }
    this.report(host.id, { type: 'accepted', invocationId: run.invocationId, startedAt: run.startedAt });
    if (run.cancelRequested) this.cancelCommand(host, run);
    await this.follow(host, run);
  }

  /** Asks SSM for the invocation until it ends (250 ms, growing to 5 s between asks). */
  private async follow(host: Followed, run: Run): Promise<void> {
    const commandId = run.commandId;
    if (!commandId) return;
    let delay = this.opts.resultPollMs ?? 250;
    for (;;) {
      try {
        await sleep(delay, undefined, { signal: host.stop.signal });
      } catch {
        return; // detached or closed: SSM goes on; a later control plane finds it by its comment
      }
      delay = Math.min(5_000, Math.round(delay * 1.5));
      let inv: SsmInvocation;
      try {
        inv = await this.ssm.status(commandId, host.instanceId, { signal: host.stop.signal, ...(run.sentAt !== undefined ? { sentAt: run.sentAt } : {}) });
      } catch (err) {
        if (host.stop.signal.aborted) return;
        if (err instanceof BerthError && err.code === 'command_not_found') {
          this.finish(host, run, ended('Failed', `SSM no longer knows command ${commandId}: ${err.message}`, []));
          return;
        }
        this.opts.logger.warn({ hostId: host.id, commandId, err: errorMessage(err) }, 'asking SSM for a command status failed; asking again');
        continue;
      }
      if (isTerminal(inv.status)) {
        this.finish(host, run, toResult(inv, run.startedAt));
        return;
      }
    }
  }

  private finish(host: Followed, run: Run, result: InvocationResult): void {
    run.result = result;
    if (host.online) this.report(host.id, { type: 'result', invocationId: run.invocationId, result });
  }

  private cancelCommand(host: Followed, run: Run): void {
    if (!run.commandId) return;
    this.ssm.cancel(run.commandId, [host.instanceId], { signal: host.stop.signal }).catch((err: unknown) => {
      // The invocation runs on to its own end; its status is followed and reported either way.
      this.opts.logger.warn({ hostId: host.id, commandId: run.commandId, err: errorMessage(err) }, 'SSM refused to cancel the command');
    });
  }

  private report(hostId: string, msg: AgentMessage): void {
    this.handlers?.onMessage(hostId, msg);
  }
}

/** An SSM invocation that ended, as berth's agent reports a result. */
export function toResult(inv: SsmInvocation, startedAt: string): InvocationResult {
  const status = isTerminal(inv.status) ? (inv.status as InvocationResult['status']) : 'Failed';
  const ssm = `SSM: ${inv.ssmStatus || 'no status'}${inv.ssmStatusDetails && inv.ssmStatusDetails !== inv.ssmStatus ? ` (${inv.ssmStatusDetails})` : ''}`;
  return {
    status,
    statusDetail: inv.reason ? `${inv.reason}; ${ssm}` : ssm,
    exitCodes: inv.commandExitCodes,
    stdout: capture(inv.stdout),
    stderr: capture(inv.stderr),
    startedAt,
    finishedAt: new Date().toISOString(),
  };
}

function capture(text: string): InvocationResult['stdout'] {
  return { text, truncated: text.length >= SSM_OUTPUT_LIMIT, bytes: Buffer.byteLength(text) };
}

function ended(status: InvocationResult['status'], detail: string, exitCodes: number[]): InvocationResult {
  const now = new Date().toISOString();
  const empty = { text: '', truncated: false, bytes: 0 };
  return { status, statusDetail: detail, exitCodes, stdout: empty, stderr: empty, startedAt: now, finishedAt: now };
}

function clamp(value: number, [min, max]: readonly [number, number]): number {
  return Math.min(max, Math.max(min, value));
}
