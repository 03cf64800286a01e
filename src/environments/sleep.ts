/**
 * Environments that sleep when nobody uses them, as Fly's auto-stop, Heroku's eco dynos and
 * Knative's scale to zero do, but woken in the time of a claim. A review app per branch is idle
 * most of the day; asleep it holds no host (they go back to the pool, reset or terminated as the
 * pool says) and keeps its name, ref, settings and route. Its next request through the router is
 * held while berth claims hosts for it again, as a create does, and then sent on; every request
 * that comes meanwhile waits for the same wake. What a host had written is gone, as after a deploy.
 *
 * `ready` → `sleeping` (the route holds requests from this moment; the hosts are released, then
 * the row lists none) → `waking` (claims recorded as they land) → `ready`. A wake that fails gives
 * back what it claimed and leaves the environment asleep with the reason, which held requests get
 * as a 503 page; for a few seconds after, requests get that page without another try, so a pool
 * that cannot give hosts is not asked again by every request. After a server restart a sleeping
 * environment finishes falling asleep, and a wake cut short gives back its hosts and sleeps.
 */
import { z } from 'zod';
import { BerthError, errorMessage } from '../core/errors.js';
import { formatDurationMs, parseDurationMs } from '../core/duration.js';
import type { RouteSpec, RouteView } from '../router/router.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import { roundTimings } from './placement.js';

/** Sleeping longer than this is not idling: remove it (or give it a TTL) instead. */
const MAX_SLEEP_AFTER_MS = 7 * 24 * 3600_000;
/** After a failed wake, requests get its reason for this long before another wake is tried. */
const WAKE_RETRY_AFTER_MS = 5000;

export const sleepAfterField = z
  .string()
  .min(1)
  .max(32)
  .describe('Sleeps after this long without a request through the router (30s, 15m, 2h, at most 7d): its hosts go back to the pool, and the next request wakes it');

export const environmentWakeBody = z.object({ wait: z.number().positive().max(600).default(120).describe('Seconds a wake may take') }).strict();

/** `15m` in ms, checked against the bounds; throws a validation error (exit 2 / 400). */
export function parseSleepAfter(text: string): number {
  // Whole ms: it is stored in an integer column (1.1h is 3960000.0000000005 in floating point).
  const ms = Math.round(parseDurationMs(text, 'sleep-after'));
  if (ms < 1000 || ms > MAX_SLEEP_AFTER_MS) {
    throw new BerthError('validation_failed', `sleep-after ${text} is out of range`, 'Give 1s to 7d, e.g. 15m; or never.');
  }
  return ms;
}

export interface SleepDeps {
  envs: Pick<EnvironmentsRepo, 'get' | 'transition' | 'setHosts' | 'sleepers'>;
  router: { setRoute(name: string, spec: RouteSpec): RouteView; idleMs(name: string): number | undefined };
  /**
   * Claims and starts its services again for its recorded stack, ref and settings, each claimed
   * host pushed onto `claimed` (and recorded) as it lands, and routes them once they answer.
   */
  placeAgain(row: EnvironmentRow, claimed: EnvHostRecord[], balanced: Set<string>, deadline: number): Promise<{ timings: Record<string, number>; route: NonNullable<EnvironmentRow['route']> }>;
  /** Gives `hosts` back; `balanced`: the services attached to a load balancer (default: all of them). */
  release(row: EnvironmentRow, hosts: readonly EnvHostRecord[], why: string, balanced?: ReadonlySet<string>): Promise<void>;
  /** A private environment's guard, for its sleeping route too: nobody else may wake it. */
  guardOf(row: EnvironmentRow): Pick<RouteSpec, 'guard'>;
  /** Requests already sent to its hosts get this long before the hosts go, ms. */
  drainMs: number;
  log: (line: string) => void;
}

export class EnvironmentSleeper {
  /** Sleeps and wakes under way, by tenant and name: one at a time per environment. */
  private readonly busy = new Map<string, Promise<unknown>>();
  /** Wakes under way: requests and calls meanwhile share them. */
  private readonly wakes = new Map<string, Promise<EnvironmentRow>>();
  private readonly failed = new Map<string, { at: number; error: unknown }>();

  constructor(private readonly deps: SleepDeps) {}

  /** Puts a ready environment to sleep now; resolves once its hosts are released. */
  sleep(row: EnvironmentRow, reason: string): Promise<EnvironmentRow> {
    return this.exclusive(row, async () => {
      const asleep = await this.deps.envs.transition(row.tenant_id, row.name, ['ready'], 'sleeping', { reason });
      if (!asleep) {
        const now = await this.deps.envs.get(row.tenant_id, row.name);
        if (now?.state === 'sleeping') return now;
        throw new BerthError('conflict', `environment ${row.name} is ${now?.state ?? 'gone'}`, 'Only a ready environment can sleep; wait until it is ready.');
      }
      // From here its requests wait for a wake, which waits for this sleep to end; those sent
      // before (one may have come as the sweep decided) finish first.
      this.deps.router.setRoute(row.name, this.sleepingRoute(asleep));
      await new Promise((resolve) => setTimeout(resolve, this.deps.drainMs));
      return this.finishSleep(asleep, reason);
    });
  }

  /**
   * Wakes a sleeping environment (a ready one is returned as it is), once any sleep under way has
   * ended. `waitS`: seconds its claims and services may take (default 60). Calls meanwhile share
   * the one wake. `retryNow`: try even if a wake failed moments ago (a person asked).
   */
  wake(tenantId: string, name: string, opts: { why: string; waitS?: number; retryNow?: boolean }): Promise<EnvironmentRow> {
    const key = keyOf(tenantId, name);
    const running = this.wakes.get(key);
    if (running) return running;
    const recent = this.failed.get(key);
    if (recent && !opts.retryNow && Date.now() - recent.at < WAKE_RETRY_AFTER_MS) return Promise.reject(recent.error instanceof Error ? recent.error : new Error(String(recent.error)));
    const started = this.exclusive({ tenant_id: tenantId, name }, () => this.wakeNow(tenantId, name, opts.why, opts.waitS ?? 60));
    this.wakes.set(key, started);
    const clear = () => {
      if (this.wakes.get(key) === started) this.wakes.delete(key);
    };
    started.then(clear, clear);
    return started;
  }

  /** The sleep or wake under way for this environment, if any (removal and expiry wait for it). */
  settled(tenantId: string, name: string): Promise<void> {
    return (this.busy.get(keyOf(tenantId, name)) ?? Promise.resolve()).then(
      () => undefined,
      () => undefined,
    );
  }

  /** Ready environments idle longer than their sleep-after go to sleep; returns their names. */
  async sweep(): Promise<string[]> {
    const slept: string[] = [];
    for (const row of await this.deps.envs.sleepers()) {
      const idle = this.deps.router.idleMs(row.name);
      if (idle === undefined || row.sleep_after_ms === null || idle < row.sleep_after_ms || this.busy.has(keyOf(row.tenant_id, row.name))) continue;
      try {
        await this.sleep(row, `no request for ${formatDurationMs(idle)}`);
        slept.push(row.name);
      } catch (err) {
        this.deps.log(`environment ${row.name}: going to sleep: ${errorMessage(err)}`);
      }
    }
    return slept;
  }

  /** After a server restart: a sleep finishes, a wake cut short gives its hosts back; either way it sleeps, routed. */
  async recover(row: EnvironmentRow): Promise<void> {
    let asleep: EnvironmentRow | undefined = row;
    if (row.state === 'waking') {
      await this.deps.release(row, row.hosts, `environment ${row.name}: its wake was cut short by a server restart`);
      asleep = await this.deps.envs.transition(row.tenant_id, row.name, ['waking'], 'sleeping', { reason: 'a wake was cut short by a server restart', hosts: [] });
    } else if (row.hosts.length > 0) {
      asleep = await this.finishSleep(row, row.state_reason);
    }
    if (asleep) this.deps.router.setRoute(row.name, this.sleepingRoute(asleep));
  }

  /** The route of a sleeping environment: no backends; its next request wakes it. */
  sleepingRoute(row: EnvironmentRow): RouteSpec {
    return {
      backends: [],
      ...(row.route ? { healthPath: row.route.healthPath } : {}),
      info: { ref: row.ref, asleep: true },
      ...this.deps.guardOf(row),
      wake: async () => void (await this.wake(row.tenant_id, row.name, { why: 'woken by a request' })),
    };
  }

  private async wakeNow(tenantId: string, name: string, why: string, waitS: number): Promise<EnvironmentRow> {
    const key = keyOf(tenantId, name);
    const t0 = performance.now();
    let waking = await this.deps.envs.transition(tenantId, name, ['sleeping'], 'waking', { reason: why });
    if (!waking) {
      const row = await this.deps.envs.get(tenantId, name);
      if (!row) throw new BerthError('environment_not_found', `environment ${name} does not exist`, 'List them with `berth env ls`.');
      if (row.state === 'ready') return row;
      throw new BerthError('conflict', `environment ${name} is ${row.state}`, 'Only a sleeping environment wakes; wait until it settles.');
    }
    // A sleep a restart cut short still lists hosts: they go first.
    if (waking.hosts.length > 0) waking = await this.finishSleep(waking, 'its sleep was cut short');
    const claimed: EnvHostRecord[] = [];
    const balanced = new Set<string>();
    try {
      const placed = await this.deps.placeAgain(waking, claimed, balanced, Date.now() + waitS * 1000);
      const timings = roundTimings({ ...placed.timings, totalMs: performance.now() - t0 });
      const done = await this.deps.envs.transition(tenantId, name, ['waking'], 'ready', { reason: why, hosts: claimed, route: placed.route, timings, operation: 'wake' });
      if (!done) throw new BerthError('conflict', `environment ${name} changed while waking`, 'Look at it (berth env show).');
      this.failed.delete(key);
      return done;
    } catch (err) {
      this.failed.set(key, { at: Date.now(), error: err });
      const reason = `could not wake: ${errorMessage(err)}`;
      this.deps.router.setRoute(name, this.sleepingRoute(waking));
      await this.deps.release(waking, claimed, `environment ${name}: ${reason}`, balanced);
      await this.deps.envs.transition(tenantId, name, ['waking'], 'sleeping', { reason, hosts: [] });
      throw err;
    }
  }

  private async finishSleep(row: EnvironmentRow, reason: string): Promise<EnvironmentRow> {
    await this.deps.release(row, row.hosts, `environment ${row.name} went to sleep (${reason})`);
    await this.deps.envs.setHosts(row.tenant_id, row.name, []);
    return { ...row, hosts: [] };
  }

  /** Runs `work` as the one sleep or wake of this environment; a second waits for the first. */
  private exclusive<T>(row: Pick<EnvironmentRow, 'tenant_id' | 'name'>, work: () => Promise<T>): Promise<T> {
    const key = keyOf(row.tenant_id, row.name);
    const before = this.busy.get(key) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(work);
    this.busy.set(key, run);
    const clear = () => {
      if (this.busy.get(key) === run) this.busy.delete(key);
    };
    run.then(clear, clear);
    return run;
  }
}

function keyOf(tenantId: string, name: string): string {
  return `${tenantId}\n${name}`;
}
