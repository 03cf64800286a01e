/**
 * Pools sized by demand. A fixed `size` is either too small for the morning rush or pure cost at
 * night (users of warm pools ask for demand-driven sizes more than for anything else). A pool with
 * `demand` keeps as many ready hosts as the most claims it saw arrive within one refill's lead time
 * during the last `window` seconds — exactly the stock that would have served that burst without a
 * cold start — never fewer than `size` nor more than `demand.max`. As the burst ages out of the
 * window the target falls back, and the longest-idle extra hosts are retired.
 */
import type { PoolDemand, PoolRow } from '../store/schema.js';

/** Lead time used before any host of the pool has become ready (nothing measured yet). */
export const DEFAULT_LEAD_TIME_S = 10;
/** Refills are rarely quicker than this under load, however fast one host boots alone. */
export const MIN_LEAD_TIME_S = 1;

export interface DemandReading {
  /** Ready hosts the pool keeps now. */
  target: number;
  /** Most claims within one lead time during the window. */
  peak: number;
  /** The lead time used, in seconds (configured, or measured from the pool's hosts). */
  leadTimeS: number;
}

/** Where the figures come from: the store (ClaimsRepo.demandPeak, HostsRepo.medianLeadTimeS). */
export interface DemandSource {
  demandPeak(tenantId: string, pool: string, windowS: number, spanS: number): Promise<number>;
  medianLeadTimeS(tenantId: string, pool: string): Promise<number | undefined>;
}

export function leadTimeFor(demand: PoolDemand, measuredS: number | undefined): number {
  if (demand.leadTimeS !== null) return demand.leadTimeS;
  return Math.max(MIN_LEAD_TIME_S, measuredS ?? DEFAULT_LEAD_TIME_S);
}

export function targetFor(size: number, demand: PoolDemand, peak: number): number {
  return Math.min(demand.max, Math.max(size, peak));
}

/** The pool's ready target now; a pool without demand keeps its size (no statement). */
export async function readDemand(source: DemandSource, pool: PoolRow): Promise<DemandReading | undefined> {
  const demand = pool.demand;
  if (!demand) return undefined;
  const leadTimeS = leadTimeFor(demand, demand.leadTimeS === null ? await source.medianLeadTimeS(pool.tenant_id, pool.name) : undefined);
  const peak = await source.demandPeak(pool.tenant_id, pool.name, demand.windowS, leadTimeS);
  return { target: targetFor(pool.size, demand, peak), peak, leadTimeS: Math.round(leadTimeS * 100) / 100 };
}
