/**
 * Histograms over the store's history: how long hosts took to become ready — launch until the agent
 * was ready (`berth_host_ready_seconds`, every host) and, for pool hosts, launch until ready in the
 * pool, warm-up and health check done (`berth_pool_refill_seconds`: how long a pool takes to replace
 * a host a claim took) — and how long environments' creates and deploys took, by stage
 * (`berth_environment_ready_seconds`). Each row is added up once (see HistogramHistory).
 */
import { histogramSamples, type MetricFamily } from './exposition.js';
import { HistogramHistory, type HistogramSeries } from './histogram-history.js';
import type { MetricsRepo, StoreTime } from './metrics-repo.js';

/** Bucket bounds, ms: a local host is ready in tens of ms, an EC2 instance in tens of seconds. */
export const READY_BUCKETS_MS: readonly number[] = [25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000];
/** An environment's stages take from well under a millisecond (route) to minutes (a cold create). */
export const ENVIRONMENT_BUCKETS_MS: readonly number[] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000];

/** One tenant's histories. */
export class TenantHistograms {
  private readonly readiness: HistogramHistory;
  private readonly environments: HistogramHistory;
  /** Both histories have been read up to here. */
  private since: StoreTime | null = null;

  constructor(
    private readonly repo: MetricsRepo,
    tenantId: string,
    private readonly settleMs: number,
  ) {
    this.readiness = new HistogramHistory((since, upto) => repo.readinessHistograms(tenantId, since, upto, READY_BUCKETS_MS));
    this.environments = new HistogramHistory((since, upto) => repo.environmentTimingHistograms(tenantId, since, upto, ENVIRONMENT_BUCKETS_MS));
  }

  async collect(tenantId: string): Promise<MetricFamily[]> {
    const upto = await this.repo.settleHorizon(this.since, this.settleMs);
    const readiness = await this.readiness.collect(this.since, upto);
    const environments = await this.environments.collect(this.since, upto);
    this.since = upto;
    const family = (name: string, help: string, series: HistogramSeries[], bounds: readonly number[], drop: string[] = []): MetricFamily => ({
      name,
      type: 'histogram',
      help,
      samples: series.flatMap((s) => {
        const labels = Object.fromEntries(Object.entries(s.labels).filter(([k]) => !drop.includes(k)));
        return histogramSamples({ tenant: tenantId, ...labels }, bounds.map((ms) => ms / 1000), s.buckets, s.sumMs / 1000, s.count);
      }),
    });
    const ofKind = (kind: string) => readiness.filter((s) => s.labels['kind'] === kind);
    return [
      family('berth_host_ready_seconds', 'Launch until the host\'s agent was ready, by pool (pool="" for hosts of no pool).', ofKind('host'), READY_BUCKETS_MS, ['kind']),
      family('berth_pool_refill_seconds', 'Launch until the pool host was ready in its pool (boot, warm-up and health check): how long a pool takes to replace a claimed host.', ofKind('pool'), READY_BUCKETS_MS, ['kind']),
      family(
        'berth_environment_ready_seconds',
        "Environments' creates and deploys until ready, by stage: total, and each stage timed (claim, init, services, ready, route, balance); every one finished, removed environments' included.",
        environments,
        ENVIRONMENT_BUCKETS_MS,
      ),
    ];
  }
}
