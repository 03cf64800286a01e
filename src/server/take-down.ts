/**
 * `berth down`: everything berth runs on the machine removed, what was declared kept. A server is
 * started without its background work (ServerConfig.runLoops false) on the same store and driver,
 * so it adopts the hosts the last one left running; then, in this order:
 *
 *   1. nothing may replace a host any more: the pools' reconciler, the environments' sweeps and
 *      healing, and image builds are stopped (a pool would otherwise refill as its hosts go); on a
 *      fleet driver (AWS) each pool's group is drained too, or it would replace them itself;
 *   2. every host the store knows as live is terminated through the host service, as `berth host
 *      rm` would: its claim, group, services and shells are let go of in the store too;
 *   3. hosts the driver finds that the store does not know (a crash between the two) are removed;
 *   4. the driver removes what it set up on the machine (the bridge, firewall tables, cgroups);
 *      with `purge`, a fleet driver removes the pools' groups and templates on its backend too.
 *
 * Pools, stacks, environments, images and tokens stay in the store: the next `berth up` or
 * `berth server` fills the pools again (a drained group is sized again) and gives environments
 * new hosts.
 */
import { errorMessage } from '../core/errors.js';
import { mapLimit } from '../core/map-limit.js';
import type { HostDriver } from '../drivers/types.js';
import type { EnvironmentService } from '../environments/environment-service.js';
import type { HostService } from '../hosts/host-service.js';
import type { ImageService } from '../images/image-service.js';
import type { PoolReconciler } from '../pools/reconciler.js';

export interface TakeDownParts {
  hosts: HostService;
  reconciler: PoolReconciler;
  environments: EnvironmentService;
  images: ImageService;
  driver: HostDriver;
  /** Every pool's name (all tenants): a fleet driver's groups are named after them. */
  poolNames: () => Promise<string[]>;
}

/** What `berth down` shows as it goes: the hosts found, then each one removed (or not). */
export type TakeDownStep = { kind: 'found'; hosts: number } | { kind: 'host'; id: string; done: number; total: number; error?: string };

export interface TakeDownReport {
  /** Hosts removed: those the store knew, then those only the machine had. */
  removed: string[];
  /** Hosts that could not be removed, with why; the machine's resources are then kept. */
  failed: { id: string; error: string }[];
  /** Whether the driver removed what it set up on the machine; undefined when it has nothing to remove. */
  machineRemoved: boolean | undefined;
  /** Stopped by its signal (Ctrl-C): the hosts under way were finished, the rest left for the next run. */
  interrupted: boolean;
  /** A fleet driver's pools whose groups were drained (step 1). */
  drainedPools: string[];
  /** With `purge`, what of a fleet driver's on its backend is gone now (groups, templates). */
  removedOnBackend: string[];
}

/** How many hosts are terminated at once: each is a few short-lived processes and kernel objects. */
const CONCURRENCY = 4;

const REASON = 'berth down: every host on this machine removed';

/**
 * `signal`: no further host is started on once it aborts; those under way finish (a host is never
 * left half-removed), the machine's resources stay, and a later run goes on from there.
 */
export async function takeDown(parts: TakeDownParts, progress: (step: TakeDownStep) => void, opts: { purge?: boolean; signal?: AbortSignal } = {}): Promise<TakeDownReport> {
  const { signal } = opts;
  parts.environments.stop();
  await parts.reconciler.stop();
  await parts.images.close();
  // Before any host goes: a group that still wanted its size would launch a replacement for each.
  // A drain that fails stops here, nothing terminated (exit 1; the next run tries again).
  const fleet = parts.driver.fleet;
  const pools = fleet ? await parts.poolNames() : [];
  const drainedPools: string[] = [];
  for (const pool of pools) if (await fleet?.drainPool?.(pool)) drainedPools.push(pool);

  const known = await parts.hosts.liveHosts();
  const knownIds = new Set(known.map((row) => row.id));
  // Step 3's hosts are looked for now, so the count shown is the whole of what will be removed.
  const unknown = (await parts.driver.list()).filter((found) => !knownIds.has(found.id));
  const total = known.length + unknown.length;
  progress({ kind: 'found', hosts: total });

  const removed: string[] = [];
  const failed: { id: string; error: string }[] = [];
  const jobs = [
    ...known.map((row) => ({ id: row.id, remove: () => parts.hosts.terminate(row.tenant_id, row.id, REASON) })),
    ...unknown.map((found) => ({ id: found.id, remove: () => parts.driver.terminate(found.id, found.driverData) })),
  ];
  await mapLimit(jobs, CONCURRENCY, async (job) => {
    if (signal?.aborted) return;
    try {
      await job.remove();
      removed.push(job.id);
      progress({ kind: 'host', id: job.id, done: removed.length + failed.length, total });
    } catch (err) {
      failed.push({ id: job.id, error: errorMessage(err) });
      progress({ kind: 'host', id: job.id, done: removed.length + failed.length, total, error: errorMessage(err) });
    }
  });

  // With a host left, the bridge and cgroups it uses must stay (teardown refuses then anyway).
  const interrupted = removed.length + failed.length < jobs.length;
  const done = failed.length === 0 && !interrupted;
  const machineRemoved = done ? await parts.driver.teardown?.() : false;
  const removedOnBackend = done && opts.purge && fleet?.purge ? await fleet.purge(pools) : [];
  return { removed, failed, machineRemoved, interrupted, drainedPools, removedOnBackend };
}
