/**
 * Changing a live environment's hosts in place, one host at a time (`env set`, `env restart`): each
 * host's change is made, its services are waited for, and the router must have it back in rotation
 * before the next host starts, so an environment of several replicas keeps serving throughout.
 */
import { BerthError } from '../core/errors.js';

export interface RollingDeps {
  awaitServicesReady(tenantId: string, hostId: string, timeoutMs: number, label: string): Promise<unknown>;
  /** Whether the router has the host in the environment's rotation; undefined: it is not a backend. */
  backendHealthy(name: string, hostId: string): boolean | undefined;
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
    await change(hostId);
    const left = () => Math.max(0, opts.deadline - Date.now());
    if (opts.ready) await opts.ready(hostId, left());
    else await deps.awaitServicesReady(env.tenantId, hostId, left(), `environment ${env.name}: host ${hostId}`);
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
