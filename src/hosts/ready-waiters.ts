/**
 * Waiters for hosts' agents to enrol: whoever launched or reset a host waits here until the agent
 * says hello (or the time is up, or the caller gives up). Many may wait for one host.
 */
import { EventEmitter } from 'node:events';
import { BerthError } from '../core/errors.js';

export class ReadyWaiters {
  private readonly events = new EventEmitter();

  constructor() {
    this.events.setMaxListeners(0);
  }

  /** The host's agent has enrolled: every waiter for it resolves. */
  ready(hostId: string): void {
    this.events.emit(hostId);
  }

  /** The host is gone (terminated): its agent never will enrol, so nobody waits any longer. */
  gone(hostId: string, reason: string): void {
    this.events.emit(hostId, new BerthError('launch_failed', `host ${hostId} was terminated while waiting for its agent: ${reason}`, 'Launch another host.', { hostId }));
  }

  /** Resolves when `ready(id)` comes within `timeoutMs`; else rejects with deadline_exceeded. */
  wait(id: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.events.off(id, onReady);
        signal?.removeEventListener('abort', onAbort);
      };
      const onReady = (err?: BerthError) => {
        cleanup();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = () => {
        cleanup();
        reject(new BerthError('deadline_exceeded', `host ${id}: waiting for its agent was aborted`, 'Retry the launch.'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new BerthError('deadline_exceeded', `host ${id}: its agent did not enrol within ${timeoutMs} ms`, 'Check the host console log in the data dir, and that hosts can reach the server on the bridge.', { hostId: id }));
      }, timeoutMs);
      this.events.on(id, onReady);
      // An abort already past fires no event: it must end the wait all the same.
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort);
    });
  }
}

/** A wait for some agent to (re)connect, made before the caller looks in the store (so none is missed). */
export interface ArrivalWait {
  /** True when a matching agent connected within the time, false when the time ran out or the wait was cancelled. */
  arrived: Promise<boolean>;
  cancel(): void;
}

/**
 * Agents (re)connecting to hosts the store already holds as running: after a server restart, a
 * pool's ready hosts count only once their agents redial, and a claim waits here for one.
 */
export class AgentArrivals<Row> {
  private readonly events = new EventEmitter();

  constructor() {
    this.events.setMaxListeners(0);
  }

  arrived(row: Row): void {
    this.events.emit('arrival', row);
  }

  wait(matches: (row: Row) => boolean, timeoutMs: number, signal?: AbortSignal): ArrivalWait {
    let settle: (came: boolean) => void = () => undefined;
    const arrived = new Promise<boolean>((resolve) => {
      const onArrival = (row: Row) => {
        if (matches(row)) settle(true);
      };
      const onAbort = () => settle(false);
      const timer = setTimeout(() => settle(false), Math.max(0, timeoutMs));
      settle = (came: boolean) => {
        clearTimeout(timer);
        this.events.off('arrival', onArrival);
        signal?.removeEventListener('abort', onAbort);
        resolve(came);
      };
      this.events.on('arrival', onArrival);
      if (signal?.aborted) settle(false);
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
    return { arrived, cancel: () => settle(false) };
  }
}
