/**
 * `berth env scale NAME N` (`heroku ps:scale`, `fly scale count`): another number of replicas for a
 * live environment.
 *
 * - `review` mode, in place: the hosts it keeps are not touched. More: new hosts are claimed as a
 *   create claims them, and join the route once their services are ready and they answer; fewer:
 *   the newest leave the route first, get the drain time for requests in flight, then go back to
 *   the pool. A scale-up that fails gives back what it claimed, and the environment runs as before.
 * - `service` mode, in place as well when no other service's hosts are told the changed services'
 *   addresses (`BERTH_SERVICE_*_ADDR`, given to the hosts of the services at the dependency levels
 *   above theirs): a service that listens on no port (a worker), or one of the last level (started
 *   last, as a web front). More hosts of it are claimed first, told the addresses their siblings
 *   were, and routed (and load balanced) with the others once ready; then the newest of a service
 *   with fewer leave as above. The hosts of every other service are not touched.
 * - `service` mode otherwise (or a failed environment), by a deploy of the same ref on the new
 *   count: every dependent's configuration changes anyway, and a deploy changes it atomically, new
 *   hosts first, the route switched when they answer (from a warm pool, in the time of a claim per
 *   host).
 * - Asleep, the new count is recorded for its next wake.
 * - Services' own counts (replicas.ts) are service mode's.
 *
 * While it scales in place the environment is `scaling`. Hosts joining or leaving are recorded
 * outside the routed generation until the route has them or has let them go, so a server restart
 * in the middle gives them back (recovery.ts treats them as a deploy's cut short).
 */
import { z } from 'zod';
import { BerthError, errorMessage } from '../core/errors.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import { placeServices, roundTimings, type PlacementDeps } from './placement.js';
import { addServiceHosts, changesInPlace, detachHosts, type ServiceHostsDeps } from './service-hosts.js';
import type { StackSpec } from '../stacks/spec.js';
import type { EnvironmentRoutes } from './routes.js';
import type { EnvironmentStack } from './slug-stack.js';
import { applyReplicaChange, checkServiceReplicas, countsOf, describeCounts, replicaCount, replicasOf, sameCounts, serviceReplicasField, type ReplicaChange, type ReplicaCounts } from './replicas.js';

export const scaleEnvironmentBody = z
  .object({
    replicas: replicaCount.optional().describe('Review hosts behind the router (review mode) or hosts of every service (service mode); alone, services lose their own counts'),
    serviceReplicas: serviceReplicasField.optional().describe('Service mode: these services get their own counts (alone: the other services keep theirs)'),
    wait: z.number().positive().max(600).default(120).describe("Seconds new hosts' services get to be ready"),
  })
  .strict()
  .refine((body) => body.replicas !== undefined || body.serviceReplicas !== undefined, { message: 'give replicas, serviceReplicas or both' });

export interface ScaleDeps extends ServiceHostsDeps {
  envs: Pick<EnvironmentsRepo, 'transition' | 'setHosts' | 'changeAsleep'>;
  placement: PlacementDeps;
  stackOf(row: EnvironmentRow): Promise<EnvironmentStack>;
  /** A service-mode environment on new counts: a deploy of its ref. */
  redeploy(row: EnvironmentRow, counts: ReplicaCounts, waitS: number): Promise<EnvironmentRow>;
  /** Requests in flight on a leaving host get this long, ms. */
  drainMs: number;
}

export async function scaleEnvironment(deps: ScaleDeps, row: EnvironmentRow, change: ReplicaChange, waitS: number): Promise<EnvironmentRow> {
  const { tenant_id: tenantId, name } = row;
  const own = change.services ?? {};
  // Refused at once in review mode; in service mode checked against the stack (a slug's Procfile
  // names its services): below when asleep, by the deploy otherwise.
  if (row.mode !== 'service') checkServiceReplicas(undefined, row.mode, own);
  const next = applyReplicaChange(countsOf(row), change);
  if (sameCounts(next, countsOf(row))) return row;
  const { replicas } = next;
  const count = describeCounts(next);
  if (row.state === 'sleeping') {
    if (row.mode === 'service' && Object.keys(own).length > 0) checkServiceReplicas((await deps.stackOf(row)).spec, row.mode, own);
    const asleep = await deps.envs.changeAsleep(tenantId, name, { ...next, reason: `scaled to ${count} for its next wake` });
    if (!asleep) throw new BerthError('conflict', `environment ${name} woke or changed meanwhile`, 'Look at it (berth env show), then try again.');
    return asleep;
  }
  if (row.mode === 'service') {
    const stack = await deps.stackOf(row);
    checkServiceReplicas(stack.spec, row.mode, own);
    // A failed environment is deployed anew on the new counts, as before in-place scaling.
    const inPlace = row.state === 'ready' && scalesInPlace(stack.spec, countsOf(row), next);
    return inPlace ? scaleServicesInPlace(deps, row, next, stack, waitS) : deps.redeploy(row, next, waitS);
  }
  const { spec, target, init } = await deps.stackOf(row);
  const t0 = performance.now();
  const started = await deps.envs.transition(tenantId, name, ['ready'], 'scaling', { reason: `scaling from ${describeCounts(countsOf(row))} to ${count}` });
  if (!started) throw new BerthError('conflict', `environment ${name} is ${row.state}`, 'Wait until it is ready, then scale it.');
  const routedGeneration = started.route?.generation ?? Math.max(0, ...started.hosts.map((h) => h.generation));
  const routed = started.hosts.filter((h) => h.generation === routedGeneration);
  const env = { tenantId, name, private: started.private };
  const joining: EnvHostRecord[] = [];
  let kept = routed;
  try {
    if (replicas < routed.length) {
      // The newest leave: recorded outside the routed generation first, so a restart gives them back.
      const leaving = routed.slice(replicas);
      await deps.envs.setHosts(tenantId, name, [...routed.slice(0, replicas), ...leaving.map((h) => ({ ...h, generation: routedGeneration + 1 }))]);
      deps.routes.set(env, await deps.routes.addressed(tenantId, routed.slice(0, replicas)), target, started.ref);
      kept = routed.slice(0, replicas);
      const tDrain = performance.now();
      await new Promise((resolve) => setTimeout(resolve, deps.drainMs));
      const tRelease = performance.now();
      await deps.hostRelease.releaseAll(tenantId, started.pool, leaving, `environment ${name} scaled to ${count}`);
      return await done(deps, started, kept, next, `scaled to ${count}`, { drainMs: tRelease - tDrain, releaseMs: performance.now() - tRelease, totalMs: performance.now() - t0 });
    }
    const joined = await joinReviewHosts(deps, started, { spec, target, init }, { count: replicas - routed.length, generation: routedGeneration, routed, kept: routed, joining, deadline: Date.now() + waitS * 1000 });
    return await done(deps, started, joined.hosts, next, `scaled to ${count}`, { ...joined.timings, totalMs: performance.now() - t0 });
  } catch (err) {
    // The route has the hosts it had (set again: the failure may have come after it changed).
    await deps.routes.addressed(tenantId, kept)
      .then((hosts) => deps.routes.set(env, hosts, target, started.ref))
      .catch(() => undefined);
    await deps.hostRelease.releaseAll(tenantId, started.pool, joining, `environment ${name}: scale to ${count} failed`);
    await deps.envs.transition(tenantId, name, ['scaling'], 'ready', { reason: `scale to ${count} failed: ${errorMessage(err)}`, hosts: kept });
    throw err;
  }
}

/**
 * Review hosts joining a running environment (a scale up, a heal): claimed as a create claims them,
 * each recorded as it lands outside the routed generation (onto `joining`, after `routed`) so a
 * restart gives it back, then routed with `kept` once all answer. Returns what is routed now, the
 * new hosts, and the placement's timings with the route's.
 */
export async function joinReviewHosts(
  deps: { placement: PlacementDeps; envs: Pick<EnvironmentsRepo, 'setHosts'>; routes: EnvironmentRoutes },
  row: EnvironmentRow,
  { spec, target, init }: Pick<EnvironmentStack, 'spec' | 'target' | 'init'>,
  opts: { count: number; generation: number; routed: readonly EnvHostRecord[]; kept: readonly EnvHostRecord[]; joining: EnvHostRecord[]; deadline: number },
): Promise<{ hosts: EnvHostRecord[]; added: string[]; timings: Record<string, number> }> {
  const { tenant_id: tenantId, name } = row;
  const placed = await placeServices(deps.placement, {
    tenantId,
    name,
    stack: spec,
    pool: row.pool,
    mode: 'review',
    ref: row.ref,
    replicas: opts.count,
    owner: row.owner,
    settings: row.settings,
    generation: opts.generation + 1,
    init,
    target,
    deadline: opts.deadline,
    onClaimed: async (host) => {
      opts.joining.push({ hostId: host.hostId, service: host.service, generation: host.generation });
      await deps.envs.setHosts(tenantId, name, [...opts.routed, ...opts.joining]);
    },
  });
  const all = [...(await deps.routes.addressed(tenantId, opts.kept)), ...placed.hosts.map((h) => ({ ...h, generation: opts.generation }))];
  const tRoute = performance.now();
  deps.routes.set({ tenantId, name, private: row.private }, all, target, row.ref);
  return {
    hosts: all.map(({ hostId, service, generation }) => ({ hostId, service, generation })),
    added: placed.hosts.map((h) => h.hostId),
    timings: { ...placed.timings, routeMs: performance.now() - tRoute },
  };
}

/** Whether a service-mode environment goes from `from` to `to` in place (service-hosts.ts). */
export function scalesInPlace(stack: StackSpec, from: ReplicaCounts, to: ReplicaCounts): boolean {
  return changesInPlace(stack, Object.keys(stack.services).filter((name) => replicasOf(from, name) !== replicasOf(to, name)));
}

/** Service mode in place (see the top of the file): more hosts first, then the newest leave. */
async function scaleServicesInPlace(deps: ScaleDeps, row: EnvironmentRow, next: ReplicaCounts, stack: EnvironmentStack, waitS: number): Promise<EnvironmentRow> {
  const { tenant_id: tenantId, name } = row;
  const count = describeCounts(next);
  const t0 = performance.now();
  const started = await deps.envs.transition(tenantId, name, ['ready'], 'scaling', { reason: `scaling from ${describeCounts(countsOf(row))} to ${count}` });
  if (!started) throw new BerthError('conflict', `environment ${name} is ${row.state}`, 'Wait until it is ready, then scale it.');
  const routedGeneration = started.route?.generation ?? Math.max(0, ...started.hosts.map((h) => h.generation));
  const routed = started.hosts.filter((h) => h.generation === routedGeneration);
  let timings: Record<string, number> = {};
  const more: Record<string, number> = {};
  const leaving: EnvHostRecord[] = [];
  for (const service of Object.keys(stack.spec.services)) {
    const have = routed.filter((h) => h.service === service);
    const want = replicasOf(next, service);
    if (want > have.length) more[service] = want - have.length;
    else leaving.push(...have.slice(want));
  }
  let added: EnvHostRecord[] = [];
  if (Object.keys(more).length > 0) {
    try {
      ({ hosts: added, timings } = await addServiceHosts(deps, started, stack, { routed, kept: routed, counts: more, generation: routedGeneration, deadline: Date.now() + waitS * 1000, why: `environment ${name}: scale to ${count} failed` }));
    } catch (err) {
      await deps.envs.transition(tenantId, name, ['scaling'], 'ready', { reason: `scale to ${count} failed: ${errorMessage(err)}`, hosts: routed });
      throw err;
    }
  }
  const hosts = [...routed.filter((h) => !leaving.includes(h)), ...added];
  if (leaving.length > 0) {
    await deps.envs.setHosts(tenantId, name, [...hosts, ...leaving.map((h) => ({ ...h, generation: routedGeneration + 1 }))]);
    const why = `environment ${name} scaled to ${count}`;
    const env = { tenantId, name, private: started.private };
    const routedLeave = leaving.some((h) => h.service === stack.target.service);
    if (routedLeave) deps.routes.set(env, await deps.routes.addressed(tenantId, hosts.filter((h) => h.service === stack.target.service)), stack.target, started.ref);
    // Out of the route and their load balancers, then the drain time for requests in flight.
    const tDrain = performance.now();
    const [stuck] = await Promise.all([detachHosts(deps, started, stack, leaving, why), new Promise((resolve) => setTimeout(resolve, routedLeave ? deps.drainMs : 0))]);
    const tRelease = performance.now();
    await deps.hostRelease.releaseAll(tenantId, started.pool, leaving, why, leaving.filter((h) => stuck?.has(h.hostId)));
    timings = { ...timings, drainMs: tRelease - tDrain, releaseMs: performance.now() - tRelease };
  }
  return done(deps, started, hosts, next, `scaled to ${count}`, { ...timings, totalMs: performance.now() - t0 });
}

/** The scale is over: its hosts and counts, and what each of its stages took (the environment's timings; the metrics' `scale` operation). */
async function done(deps: ScaleDeps, row: EnvironmentRow, hosts: EnvHostRecord[], counts: ReplicaCounts, reason: string, timings: Record<string, number>): Promise<EnvironmentRow> {
  const finished = await deps.envs.transition(row.tenant_id, row.name, ['scaling'], 'ready', { hosts, replicas: counts.replicas, serviceReplicas: counts.serviceReplicas, reason, timings: roundTimings(timings), operation: 'scale' });
  if (!finished) throw new BerthError('conflict', `environment ${row.name} changed while it scaled`, 'Look at it (berth env show).');
  return finished;
}
