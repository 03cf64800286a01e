/**
 * `berth env deploy NAME --ref REF`: new hosts with the ref first (and with new settings or a new
 * replica count, when `env up` or `env scale` ask), the route switched only once they answer, then
 * the old hosts out of any load balancer, drained and released: no request is lost. A deploy that
 * fails gives back what it claimed and leaves the route where it was. Asleep, an environment only
 * records the new ref for its next wake (the slug, if it is one, is fetched and checked all the same).
 */
import { BerthError, errorMessage } from '../core/errors.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import type { StackSpec } from '../stacks/spec.js';
import type { LoadBalancedServices } from './load-balancing.js';
import { roundTimings, type PlaceOptions, type RouteTarget } from './placement.js';
import type { HostRelease } from './release.js';
import type { EnvironmentRoutes } from './routes.js';
import { environmentStack, type EnvironmentStackDeps } from './slug-stack.js';
import { checkServiceReplicas, countsOf, describeCounts, type ReplicaCounts } from './replicas.js';

export interface DeployOptions {
  /** A slug's web command, when the slug has no Procfile. */
  command?: string | undefined;
  /** The new hosts run these settings (recorded once the route switched). */
  settings?: Record<string, string>;
  /** The new hosts are this many (per service, replicas.ts; recorded once the route switched). */
  counts?: ReplicaCounts;
  /** Why, when berth deploys by itself (heal.ts): in the state's reason. */
  because?: string;
  /**
   * The slug must be this one: berth's own deploys of what runs (a heal, a scale) and `env up`
   * (which read the ref already) pass it; a user's deploy reads the ref anew.
   */
  slugDigest?: string | null;
  signal?: AbortSignal;
}

/** The environment service's own parts a deploy works with. */
export interface DeployDeps extends EnvironmentStackDeps {
  envs: Pick<EnvironmentsRepo, 'transition'>;
  routes: EnvironmentRoutes;
  hostRelease: HostRelease;
  balancing: LoadBalancedServices | undefined;
  /** After a switch, old hosts get this long to finish requests in flight; default 500 ms. */
  drainMs?: number;
  place(
    tenantId: string,
    name: string,
    stack: StackSpec,
    target: RouteTarget,
    opts: PlaceOptions,
  ): Promise<{ timings: Record<string, number> }>;
  /** Records a sleeping environment's new ref, command or settings for its next wake. */
  asleep(row: EnvironmentRow, fields: Parameters<EnvironmentsRepo['changeAsleep']>[2]): Promise<EnvironmentRow>;
}

/** `ref` null: its stack without a ref (a scale of a service-mode environment). */
export async function deployEnvironment(deps: DeployDeps, before: EnvironmentRow, ref: string | null, waitS: number, opts: DeployOptions = {}): Promise<EnvironmentRow> {
  const { tenant_id: tenantId, name } = before;
  const { signal } = opts;
  const t0 = performance.now();
  const { spec, target, init, slugDigest } = await environmentStack(deps, { tenantId, stack: before.stack, ref, command: opts.command ?? before.command, slugDigest: opts.slugDigest, signal });
  const changes = { slugDigest, ...(opts.command !== undefined ? { command: opts.command } : {}), ...(opts.settings ? { settings: opts.settings } : {}), ...(opts.counts ? { ...opts.counts } : {}) };
  if (opts.counts) checkServiceReplicas(spec, before.mode, opts.counts.serviceReplicas);
  const what = ref ?? `${before.stack} (no ref)`;
  // Asleep, it runs nothing to replace: its next wake runs the new ref (checked above, a slug fetched).
  if (before.state === 'sleeping') return deps.asleep(before, { ref, ...changes, reason: `deployed ${what} for its next wake` });
  const on = opts.counts ? ` on ${describeCounts(opts.counts)}` : '';
  const row = await deps.envs.transition(tenantId, name, ['ready', 'failed'], 'deploying', { reason: `deploying ${what}${on}${opts.because ? ` (${opts.because})` : ''}` });
  if (!row) throw new BerthError('conflict', `environment ${name} is ${before.state}`, 'Wait until it is ready, then deploy.');
  const old = row.hosts;
  const generation = Math.max(0, ...old.map((h) => h.generation)) + 1;
  const claimed: EnvHostRecord[] = [];
  const balanced = new Set<string>();
  const env = { tenantId, name };
  let deployed: EnvironmentRow;
  try {
    const placed = await deps.place(tenantId, name, spec, target, {
      pool: row.pool,
      mode: row.mode === 'service' ? 'service' : 'review',
      ref,
      ...(opts.counts ?? countsOf(row)),
      owner: row.owner,
      settings: opts.settings ?? row.settings,
      generation,
      deadline: Date.now() + waitS * 1000,
      claimed,
      balanced,
      init,
      recordWith: old,
      private: row.private,
      ...(signal ? { signal } : {}),
    });
    const timings = roundTimings({ ...placed.timings, totalMs: performance.now() - t0 });
    const done = await deps.envs.transition(tenantId, name, ['deploying'], 'ready', { ref, ...changes, hosts: claimed, route: { ...target, generation }, timings, operation: 'deploy' });
    if (!done) throw new BerthError('conflict', `environment ${name} was removed during its deploy`, 'Create it again.');
    deployed = done;
  } catch (err) {
    // The route never left the old hosts (it switches with the commit above): put it back as it was,
    // to the old hosts' own service and port, and give the new ones back.
    await deps.routes.restore(row, row.route ?? target).catch(() => undefined);
    const why = `environment ${name}: deploy of ${what} failed`;
    const stuck = deps.balancing ? await deps.balancing.detach(env, spec, claimed.filter((h) => h.service !== null && balanced.has(h.service)), why) : undefined;
    await deps.hostRelease.releaseAll(tenantId, row.pool, claimed, why, claimed.filter((h) => stuck?.has(h.hostId)));
    await deps.envs.transition(tenantId, name, ['deploying'], row.state === 'failed' ? 'failed' : 'ready', { reason: `deploy of ${what} failed: ${errorMessage(err)}`, hosts: old });
    throw err;
  }
  // Committed: what follows cannot undo the deploy, whatever fails in it.
  const why = `environment ${name} deployed ${what}`;
  // The new hosts are attached (placed above): the old ones leave the load balancer while the router drains them.
  const [stuck] = await Promise.all([
    deps.balancing && row.mode === 'service' ? deps.balancing.detach(env, spec, old, why) : undefined,
    new Promise((resolve) => setTimeout(resolve, deps.drainMs ?? 500)),
  ]);
  await deps.hostRelease.releaseAll(tenantId, row.pool, old, why, old.filter((h) => stuck?.has(h.hostId)));
  return deployed;
}
