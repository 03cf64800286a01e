/**
 * How many ready hosts a pool keeps right now: its `size`, or what its schedule gives at this time
 * (schedule.ts), grown by demand up to demand.max (demand.ts). The reconciler asks once per pass.
 * When the target moves on its own (the clock crossed a rule's edge, a rush came or left), a
 * `pool resized` event says so and why; a change of the pool's spec is its own `updated` event.
 */
import { poolEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';
import type { PoolRow } from '../store/schema.js';
import { readDemand, type DemandReading, type DemandSource } from './demand.js';
import { scheduledSize, type ScheduledSize } from './schedule.js';

/** How long a demand-sized pool's reading is reused (see demandOf). */
const DEMAND_READ_MS = 500;

export interface PoolTargetsDeps {
  /** Demand figures (the store); without it every pool keeps its scheduled size. */
  demand?: DemandSource | undefined;
  /** The time schedules are read at (default: now). */
  scheduleClock?: (() => Date) | undefined;
  events?: EventSink | undefined;
}

export interface PoolTarget {
  /** The pool as this pass sees it: `size` is the ready hosts to keep now. */
  pool: PoolRow;
  /** What demand asked for, for a pool sized by demand. */
  demand: DemandReading | undefined;
}

const key = (pool: PoolRow) => `${pool.tenant_id}/${pool.name}`;

export class PoolTargets {
  private readonly demandReads = new Map<string, { key: string; at: number; reading: DemandReading }>();
  /** Each pool's last target, with the sizing spec (size, schedule, demand) it was found for. */
  private readonly last = new Map<string, { spec: string; target: number }>();

  constructor(private readonly deps: PoolTargetsDeps) {}

  async of(row: PoolRow): Promise<PoolTarget> {
    const scheduled = scheduledSize(row.size, row.schedule, this.deps.scheduleClock?.() ?? new Date());
    const base = scheduled.size === row.size ? row : { ...row, size: scheduled.size };
    const demand = await this.demandOf(base);
    const pool = demand ? { ...base, size: demand.target } : base;
    this.note(row, pool.size, scheduled, demand);
    return { pool, demand };
  }

  /** The pool is gone. */
  forget(tenantId: string, name: string): void {
    this.demandReads.delete(`${tenantId}/${name}`);
    this.last.delete(`${tenantId}/${name}`);
  }

  private note(row: PoolRow, target: number, scheduled: ScheduledSize, demand: DemandReading | undefined): void {
    const spec = JSON.stringify([row.size, row.schedule, row.demand]);
    const before = this.last.get(key(row));
    this.last.set(key(row), { spec, target });
    // Moved by a change of its spec: that change is the pool's `updated` event already.
    if (!before || before.spec !== spec || before.target === target) return;
    const why = [];
    if (row.schedule) {
      const rule = scheduled.rule === null ? undefined : row.schedule.rules[scheduled.rule];
      why.push(rule && scheduled.rule !== null ? `schedule rule ${scheduled.rule + 1} ("${rule.cron}", ${row.schedule.timezone}) holds` : `no schedule rule holds (${row.schedule.timezone})`);
    }
    if (demand) why.push(`demand: peak ${demand.peak} claims within ${demand.leadTimeS} s`);
    const reason = `keeps ${target} ready host${target === 1 ? '' : 's'} (was ${before.target}): ${why.join('; ') || 'its size'}`;
    (this.deps.events ?? NO_EVENTS).emit({ ...poolEvent(row.tenant_id, row.name, 'resized'), reason });
  }

  /**
   * A demand-sized pool's reading, kept for DEMAND_READ_MS: passes come up to every 50 ms during a
   * claim storm, and the peak's statement reads the window's claims (cheap, but not free).
   */
  private async demandOf(pool: PoolRow): Promise<DemandReading | undefined> {
    if (!this.deps.demand || !pool.demand) return undefined;
    // Kept per pool, and only while its size and demand spec are those it was read for.
    const spec = `${pool.size}/${JSON.stringify(pool.demand)}`;
    const kept = this.demandReads.get(key(pool));
    if (kept && kept.key === spec && Date.now() - kept.at < DEMAND_READ_MS) return kept.reading;
    const reading = await readDemand(this.deps.demand, pool);
    if (reading) this.demandReads.set(key(pool), { key: spec, at: Date.now(), reading });
    return reading;
  }
}
