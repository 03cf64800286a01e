/**
 * What is reported and remembered about one service: its public state and why, since when, its restart
 * history. Kept apart from the state machine (service.ts), which decides; this records.
 */
import type { ServiceSpec, ServiceState, ServiceStatus } from '../../protocol/messages.js';
import type { ObservedExit } from './backoff.js';
import type { ServiceRecord } from './state-file.js';

export class ServiceStatusBook {
  state: ServiceState = 'stopped';
  reason = 'not started';
  sinceMs: number;
  /** Restarts made by the restart policy since the service last started with a new spec. */
  restarts = 0;
  /** Reloads by signal since then. */
  reloads = 0;
  /** Consecutive runs shorter than restart.resetAfterSeconds. */
  quickExits = 0;
  lastExit: ObservedExit | null = null;

  constructor(
    private readonly clock: () => number,
    private readonly changed: () => void,
  ) {
    this.sinceMs = clock();
  }

  /** Records a state (and why); `since` moves only when the state itself changes. */
  set(state: ServiceState, reason: string): void {
    if (this.state === state && this.reason === reason) return;
    if (this.state !== state) this.sinceMs = this.clock();
    this.state = state;
    this.reason = reason;
    this.changed();
  }

  /** A new spec: the restart history starts over. */
  resetHistory(): void {
    this.restarts = 0;
    this.reloads = 0;
    this.quickExits = 0;
  }

  /** A reload: reported even when state and reason stay the same (the configHash has changed). */
  reloaded(reason: string): void {
    this.reloads++;
    this.reason = reason;
    this.changed();
  }

  restore(record: ServiceRecord): void {
    this.restarts = record.restarts;
    this.reloads = record.reloads;
    this.quickExits = record.quickExits;
    this.lastExit = record.lastExit;
    this.state = record.state;
    this.reason = record.reason;
    this.sinceMs = Date.parse(record.since) || this.clock();
  }

  status(spec: ServiceSpec, pid: number | null): ServiceStatus {
    const exit = this.lastExit;
    return {
      name: spec.name,
      state: this.state,
      restarts: this.restarts,
      reloads: this.reloads,
      pid,
      lastExit: exit ? { code: exit.code, signal: exit.signal, at: exit.at } : null,
      reason: this.reason,
      since: new Date(this.sinceMs).toISOString(),
      configHash: spec.configHash,
    };
  }

  record(
    spec: ServiceSpec,
    run: { pid: number; startTime: number; startedAtMs: number } | undefined,
    flags: { active: boolean; ready: boolean },
  ): ServiceRecord {
    return {
      version: 1,
      spec,
      active: flags.active,
      state: this.state,
      reason: this.reason,
      since: new Date(this.sinceMs).toISOString(),
      pid: run?.pid ?? null,
      startTime: run?.startTime ?? null,
      startedAtMs: run?.startedAtMs ?? null,
      ready: flags.ready,
      restarts: this.restarts,
      reloads: this.reloads,
      quickExits: this.quickExits,
      lastExit: this.lastExit,
    };
  }
}
