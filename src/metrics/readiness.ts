/**
 * How long hosts take to become ready, as Prometheus histograms read from the store: launch until
 * the agent is ready (`berth_host_ready_seconds`, every host) and, for pool hosts, launch until ready
 * in the pool, warm-up and health check done (`berth_pool_refill_seconds`: how long the pool takes
 * to replace a host a claim took). Like the claims (see metrics.ts), each host is added up once for
 * good when its time is older than the settle horizon, so a scrape reads only recent hosts.
 */
import { histogramSamples, type MetricFamily } from './exposition.js';
import type { MetricsRepo, ReadinessHistogram, StoreTime } from './metrics-repo.js';

/** Bucket bounds, ms: a local host is ready in tens of ms, an EC2 instance in tens of seconds. */
export const READY_BUCKETS_MS: readonly number[] = [25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000];

interface Tally {
  kind: ReadinessHistogram['kind'];
  pool: string;
  count: number;
  sumMs: number;
  buckets: number[];
}

/** One tenant's hosts added up so far, and from when the next scrape reads. */
export class ReadinessHistory {
  private since: StoreTime | null = null;
  private readonly settled = new Map<string, Tally>();

  /** Reads what changed since the last call and returns the histograms as they stand now. */
  async collect(repo: MetricsRepo, tenantId: string, settleMs: number): Promise<MetricFamily[]> {
    const upto = await repo.readinessHorizon(this.since, settleMs);
    const rows = await repo.readinessHistograms(tenantId, this.since, upto, READY_BUCKETS_MS);
    const recent = new Map<string, Tally>();
    for (const r of rows) add(r.settled ? this.settled : recent, r);
    this.since = upto;
    const all = new Map<string, Tally>();
    for (const t of [...this.settled.values(), ...recent.values()]) add(all, t);
    const boundsS = READY_BUCKETS_MS.map((ms) => ms / 1000);
    const family = (kind: Tally['kind'], name: string, help: string): MetricFamily => ({
      name,
      type: 'histogram',
      help,
      samples: [...all.values()]
        .filter((t) => t.kind === kind)
        .sort((a, b) => a.pool.localeCompare(b.pool))
        .flatMap((t) => histogramSamples({ tenant: tenantId, pool: t.pool }, boundsS, t.buckets, t.sumMs / 1000, t.count)),
    });
    return [
      family('host', 'berth_host_ready_seconds', 'Launch until the host\'s agent was ready, by pool (pool="" for hosts of no pool).'),
      family('pool', 'berth_pool_refill_seconds', "Launch until the pool host was ready in its pool (boot, warm-up and health check): how long a pool takes to replace a claimed host."),
    ];
  }
}

function add(into: Map<string, Tally>, h: Omit<Tally, 'settled'>): void {
  const key = `${h.kind}\n${h.pool}`;
  const t = into.get(key);
  if (!t) into.set(key, { kind: h.kind, pool: h.pool, count: h.count, sumMs: h.sumMs, buckets: [...h.buckets] });
  else {
    t.count += h.count;
    t.sumMs += h.sumMs;
    t.buckets = t.buckets.map((n, i) => n + (h.buckets[i] ?? 0));
  }
}
