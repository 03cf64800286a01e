/**
 * Each pool's level over time, in memory: how many hosts were ready, warming and claimed at each
 * sample. Sampled on a timer for every tenant with pools (so the history is there before anyone
 * opens the dashboard) and at every dashboard snapshot (so a change shows at once). The history
 * starts with the server process: the store keeps no record of past levels.
 */
export interface LevelSample {
  /** Epoch ms. */
  at: number;
  ready: number;
  warming: number;
  claimed: number;
}

export interface PoolLevelCounts {
  pool: string;
  ready: number;
  warming: number;
  claimed: number;
}

export interface PoolLevelsOptions {
  /** Samples kept per pool (default 720: an hour at the default 5 s). */
  capacity?: number;
  /** A sample closer than this to the previous one replaces it (default 1 s). */
  minSpacingMs?: number;
}

export class PoolLevels {
  private readonly capacity: number;
  private readonly minSpacingMs: number;
  /** tenant → pool → samples, oldest first. */
  private readonly byTenant = new Map<string, Map<string, LevelSample[]>>();

  constructor(opts: PoolLevelsOptions = {}) {
    this.capacity = Math.max(2, opts.capacity ?? 720);
    this.minSpacingMs = opts.minSpacingMs ?? 1000;
  }

  /** Records the tenant's pools as they are now; pools not listed are forgotten (removed). */
  record(tenantId: string, pools: readonly PoolLevelCounts[], at = Date.now()): void {
    const previous = this.byTenant.get(tenantId) ?? new Map<string, LevelSample[]>();
    const next = new Map<string, LevelSample[]>();
    for (const p of pools) {
      const samples = previous.get(p.pool) ?? [];
      const sample: LevelSample = { at, ready: p.ready, warming: p.warming, claimed: p.claimed };
      const last = samples.at(-1);
      // Two samples close together: the newer stands for both, unless the older is the one that
      // recorded a change (then both are kept, so a short spike is not lost).
      const before = samples.at(-2);
      if (last && at - last.at < this.minSpacingMs && before && sameLevel(before, last)) samples[samples.length - 1] = sample;
      else samples.push(sample);
      if (samples.length > this.capacity) samples.splice(0, samples.length - this.capacity);
      next.set(p.pool, samples);
    }
    this.byTenant.set(tenantId, next);
  }

  /** The pool's samples, oldest first (a copy). */
  history(tenantId: string, pool: string): LevelSample[] {
    return [...(this.byTenant.get(tenantId)?.get(pool) ?? [])];
  }
}

function sameLevel(a: LevelSample, b: LevelSample): boolean {
  return a.ready === b.ready && a.warming === b.warming && a.claimed === b.claimed;
}
