/**
 * A claim's cold path: the host it launches when its pool has none ready (`onEmpty: launch`), and
 * what it does when that host fails. Such a failure is the pool's, as a refill's would be, so a
 * pool whose hosts keep failing makes claims fail at once while it backs off, instead of each
 * claim launching more hosts that fail the same way.
 */
import { BerthError, errorMessage } from '../core/errors.js';
import type { HostService } from '../hosts/host-service.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { HostRow, PoolRow } from '../store/schema.js';
import { launchRequest, prepareHost } from './readiness.js';
import type { PoolReconciler, ReconcilerDeps } from './reconciler.js';

export interface ColdLaunchDeps extends Pick<ReconcilerDeps, 'commands' | 'servicesReady'> {
  pools: PoolsRepo;
  hosts: HostsRepo;
  hostService: HostService;
  reconciler: PoolReconciler;
  bootTimeoutMs?: number;
}

/**
 * A pool whose hosts failed to become ready this many times in a row, and which is backing off,
 * makes a claim that finds it empty fail at once instead of launching yet another host that
 * would fail the same way (a broken image under a stream of claims would otherwise launch up to
 * `maxAttempts` hosts per claim). Fewer failures may be a passing fault: claims still launch.
 */
export const FAIL_FAST_AFTER_FAILURES = 3;

/** A cold boot that failed this close to the claim's deadline ran out of the claim's time, not the pool's. */
const DEADLINE_MARGIN_MS = 100;

/**
 * The empty-pool path: a new host launched straight into the claim (a miss). Of the pool as the
 * store has it now, not as the claim path's cache (PoolsRepo.getRecent) may: a host launched from
 * a template changed a moment ago would be of the old generation (the pick checks the generation
 * in the store itself; a launch has only the row it is given).
 */
export async function launchForClaim(deps: ColdLaunchDeps, cached: PoolRow, claimId: string, group: string, deadline: number, signal: AbortSignal): Promise<HostRow> {
  const pool = await deps.pools.get(cached.tenant_id, cached.name);
  if (!pool) throw poolNotFound(cached.name);
  const backoffUntil = deps.reconciler.backoffUntil(pool);
  if (pool.consecutive_failures >= FAIL_FAST_AFTER_FAILURES && backoffUntil > Date.now()) throw poolFailing(pool, backoffUntil);
  const registered = await deps.hostService.register(pool.tenant_id, launchRequest(pool), { name: pool.name, generation: pool.generation, slot: 'claiming', group, claimId });
  try {
    const bootMs = Math.min(deps.bootTimeoutMs ?? 30_000, Math.max(1, deadline - Date.now()));
    await prepareHost(deps, pool, registered, bootMs, Math.max(1, (deadline - Date.now()) / 1000), signal);
  } catch (err) {
    // The pool's failure, as a refill's would be (its back-off and `pool show` see it), unless
    // the claim's own deadline cut the boot short.
    if (!signal.aborted && Date.now() < deadline - DEADLINE_MARGIN_MS) {
      await deps.pools.recordFailure(pool.tenant_id, pool.name, `host ${registered.id} (a claim's cold launch): ${errorMessage(err)}`);
    }
    const row = await deps.hosts.get(pool.tenant_id, registered.id);
    if (row) await quarantine(deps, row, pool);
    throw err;
  }
  if (pool.consecutive_failures > 0) await deps.pools.resetFailures(pool.tenant_id, pool.name);
  const row = await deps.hosts.get(pool.tenant_id, registered.id);
  if (!row) throw new BerthError('internal', `host ${registered.id} vanished while it was launched for a claim`, 'Retry the claim.');
  return row;
}

/** Seconds until a refill is likely ready: the median launch-to-ready of the pool's last hosts (1-60 s). */
export async function refillEstimateS(hosts: HostsRepo, pool: PoolRow): Promise<number> {
  const measured = await hosts.medianLeadTimeS(pool.tenant_id, pool.name).catch(() => undefined);
  return Math.min(60, Math.max(1, Math.ceil(measured ?? 1)));
}

/** Takes a host that failed a claim out of the group; the reconciler retires it. */
export async function quarantine(deps: Pick<ColdLaunchDeps, 'hosts' | 'reconciler'>, host: HostRow, pool: PoolRow): Promise<void> {
  await deps.hosts.setSlot(host.id, ['claiming'], 'quarantined', { group: null, claimId: null });
  deps.reconciler.kick(pool.tenant_id, pool.name);
}

function poolFailing(pool: PoolRow, backoffUntil: number): BerthError {
  const retryAfterS = Math.max(1, Math.ceil((backoffUntil - Date.now()) / 1000));
  return new BerthError(
    'pool_failing',
    `pool ${pool.name} has no ready host, and its hosts failed to become ready ${pool.consecutive_failures} times in a row (last: ${pool.last_failure ?? 'unknown'}); it launches again in ${retryAfterS} s`,
    `See \`berth pool show ${pool.name}\`: fix its image, warm-up or health check (a change makes a new generation), or retry after Retry-After.`,
    { pool: pool.name, retryAfterS, consecutiveFailures: pool.consecutive_failures },
  );
}

export function poolNotFound(name: string): BerthError {
  return new BerthError('pool_not_found', `pool ${name} does not exist`, 'List pools with `berth pool ls`; create one with `berth pool create`.', { pool: name });
}
