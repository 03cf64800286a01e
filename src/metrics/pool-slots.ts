/** Pool hosts by slot, as `berth pool show` counts them (metrics and the dashboard fold the same way). */
import type { PoolHostGroup } from './metrics-repo.js';

/** The slots `berth pool show` reports (PoolCounts without staleReady), in its order. */
export const POOL_SLOTS = ['warming', 'ready', 'reconnecting', 'claiming', 'claimed', 'quarantined', 'retiring', 'stale'] as const;
type PoolSlot = (typeof POOL_SLOTS)[number];

export type SlotCounts = Record<PoolSlot, number>;

export function emptyCounts(): SlotCounts {
  return { warming: 0, ready: 0, reconnecting: 0, claiming: 0, claimed: 0, quarantined: 0, retiring: 0, stale: 0 };
}

/**
 * Folds host groups into each pool's counts by the rule of PoolsRepo.counts: claimed, claiming,
 * retiring and quarantined hosts count in their slot whatever their generation; a waiting host of
 * an older generation is stale. Plus the seconds the pool's ready hosts (any generation) have
 * waited so far, as PoolService adds to idleHostSeconds.
 */
export function foldPoolHosts(groups: readonly PoolHostGroup[]): Map<string, { counts: SlotCounts; readySeconds: number }> {
  const out = new Map<string, { counts: SlotCounts; readySeconds: number }>();
  for (const g of groups) {
    let pool = out.get(g.pool);
    if (!pool) {
      pool = { counts: emptyCounts(), readySeconds: 0 };
      out.set(g.pool, pool);
    }
    if (g.slot === 'ready') pool.readySeconds += g.readySeconds;
    // A waiting host whose agent has not redialled yet cannot be claimed: not `ready` (PoolsRepo.counts).
    const slot = g.slot === 'ready' && !g.connected ? 'reconnecting' : g.slot;
    if (g.current || g.slot === 'claimed' || g.slot === 'claiming' || g.slot === 'retiring' || g.slot === 'quarantined') {
      if (slot in pool.counts) pool.counts[slot as PoolSlot] += g.hosts;
    } else {
      pool.counts.stale += g.hosts;
    }
  }
  return out;
}
