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
import { balancedServices, type LoadBalancedServices } from './load-balancing.js';
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
    await deps.routes.restore(row, { ...stack.target, generation: opts.generation }).catch(() => undefined);
    // Only the new hosts leave the load balancing: their services' groups keep the others.
    const stuck = await detachHosts(deps, row, stack, claimed.filter((h) => h.service !== null && balanced.has(h.service)), opts.why);
    await deps.hostRelease.releaseAll(tenantId, row.pool, claimed, opts.why, claimed.filter((h) => stuck?.has(h.hostId)));
    throw err;
  }
}

/**
 * Takes `hosts` (leaving or lost) out of their services' load balancers, those of services the
 * stack balances; the others have no group to leave. Returns the ids that may still be registered
 * (never reuse them), or undefined when nothing was detached.
 */
export async function detachHosts(deps: Pick<ServiceHostsDeps, 'balancing'>, row: Pick<EnvironmentRow, 'tenant_id' | 'name'>, stack: EnvironmentStack, hosts: readonly EnvHostRecord[], why: string): Promise<Set<string> | undefined> {
  const names = new Set(balancedServices(stack.spec).services.map((s) => s.name));
  const registered = hosts.filter((h) => h.service !== null && names.has(h.service));
  if (!deps.balancing || registered.length === 0) return undefined;
  return deps.balancing.detach({ tenantId: row.tenant_id, name: row.name }, stack.spec, registered, why);
}
