/**
 * Service mode in place (a scale, a heal): more hosts for some of an environment's services, the
 * hosts of every other service untouched. That holds only when no other host is told the addresses
 * of the services that change (`BERTH_SERVICE_<NAME>_ADDR`, which placement gives the hosts of the
 * services at the dependency levels above theirs): a service that listens on no port (a worker), or
 * one of the last level (started last, as a web front). Otherwise a deploy changes the hosts above
 * it atomically, new hosts first.
 */
import type { StackSpec } from '../stacks/spec.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import type { LoadBalancedServices } from './load-balancing.js';
import { dependencyLevels, listeningPort, type PlacedHost } from './placement.js';
import type { HostRelease } from './release.js';
import type { EnvironmentRoutes } from './routes.js';
import type { EnvironmentStack } from './slug-stack.js';

export interface ServiceHostsDeps {
  routes: EnvironmentRoutes;
  hostRelease: HostRelease;
  /** Service mode's load balancing, when the driver has one. */
  balancing?: Pick<LoadBalancedServices, 'detach'> | undefined;
  /**
   * `counts` more hosts of those services placed (each pushed onto `claimed` and recorded after
   * `routed` as it lands), load balanced (`balanced`: the services attached) and routed with
   * `existing`, the hosts that stay, with their addresses.
   */
  placeMore(
    row: EnvironmentRow,
    stack: EnvironmentStack,
    more: { counts: Record<string, number>; routed: EnvHostRecord[]; existing: PlacedHost[]; generation: number; claimed: EnvHostRecord[]; balanced: Set<string>; deadline: number },
  ): Promise<{ timings: Record<string, number> }>;
}

/** Whether hosts of `services` come and go without any other host's configuration changing (see the top). */
export function changesInPlace(stack: StackSpec, services: Iterable<string>): boolean {
  const last = new Set(dependencyLevels(stack).at(-1) ?? []);
  return [...services].every((name) => {
    const service = Object.hasOwn(stack.services, name) ? stack.services[name] : undefined;
    return service !== undefined && (listeningPort(service) === undefined || last.has(name));
  });
}

/**
 * Places `counts` more hosts beside `kept` (the routed hosts that stay; `routed`: all of them, as
 * recorded), each recorded outside the routed generation as it lands so a restart gives it back,
 * then routed with the others. Returns the new hosts, at the routed generation, and the placement's
 * timings. Fails having
 * undone itself: the route back on `routed`, the new hosts out of their load balancers and released.
 */
export async function addServiceHosts(
  deps: ServiceHostsDeps,
  row: EnvironmentRow,
  stack: EnvironmentStack,
  opts: { routed: EnvHostRecord[]; kept: EnvHostRecord[]; counts: Record<string, number>; generation: number; deadline: number; why: string },
): Promise<{ hosts: EnvHostRecord[]; timings: Record<string, number> }> {
  const { tenant_id: tenantId } = row;
  const claimed: EnvHostRecord[] = [];
  const balanced = new Set<string>();
  try {
    const existing = await deps.routes.addressed(tenantId, opts.kept);
    const { timings } = await deps.placeMore(row, stack, { counts: opts.counts, routed: opts.routed, existing, generation: opts.generation + 1, claimed, balanced, deadline: opts.deadline });
    return { hosts: claimed.map((h) => ({ ...h, generation: opts.generation })), timings };
  } catch (err) {
    const env = { tenantId, name: row.name, private: row.private };
    await deps.routes.addressed(tenantId, opts.routed.filter((h) => h.service === stack.target.service))
      .then((hosts) => deps.routes.set(env, hosts, stack.target, row.ref))
      .catch(() => undefined);
    // Only the new hosts leave the load balancing: their services' groups keep the others.
    const attached = claimed.filter((h) => h.service !== null && balanced.has(h.service));
    const stuck = deps.balancing && attached.length > 0 ? await deps.balancing.detach(env, stack.spec, attached, opts.why) : undefined;
    await deps.hostRelease.releaseAll(tenantId, row.pool, claimed, opts.why, claimed.filter((h) => stuck?.has(h.hostId)));
    throw err;
  }
}
