/**
 * What makes a pool's host ready (agent enrolled, warm-up succeeded, health check passed — never
 * before), shared by the reconciler's refills and a claim's cold launch.
 */
import type { HostResources } from '../drivers/types.js';
import type { RegisteredHost } from '../hosts/host-service.js';
import type { PoolRow } from '../store/schema.js';
import { runChecks } from './host-checks.js';
import type { ReconcilerDeps } from './reconciler.js';

export function launchRequest(pool: PoolRow): { image: string; tags: Record<string, string>; resources: HostResources } {
  const { tags, aws: _aws, ...resources } = pool.template;
  return { image: pool.image, tags: { ...tags, 'berth:pool': pool.name }, resources };
}

/**
 * Boots a registered host and makes it ready: agent enrolled, warm-up succeeded, health check
 * passed (ready means all three — never before, so nobody gets a host that is still bootstrapping).
 */
export async function prepareHost(
  deps: Pick<ReconcilerDeps, 'hostService' | 'commands' | 'servicesReady'>,
  pool: PoolRow,
  host: RegisteredHost,
  bootTimeoutMs: number,
  warmupTimeoutS: number,
  signal?: AbortSignal,
): Promise<void> {
  await deps.hostService.start(host, { waitMs: bootTimeoutMs, ...(signal ? { signal } : {}) });
  await checkReady(deps, pool, host.id, warmupTimeoutS, signal);
}

/** Warm-up, then the health check: what makes an enrolled host ready. */
export async function checkReady(deps: Pick<ReconcilerDeps, 'commands' | 'servicesReady'>, pool: PoolRow, hostId: string, warmupTimeoutS: number, signal?: AbortSignal): Promise<void> {
  if (pool.warmup.length > 0) await runChecks(deps.commands, pool.tenant_id, hostId, 'warm-up', pool.warmup, { timeoutS: warmupTimeoutS, ...(signal ? { signal } : {}) });
  // Without a health check of its own, a host still proves it can run a command before it counts as
  // ready: an enrolled agent is not yet a working host (the bootstrap races of other pools), and the
  // first command through a fresh agent pays its one-time start-up costs, which a claim should not.
  const check = pool.health_check ?? { command: 'true', timeoutS: 10 };
  await runChecks(deps.commands, pool.tenant_id, hostId, 'health check', [check.command], { timeoutS: check.timeoutS, ...(signal ? { signal } : {}) });
  if (pool.template.tags['berth.stack'] && deps.servicesReady) await deps.servicesReady(pool.tenant_id, hostId, warmupTimeoutS * 1000, signal);
}
