/** What the pool reconciler (reconciler.ts) is given, and what it reports of each pool. */
import type { CommandService } from '../commands/command-service.js';
import type { HostService } from '../hosts/host-service.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { PoolRow } from '../store/schema.js';
import type { DemandReading, DemandSource } from './demand.js';
import type { EventSink } from '../events/types.js';

export interface ReconcilerDeps {
  pools: PoolsRepo;
  hosts: HostsRepo;
  hostService: HostService;
  commands: CommandService;
  log: (line: string) => void;
  /** A new host's agent must enrol within this. */
  bootTimeoutMs?: number;
  /** Seconds a warm-up may run. */
  warmupTimeoutS?: number;
  /** First back-off delay after a failed launch; doubles per consecutive failure up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Least time between two passes of one pool while kicks keep coming. */
  minPassIntervalMs?: number;
  /**
   * For a pool whose hosts run a stack (its template tags berth.stack): resolves once the host's
   * services are all ready, throws with the reason when they cannot be. A review pool's host then
   * counts as ready only with its stack running: what a claim of it expects.
   */
  servicesReady?: (tenantId: string, hostId: string, timeoutMs: number, signal?: AbortSignal) => Promise<void>;
  /**
   * A fleet driver's pools (see PoolFleet): their group launches and replaces machines, which
   * enrol by themselves; the reconciler sizes the group instead of launching, and warms what enrols.
   */
  fleet?: {
    ensure(pool: PoolRow, signal?: AbortSignal): Promise<void>;
    /** Changes when what every pool's machines boot with changes outside the pool (the agents' CA): its groups are ensured again. */
    bootVersion?: () => string;
  };
  /** Demand figures for pools sized by demand (the store); without it every pool keeps its size. */
  demand?: DemandSource;
  /** The time pools' schedules are read at (default: now). */
  scheduleClock?: () => Date;
  /** Where a pool's target moving on its own (schedule, demand) is reported. */
  events?: EventSink;
}

export interface PoolProgress {
  /** Why the pool is below size, or '' when it is full. */
  notFullReason: string;
  /** A demand-sized pool's target as of the last pass (see demand.ts). */
  demand?: DemandReading;
  /** The ready hosts the last pass aimed for: the size, what the schedule gave, or what demand asked for. */
  target?: number;
}
