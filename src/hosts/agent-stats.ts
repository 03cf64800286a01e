/**
 * What a host uses, asked of its agent (a `statsRequest` frame, answered by `stats`), for drivers
 * that cannot measure their hosts from outside: an EC2 instance is a machine of its own, and its
 * agent reads /proc and its root filesystem. One request per ask, answered or failed within a
 * bound: an agent that does not answer (gone, or older than the frame) costs a caller at most that.
 */
import { randomUUID } from 'node:crypto';
import { BerthError } from '../core/errors.js';
import type { HostStats } from '../drivers/types.js';
import type { AgentMessage, ServerMessage } from '../protocol/messages.js';

/** A reading is a few file reads on the host: an agent that takes longer is not going to answer. */
const DEFAULT_TIMEOUT_MS = 3_000;

interface Pending {
  hostId: string;
  resolve: (stats: HostStats) => void;
  reject: (err: BerthError) => void;
  timer: NodeJS.Timeout;
}

export interface AgentStatsDeps {
  /** Sends a frame to the host's agent; false when it cannot take it (not connected, or a backend's agent). */
  send: (hostId: string, msg: ServerMessage) => boolean;
  timeoutMs?: number;
}

export class AgentStats {
  private readonly pending = new Map<string, Pending>();

  constructor(private readonly deps: AgentStatsDeps) {}

  ask(hostId: string): Promise<HostStats> {
    const requestId = randomUUID();
    return new Promise<HostStats>((resolve, reject) => {
      const timeoutMs = this.deps.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new BerthError('host_not_connected', `host ${hostId}'s agent did not say what the host uses within ${timeoutMs / 1000} s`, 'Retry; an agent older than this server does not answer (bake the image again with the current agent).', { hostId }));
      }, timeoutMs);
      this.pending.set(requestId, { hostId, resolve, reject, timer });
      if (!this.deps.send(hostId, { type: 'statsRequest', requestId })) {
        this.settle(requestId)?.reject(new BerthError('host_not_connected', `host ${hostId} has no berth agent connected to say what it uses`, "Wait until its agent is connected (berth host show). A host whose commands go through SSM has none: its instance's CloudWatch metrics say what it uses.", { hostId }));
      }
    });
  }

  /** An agent's `stats` frame. */
  onReply(hostId: string, msg: Extract<AgentMessage, { type: 'stats' }>): void {
    const pending = this.pending.get(msg.requestId);
    if (!pending || pending.hostId !== hostId) return; // not this host's to answer
    this.settle(msg.requestId);
    if (msg.error && Object.keys(msg.stats).length === 0) {
      pending.reject(new BerthError('internal', `host ${hostId}'s agent could not read what the host uses: ${msg.error}`, 'Look at the agent\'s log on the host.', { hostId }));
    } else {
      pending.resolve(msg.stats);
    }
  }

  /** The host's agent went away: nothing it was asked will be answered. */
  onGone(hostId: string): void {
    for (const [requestId, pending] of this.pending) {
      if (pending.hostId !== hostId) continue;
      this.settle(requestId);
      pending.reject(new BerthError('host_not_connected', `host ${hostId}'s agent went away before it said what the host uses`, 'Retry once its agent is connected again.', { hostId }));
    }
  }

  private settle(requestId: string): Pending | undefined {
    const pending = this.pending.get(requestId);
    if (!pending) return undefined;
    clearTimeout(pending.timer);
    this.pending.delete(requestId);
    return pending;
  }
}
