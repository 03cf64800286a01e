/**
 * The agent-facing half of Run Command: reconciles invocations when an agent (re)connects, records
 * what agents report, and enforces deadlines so no invocation stays open forever (SSM's invocations
 * stuck InProgress): delivery timeout for invocations never accepted, and a watchdog past the
 * execution timeout for agents that went silent.
 */
import type { AgentMessage, InvocationResult, RunShellScriptParameters } from '../protocol/messages.js';
import type { CommandsRepo, InvocationOutcome, OpenInvocation } from '../store/commands-repo.js';
import { deliveryDeadline, type AgentSender, type CommandService } from './command-service.js';
import type { LiveOutput } from './live-output.js';

export interface DispatcherDeps {
  service: CommandService;
  commands: CommandsRepo;
  agents: AgentSender;
  live: LiveOutput;
  log: (line: string) => void;
  /** Extra time past the execution timeout (and kill grace) before the watchdog gives up on an agent. */
  watchdogSlackMs?: number;
  /** How long an accepted invocation may finish before InProgress is written (see startedSoon). */
  startRecordDelayMs?: number;
}

type Hello = Extract<AgentMessage, { type: 'hello' }>;

export class CommandDispatcher {
  private readonly slackMs: number;
  private readonly startDelayMs: number;
  private readonly pendingStarts = new Map<string, NodeJS.Timeout>();

  constructor(private readonly deps: DispatcherDeps) {
    this.slackMs = deps.watchdogSlackMs ?? 60_000;
    this.startDelayMs = deps.startRecordDelayMs ?? 50;
  }

  async onHello(hostId: string, hello: Hello): Promise<void> {
    const known = new Map(hello.invocations.map((inv) => [inv.invocationId, inv]));
    for (const inv of hello.invocations) {
      if (inv.state === 'finished' && inv.result) await this.onResult(hostId, inv.invocationId, inv.result);
    }
    const opens = await this.deps.commands.openInvocations({ hostId });
    // A run this server has already ended (cancelled or timed out for delivery while the agent was
    // away, its acceptance lost with the connection) must not go on: the store says it is over.
    const stillOpen = new Set(opens.map((open) => open.commandId));
    for (const inv of hello.invocations) {
      if (inv.state === 'running' && !stillOpen.has(inv.invocationId)) this.deps.agents.send(hostId, { type: 'cancel', invocationId: inv.invocationId });
    }
    for (const open of opens) {
      const seen = known.get(open.commandId);
      if (seen?.state === 'finished') continue;
      if (seen?.state === 'running') {
        if (open.status === 'Pending') await this.markStarted(hostId, open.commandId, seen.startedAt);
        if (open.status === 'Cancelling') this.deps.agents.send(hostId, { type: 'cancel', invocationId: open.commandId });
        continue;
      }
      if (open.status === 'Pending') {
        if (!open.sentAt) continue; // waiting its turn under rate control: the rate step sends it
        const deliverBy = deliveryDeadline(open.sentAt, open.deliveryTimeoutS);
        if (deliverBy.getTime() > Date.now()) this.deps.service.deliver(open.commandId, hostId, open.parameters as RunShellScriptParameters, deliverBy);
      } else {
        // Accepted earlier, but this agent has no record of it: its state was lost with a reset host.
        await this.deps.service.settle(open.commandId, hostId, [open.status], {
          status: open.status === 'Cancelling' ? 'Cancelled' : 'Failed',
          statusDetail: 'the agent reconnected without any record of this command (its state was reset); the outcome is unknown',
          finishedAt: new Date(),
        });
      }
    }
  }

  async onMessage(hostId: string, msg: AgentMessage): Promise<void> {
    switch (msg.type) {
      case 'accepted':
        this.startedSoon(hostId, msg.invocationId, msg.startedAt);
        return;
      case 'output':
        this.deps.live.append(msg.invocationId, hostId, msg.stream, msg.data);
        return;
      case 'result':
        this.deps.service.roundTrips.received(msg.invocationId, hostId);
        this.cancelStart(hostId, msg.invocationId);
        await this.onResult(hostId, msg.invocationId, msg.result);
        return;
      case 'heartbeat':
      case 'hello':
        return;
    }
  }

  /** The host is gone (terminated or lost): its open invocations can never report. */
  async failOpenForHost(hostId: string, detail: string): Promise<void> {
    for (const open of await this.deps.commands.openInvocations({ hostId })) {
      // One still waiting its turn was never sent: Undeliverable, which (as in SSM) is no error.
      const never = open.status === 'Pending' && !open.sentAt;
      await this.deps.service.settle(open.commandId, hostId, [open.status], {
        status: never ? 'Undeliverable' : open.status === 'Cancelling' ? 'Cancelled' : 'Failed',
        statusDetail: never ? `${detail} before its turn came` : detail,
        finishedAt: new Date(),
      });
    }
  }

  /** Enforces delivery timeouts and the execution watchdog; called periodically. */
  async sweep(now = new Date()): Promise<void> {
    const waiting = new Set<string>();
    for (const open of await this.deps.commands.openInvocations()) {
      if (open.status === 'Pending' && !open.sentAt) {
        waiting.add(open.commandId); // no deadline while it waits its turn
        continue;
      }
      if (this.pendingStarts.has(`${open.commandId}/${open.hostId}`)) continue; // accepted moments ago
      const outcome = this.overdue(open, now);
      if (!outcome) continue;
      // Pending ones too: a run still sitting in a stalled agent's socket must not start later.
      this.deps.agents.send(open.hostId, { type: 'cancel', invocationId: open.commandId });
      await this.deps.service.settle(open.commandId, open.hostId, [open.status], outcome);
    }
    // Rate-controlled commands with invocations waiting: normally each end sends the next, but
    // after a restart (or an end recorded by another server) nothing else would.
    for (const commandId of waiting) await this.deps.service.stepRate(commandId);
  }

  private overdue(open: OpenInvocation, now: Date): InvocationOutcome | undefined {
    if (open.status === 'Pending') {
      if (now < deliveryDeadline(open.sentAt ?? open.createdAt, open.deliveryTimeoutS)) return undefined;
      const why = this.deps.agents.isConnected(open.hostId) ? 'the agent did not accept it' : 'the agent was not connected';
      return { status: 'DeliveryTimedOut', statusDetail: `not delivered within ${open.deliveryTimeoutS} s: ${why}`, finishedAt: now };
    }
    const timeoutS = Number(open.parameters['executionTimeoutSeconds'] ?? 3600);
    // The agent's TERM-to-KILL grace comes after the timeout: its result may come that much later.
    const graceS = Number(open.parameters['killGraceSeconds'] ?? 0);
    const started = (open.startedAt ?? open.createdAt).getTime();
    if (now.getTime() < started + (timeoutS + graceS) * 1000 + this.slackMs) return undefined;
    return {
      status: open.status === 'Cancelling' ? 'Cancelled' : 'TimedOut',
      statusDetail: `no result from the agent ${Math.round(this.slackMs / 1000)} s past the ${timeoutS} s execution timeout; the agent is ${this.deps.agents.isConnected(open.hostId) ? 'connected but silent' : 'not connected'}`,
      finishedAt: now,
    };
  }

  /**
   * Most commands finish within milliseconds of being accepted; recording InProgress for them is a
   * write nobody reads. So the InProgress write waits briefly and is dropped when the result comes
   * first. (Nothing is lost if the server dies meanwhile: the agent's hello reports the invocation
   * as running.)
   */
  private startedSoon(hostId: string, commandId: string, startedAt: string): void {
    const key = `${commandId}/${hostId}`;
    const timer = setTimeout(() => {
      this.pendingStarts.delete(key);
      this.markStarted(hostId, commandId, startedAt).catch((err: unknown) => this.deps.log(`host ${hostId}: recording InProgress failed: ${String(err)}`));
    }, this.startDelayMs);
    this.pendingStarts.set(key, timer);
  }

  private cancelStart(hostId: string, commandId: string): void {
    const key = `${commandId}/${hostId}`;
    clearTimeout(this.pendingStarts.get(key));
    this.pendingStarts.delete(key);
  }

  private async markStarted(hostId: string, commandId: string, startedAt: string | undefined): Promise<void> {
    const changed = await this.deps.commands.updateInvocation(commandId, hostId, ['Pending'], {
      status: 'InProgress',
      statusDetail: '',
      startedAt: startedAt ? new Date(startedAt) : new Date(),
    });
    if (changed) this.deps.live.status(commandId, hostId, 'InProgress');
  }

  private async onResult(hostId: string, commandId: string, result: InvocationResult): Promise<void> {
    await this.deps.service.settle(commandId, hostId, ['Pending', 'InProgress', 'Cancelling'], {
      status: result.status,
      statusDetail: result.statusDetail,
      exitCodes: result.exitCodes,
      stdout: result.stdout,
      stderr: result.stderr,
      startedAt: new Date(result.startedAt),
      finishedAt: new Date(result.finishedAt),
    });
    // Acknowledge even when nothing changed (a duplicate), so the agent can forget it; on the next
    // turn, so the answer to whoever waits for this result is written first.
    setImmediate(() => this.deps.agents.send(hostId, { type: 'ack', invocationId: commandId }));
  }
}
