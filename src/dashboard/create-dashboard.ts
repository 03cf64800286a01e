/** The dashboard's parts put together for the server: its level history, its feed and the sampler the server runs. */
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
}

export interface Dashboard {
  feed: DashboardFeed;
  /**
   * Records every tenant's pool levels now (those with viewers get samples from their snapshots
   * too). The server runs it on a timer, so a pool's history is there before anyone looks.
   */
  sampleLevels: () => Promise<void>;
}

export function createDashboard(deps: DashboardDeps): Dashboard {
  const { db, events, ...sources } = deps;
  const levels = new PoolLevels();
  const repo = new MetricsRepo(db);
  return {
    feed: new DashboardFeed({ sources: { ...sources, levels }, events }),
    async sampleLevels() {
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
  };
}
