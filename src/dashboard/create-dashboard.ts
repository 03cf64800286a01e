/** The dashboard's parts put together for the server: its level history, its feed and the sampler. */
import type { Kysely } from 'kysely';
import type { EventBus } from '../events/event-bus.js';
import { foldPoolHosts } from '../metrics/metrics.js';
import { MetricsRepo } from '../metrics/metrics-repo.js';
import type { Database } from '../store/schema.js';
import { DashboardFeed } from './dashboard-feed.js';
import { PoolLevels } from './pool-levels.js';
import type { DashboardSources } from './snapshot.js';

export interface DashboardDeps extends Omit<DashboardSources, 'levels'> {
  db: Kysely<Database>;
  events: EventBus;
  /** How often every tenant's pool levels are sampled (default 5 s). */
  sampleIntervalMs?: number;
  onError: (err: unknown) => void;
}

export function createDashboard(deps: DashboardDeps): DashboardFeed {
  const { db, events, sampleIntervalMs, onError, ...sources } = deps;
  const levels = new PoolLevels();
  const feed = new DashboardFeed({ sources: { ...sources, levels }, events });
  const repo = new MetricsRepo(db);
  feed.startSampling(
    sampleIntervalMs ?? 5000,
    async () => {
      const tenants = await db.selectFrom('pools').select('tenant_id').distinct().execute();
      for (const { tenant_id: tenantId } of tenants) {
        const pools = await repo.pools(tenantId);
        const counts = foldPoolHosts(await repo.poolHostGroups(tenantId));
        levels.record(
          tenantId,
          pools.map((p) => {
            const c = counts.get(p.pool)?.counts;
            return { pool: p.pool, ready: c?.ready ?? 0, warming: c?.warming ?? 0, claimed: c?.claimed ?? 0 };
          }),
        );
      }
    },
    onError,
  );
  return feed;
}
