/**
 * Changing a live environment's hosts in place, one host at a time (`env set`, `env restart`): each
 * host is taken out of rotation and drained (when another can serve), its change is made, its
 * services are waited for, and the router must have it back in rotation before the next host
 * starts, so an environment of several replicas keeps serving throughout.
 */
import { BerthError } from '../core/errors.js';
import type { RouteView } from '../router/router.js';

export interface RollingDeps {
  awaitServicesReady(tenantId: string, hostId: string, timeoutMs: number, label: string): Promise<unknown>;
  /** Whether the router has the host in the environment's rotation; undefined: it is not a backend. */
  backendHealthy(name: string, hostId: string): boolean | undefined;
  /**
   * Takes the host out of the environment's rotation and waits for the requests it is serving
   * (the drain time), when another backend can serve meanwhile; true when it did. An application
   * that exits at once on SIGTERM would otherwise cut off the requests it was answering.
   */
  drain?(name: string, hostId: string): Promise<boolean>;
  /** Puts a drained host back in rotation (the router sends it requests once its checks pass). */
  undrain?(name: string, hostId: string): void;
}

/**
 * Runs `change` on each host in turn, then waits for it as above, all within `deadline`. `touched`
 * gets each host before its change starts, so a caller that undoes knows every host it may have
 * reached. `ready`: what "the host is done" means (default: its services ready under their config).
 */
export async function rollOver(
  deps: RollingDeps,
  env: { tenantId: string; name: string },
  hostIds: readonly string[],
  change: (hostId: string) => Promise<void>,
  opts: { deadline: number; touched?: string[]; ready?: (hostId: string, timeoutMs: number) => Promise<unknown> },
): Promise<void> {
  for (const hostId of hostIds) {
    opts.touched?.push(hostId);
    const drained = (await deps.drain?.(env.name, hostId)) ?? false;
    try {
      await change(hostId);
      const left = () => Math.max(0, opts.deadline - Date.now());
      if (opts.ready) await opts.ready(hostId, left());
      else await deps.awaitServicesReady(env.tenantId, hostId, left(), `environment ${env.name}: host ${hostId}`);
    } finally {
      if (drained) deps.undrain?.(env.name, hostId);
    }
    await inRotation(deps, env.name, hostId, opts.deadline);
  }
}

/** Waits until the router has the host back in rotation (a restarted web service fails a check or two). */
async function inRotation(deps: RollingDeps, name: string, hostId: string, deadline: number): Promise<void> {
  while (deps.backendHealthy(name, hostId) === false) {
    if (Date.now() > deadline) throw new BerthError('environment_failed', `environment ${name}: host ${hostId} is ready but the router has not taken it back`, 'Look at its web service (berth env logs), then try again.', { hostId });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** RollingDeps' drain through the router: a host leaves rotation only while another healthy backend can serve. */
export function routerDrain(
  router: { route(name: string): RouteView | undefined; setDraining(name: string, backendId: string, draining: boolean): boolean },
  drainMs: number,
): Required<Pick<RollingDeps, 'drain' | 'undrain'>> {
  return {
    drain: async (name, hostId) => {
      const others = router.route(name)?.backends.filter((b) => b.id !== hostId && b.healthy && !b.draining) ?? [];
      if (others.length === 0 || !router.setDraining(name, hostId, true)) return false;
      await new Promise((resolve) => setTimeout(resolve, drainMs));
      return true;
    },
    undrain: (name, hostId) => void router.setDraining(name, hostId, false),
  };
}
