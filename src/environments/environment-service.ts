/**
 * Environments: "give alice an environment of branch X" — hosts claimed from the stack's pool, the
 * stack's services started on them for the mode, a route from NAME.<domain> once they answer, and a
 * timing breakdown. A create either finishes or releases everything it claimed; `deploy` starts new
 * hosts first and switches the route only when they answer; `rm` and TTL expiry release the hosts
 * (reset back into the pool or terminated, as the pool says), and so does sleep when it is idle
 * (sleep.ts), its next request waking it; after a server restart routes come back from the store
 * (recovery.ts). In `service` mode a driver's load balancing (load-balancing.ts), when given,
 * gets each service's hosts before the route switches and lets go of them before they are released.
 */
import { BerthError, errorMessage } from '../core/errors.js';
import type { RouteSpec, RouteView } from '../router/router.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvHostRecord, EnvironmentRow, HostRow, PoolRow } from '../store/schema.js';
import type { StackSpec } from '../stacks/spec.js';
import { parseTtl, type CreateEnvironmentInput } from './spec.js';
import { placeServices, roundTimings, type PlaceOptions, type PlacementDeps, type RouteTarget } from './placement.js';
import { toEnvironmentView, type EnvironmentView } from './views.js';
import { LoadBalancedServices, type ServiceLoadBalancing } from './load-balancing.js';
import { currentSlugDigest, environmentStack, recordedStack, type EnvironmentStack, type EnvironmentStackDeps } from './slug-stack.js';
import type { ServiceHostsDeps } from './service-hosts.js';
import { changeSettings, nextSettings, settleSettings, type SettingsChange, type SettingsDeps } from './settings.js';
import { restartServices, type RestartDeps, type RestartInput } from './restart.js';
import { EnvironmentSleeper, parseSleepAfter } from './sleep.js';
import { recoverEnvironments } from './recovery.js';
import { HostRelease } from './release.js';
import { scaleEnvironment } from './scale.js';
import { checkServiceReplicas, countsOf, type ReplicaChange, type ReplicaCounts } from './replicas.js';
import { deployEnvironment, type DeployDeps, type DeployOptions } from './deploy.js';
import { EnvironmentRoutes } from './routes.js';
import { EnvironmentHealer } from './heal.js';
import type { EnvironmentAccess } from './access.js';
import { ENVIRONMENT_STATES } from './state.js';
import type { Principal } from '../tokens/token-service.js';
import { upsertEnvironment, type UpsertEnvironmentInput, type UpsertResult } from './upsert.js';
import { routerDrain } from './rolling.js';

export interface EnvironmentServiceDeps extends EnvironmentStackDeps {
  envs: EnvironmentsRepo;
  /** getRecent: the create's claim reads the same pool moments later (see PoolsRepo.getRecent). */
  pools: { get(tenantId: string, name: string): Promise<PoolRow | undefined>; getRecent(tenantId: string, name: string): Promise<PoolRow | undefined> };
  hosts: { get(tenantId: string, id: string): Promise<HostRow | undefined> };
  placement: PlacementDeps;
  /** A host's services: what it runs, a restart of one, and waiting on their reports (ServicesService). */
  services: RestartDeps['services'];
  /** Changes a claimed host's tags; its services converge to them (HostService.changeTags). */
  changeHostTags: SettingsDeps['changeHostTags'];
  /** Gives a claimed host back (reuse: reset into its pool; else terminated). */
  release(tenantId: string, hostId: string, opts: { reuse: boolean }): Promise<unknown>;
  router: {
    setRoute(name: string, spec: RouteSpec): RouteView;
    removeRoute(name: string): boolean;
    route(name: string): RouteView | undefined;
    setDraining(name: string, backendId: string, draining: boolean): boolean;
    /** How long its route has gone without a request (sleep.ts). */
    idleMs(name: string): number | undefined;
  };
  log: (line: string) => void;
  /** Health checks of a route, ms; default 1000. */
  healthIntervalMs?: number;
  /** After a deploy's switch, old hosts get this long to finish requests in flight; default 500 ms. */
  drainMs?: number;
  /** The driver's load balancing of `service` mode environments (AWS: ELBv2 target groups); none: the router only. */
  loadBalancing?: ServiceLoadBalancing;
  /** After a failed replacement of a lost host, the first wait before the next try (heal.ts); default 10 s. */
  healRetryMs?: number;
  /** Who may see private environments (access.ts); without it none can be private. */
  access?: EnvironmentAccess;
}

export class EnvironmentService {
  private sweeper: NodeJS.Timeout | undefined;
  private readonly balancing: LoadBalancedServices | undefined;
  private readonly sleeper: EnvironmentSleeper;
  private readonly hostRelease: HostRelease;
  private readonly routes: EnvironmentRoutes;
  private readonly healer: EnvironmentHealer;

  constructor(private readonly deps: EnvironmentServiceDeps) {
    this.balancing = deps.loadBalancing ? new LoadBalancedServices(deps.loadBalancing, deps) : undefined;
    this.hostRelease = new HostRelease(deps, this.balancing);
    this.routes = new EnvironmentRoutes(deps);
    this.sleeper = new EnvironmentSleeper({
      envs: deps.envs,
      router: deps.router,
      placeAgain: (row, claimed, balanced, deadline) => this.placeAgain(row, claimed, balanced, deadline),
      release: (row, hosts, why, balanced) => this.hostRelease.letGo(row, hosts, why, balanced),
      guardOf: (row) => this.routes.guardOf({ tenantId: row.tenant_id, name: row.name, private: row.private }),
      drainMs: deps.drainMs ?? 500,
      log: deps.log,
    });
    this.healer = new EnvironmentHealer({
      envs: deps.envs,
      placement: deps.placement,
      routes: this.routes,
      hostRelease: this.hostRelease,
      stackOf: (row) => recordedStack(deps, row),
      redeploy: (row, because) => this.deploy(row.tenant_id, row.name, row.ref, 120, { because, slugDigest: row.slug_digest }),
      balancing: this.balancing,
      placeMore: this.placeMore.bind(this),
      log: deps.log,
      ...(deps.healRetryMs !== undefined ? { retryMs: deps.healRetryMs } : {}),
    });
  }

  async create(tenantId: string, input: CreateEnvironmentInput, signal?: AbortSignal): Promise<EnvironmentView> {
    const t0 = performance.now();
    const expiresAt = input.ttl !== undefined ? new Date(Date.now() + parseTtl(input.ttl)) : null;
    const sleepAfterMs = input.sleepAfter !== undefined ? parseSleepAfter(input.sleepAfter) : null;
    this.routes.guardOf({ tenantId, name: input.name, private: input.private });
    const pool = input.pool ?? input.stack;
    const [{ spec, target, init, slugDigest }, poolRow] = await Promise.all([environmentStack(this.deps, { tenantId, stack: input.stack, ref: input.ref, command: input.command, signal }), this.deps.pools.getRecent(tenantId, pool)]);
    if (!poolRow) {
      throw new BerthError('pool_not_found', `pool ${pool} does not exist`, input.pool ? 'Create it (berth apply, or berth pool create).' : `Environments of stack ${input.stack} are claimed from the pool named after it: create pool ${pool}, or pass --pool.`);
    }
    const counts = { replicas: input.replicas, serviceReplicas: input.serviceReplicas };
    checkServiceReplicas(spec, input.mode, counts.serviceReplicas);
    const inserted = await this.deps.envs.insert({ tenantId, name: input.name, stack: input.stack, pool, mode: input.mode, ref: input.ref ?? null, slugDigest, command: input.command ?? null, ...counts, owner: input.user ?? null, settings: input.set, expiresAt, sleepAfterMs, private: input.private });
    if (!inserted) throw new BerthError('environment_exists', `environment ${input.name} exists already`, `Pick another name, or remove it first: berth env rm ${input.name}`);
    const claimed: EnvHostRecord[] = [];
    const balanced = new Set<string>();
    // The pool refills once the environment is recorded ready (or cleaned up), not while it is made.
    let createDone = (): void => undefined;
    const refillAfter = new Promise<void>((resolve) => (createDone = resolve));
    try {
      const placed = await this.place(tenantId, input.name, spec, target, { pool, mode: input.mode, ref: input.ref ?? null, ...counts, owner: input.user ?? null, settings: input.set, generation: 1, deadline: Date.now() + input.wait * 1000, claimed, balanced, init, refillAfter, private: input.private, ...(signal ? { signal } : {}) });
      const timings = { ...placed.timings, totalMs: performance.now() - t0 };
      const row = await this.deps.envs.transition(tenantId, input.name, ['creating'], 'ready', { hosts: claimed, route: { ...target, generation: 1 }, timings: roundTimings(timings), operation: 'create' });
      if (!row) throw new BerthError('conflict', `environment ${input.name} was removed while it was being created`, 'Create it again.');
      return this.view(row);
    } catch (err) {
      this.deps.router.removeRoute(input.name);
      // The environment never was: its services' groups go with it.
      await this.hostRelease.letGo({ tenant_id: tenantId, name: input.name, pool, mode: input.mode }, claimed, `environment ${input.name} could not be created`, balanced);
      await this.deps.envs.delete(tenantId, input.name);
      throw err;
    } finally {
      createDone();
    }
  }

  /** The environment as asked: created, or changed in place where it differs (upsert.ts). */
  upsert(tenantId: string, name: string, body: UpsertEnvironmentInput): Promise<UpsertResult> {
    return upsertEnvironment(this, tenantId, name, body);
  }

  /** For `env up`: what the slug at a ref holds now (a rebuild at the same path is a new deploy). */
  readonly slugDigest = (ref: string): Promise<string | null> => currentSlugDigest(this.deps, ref);

  /** Refuses counts of their own for services `row`'s stack has not, or in review mode. */
  async checkReplicas(row: EnvironmentRow, serviceReplicas: Record<string, number>): Promise<void> {
    const stack = row.mode === 'service' ? (await recordedStack(this.deps, row)).spec : undefined;
    checkServiceReplicas(stack, row.mode, serviceReplicas);
  }

  /** Its stored row (settings' values included), if it exists. */
  find(tenantId: string, name: string): Promise<EnvironmentRow | undefined> {
    return this.deps.envs.get(tenantId, name);
  }

  async get(tenantId: string, name: string): Promise<EnvironmentView> {
    return this.view(await this.row(tenantId, name));
  }

  async list(tenantId: string): Promise<EnvironmentView[]> {
    return (await this.deps.envs.list(tenantId)).map((row) => this.view(row));
  }

  /**
   * A new TTL, counted from now (a review app someone still uses is kept longer), or none (`null`);
   * how long it may go without a request before it sleeps (`null`: never); whether it is private
   * (its route changes at once; not while an operation that sets the route is under way).
   */
  async setOptions(tenantId: string, name: string, options: { ttl?: string | null | undefined; sleepAfter?: string | null | undefined; private?: boolean | undefined }): Promise<EnvironmentView> {
    const expiresAt = options.ttl === undefined ? undefined : options.ttl === null ? null : new Date(Date.now() + parseTtl(options.ttl));
    const sleepAfterMs = options.sleepAfter === undefined ? undefined : options.sleepAfter === null ? null : parseSleepAfter(options.sleepAfter);
    if (options.private) this.routes.guardOf({ tenantId, name, private: true });
    const states = options.private === undefined ? ENVIRONMENT_STATES.filter((s) => s !== 'removing') : (['ready', 'sleeping', 'failed'] as const);
    const row = await this.deps.envs.setOptions(tenantId, name, { ...(expiresAt !== undefined ? { expiresAt } : {}), ...(sleepAfterMs !== undefined ? { sleepAfterMs } : {}), ...(options.private !== undefined ? { private: options.private } : {}) }, states);
    if (!row) {
      const now = await this.row(tenantId, name); // not found: its own error
      throw new BerthError('conflict', `environment ${name} is ${now.state}`, now.state === 'removing' ? 'Create it again (berth env create).' : 'Wait until it settles, then try again.');
    }
    if (options.private !== undefined) {
      if (row.state === 'sleeping') this.deps.router.setRoute(name, this.sleeper.sleepingRoute(row));
      else if (row.route && this.deps.router.route(name)) await this.routes.restore(row, row.route);
    }
    return this.view(row);
  }

  /** A link into private environment `name` for `principal`, good for a few minutes (access.ts); a public one's plain URL. */
  async accessLink(principal: Principal, name: string): Promise<{ url: string; expiresAt: string | null }> {
    const row = await this.row(principal.tenantId, name);
    const url = this.deps.router.route(name)?.url;
    if (!url) throw new BerthError('invalid_state', `environment ${name} has no route yet`, 'Wait until it is ready.');
    if (!row.private || !this.deps.access) return { url, expiresAt: null };
    return this.deps.access.link(principal, name, url);
  }

  /** Puts it to sleep now: its hosts go back to the pool; its next request (or `wake`) brings it back. */
  async sleep(tenantId: string, name: string): Promise<EnvironmentView> {
    return this.view(await this.sleeper.sleep(await this.row(tenantId, name), 'put to sleep by request'));
  }

  /** Wakes it now, as its next request would (a ready one is answered as it is). */
  async wake(tenantId: string, name: string, waitS: number): Promise<EnvironmentView> {
    await this.row(tenantId, name);
    return this.view(await this.sleeper.wake(tenantId, name, { why: 'woken by request', waitS, retryNow: true }));
  }

  /** New settings on every host, one host at a time, or none at all (settings.ts). */
  async changeSettings(tenantId: string, name: string, change: SettingsChange): Promise<EnvironmentView> {
    const row = await this.row(tenantId, name);
    if (row.state === 'sleeping') {
      // Nothing runs: its next wake starts with them.
      const settings = nextSettings(name, row.settings, change);
      return this.view(await this.asleep(row, { settings, reason: `settings changed for its next wake` }));
    }
    return this.view(await changeSettings(this.settingsDeps(), row, change));
  }

  /** Another number of replicas (or services' own counts): in place, or by a deploy when other services' hosts must learn new addresses (scale.ts). */
  async scale(tenantId: string, name: string, change: ReplicaChange, waitS: number): Promise<EnvironmentView> {
    const { envs, placement, drainMs = 500 } = this.deps;
    const stackOf = (r: EnvironmentRow) => recordedStack(this.deps, r);
    const redeploy = async (r: EnvironmentRow, counts: ReplicaCounts, w: number) => (await this.deploy(tenantId, name, r.ref, w, { counts, slugDigest: r.slug_digest }), this.row(tenantId, name));
    const deps = { envs, placement, routes: this.routes, hostRelease: this.hostRelease, balancing: this.balancing, stackOf, redeploy, placeMore: this.placeMore.bind(this), drainMs };
    return this.view(await scaleEnvironment(deps, await this.row(tenantId, name), change, waitS));
  }

  /** Its services restarted host by host, each host back in rotation before the next (restart.ts). */
  async restart(tenantId: string, name: string, input: RestartInput): Promise<EnvironmentView> {
    const row = await this.row(tenantId, name);
    if (row.state === 'sleeping') throw new BerthError('conflict', `environment ${name} is asleep: nothing of it runs`, 'Its next request (or berth env wake) starts its services afresh.');
    return this.view(await restartServices({ ...this.settingsDeps(), services: this.deps.services }, await this.row(tenantId, name), input));
  }

  /** New hosts with `ref`, the route switched once they answer, then the old ones released. */
  /** New hosts with `ref` (null: its stack without one), the route switched once they answer, then the old ones released (deploy.ts). */
  async deploy(tenantId: string, name: string, ref: string | null, waitS: number, opts: DeployOptions = {}): Promise<EnvironmentView> {
    const deps: DeployDeps = { ...this.deps, routes: this.routes, hostRelease: this.hostRelease, balancing: this.balancing, place: (t, n, spec, target, o) => this.place(t, n, spec, target, o), asleep: (row, fields) => this.asleep(row, fields) };
    return this.view(await deployEnvironment(deps, await this.row(tenantId, name), ref, waitS, opts));
  }

  async remove(tenantId: string, name: string): Promise<EnvironmentView> {
    // A sleep under way finishes first: its hosts are released by it, not twice.
    await this.sleeper.settled(tenantId, name);
    const row = await this.row(tenantId, name);
    if (row.state === 'creating' || row.state === 'deploying' || row.state === 'configuring' || row.state === 'restarting' || row.state === 'scaling' || row.state === 'healing' || row.state === 'waking') {
      throw new BerthError('conflict', `environment ${name} is ${row.state}`, 'Wait until it is ready (or failed), then remove it.');
    }
    const removing = row.state === 'removing' ? row : await this.deps.envs.transition(tenantId, name, ['ready', 'failed', 'sleeping'], 'removing', { reason: 'removed by request' });
    if (!removing) throw new BerthError('conflict', `environment ${name} changed meanwhile`, 'Try again.');
    await this.finishRemoval(removing, 'removed');
    return this.view(removing);
  }

  /** Removes environments whose TTL has passed; runs every `intervalMs` until stop(). */
  startSweeper(intervalMs = 5000): void {
    const sweep = () => void this.sweep().catch((err: unknown) => this.deps.log(`environments: expiry sweep: ${errorMessage(err)}`));
    this.sweeper = setInterval(sweep, intervalMs);
    this.sweeper.unref();
    sweep();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.healer.stop();
  }

  /** Removes environments whose TTL passed, puts to sleep those idle longer than their sleep-after, and replaces lost hosts (heal.ts). */
  async sweep(now = new Date()): Promise<string[]> {
    const gone: string[] = [];
    for (const row of await this.deps.envs.expired(now)) {
      await this.sleeper.settled(row.tenant_id, row.name);
      const removing = await this.deps.envs.transition(row.tenant_id, row.name, ['ready', 'failed', 'sleeping'], 'removing', { reason: 'its TTL expired' });
      if (!removing) continue;
      await this.finishRemoval(removing, 'expired');
      gone.push(row.name);
    }
    await this.sleeper.sweep();
    await this.healer.sweep();
    return gone;
  }

  /**
   * Looks for lost hosts now rather than at the next sweep (heal.ts): called when a host of a group
   * leaves for good, so an environment that lost one is on its way back within a moment.
   */
  healSoon(): void {
    this.healer.soon();
  }

  /** After a restart: nothing is left half-done (recovery.ts). */
  recover(): Promise<{ routed: string[]; cleaned: string[] }> {
    return recoverEnvironments({
      envs: this.deps.envs,
      letGo: (row, hosts, why) => this.hostRelease.letGo(row, hosts, why),
      // Which of them the deploy had attached, and to what, is not known here: none is reused.
      releaseStale: (row, hosts, why) => this.hostRelease.releaseAll(row.tenant_id, row.pool, hosts, why, this.balancing && row.mode === 'service' ? hosts : undefined),
      finishRemoval: (row) => this.finishRemoval(row, 'removed'),
      settleSettings: (row) => settleSettings(this.settingsDeps(), row),
      recoverAsleep: (row) => this.sleeper.recover(row),
      restoreRoute: (row, route) => this.routes.restore(row, route),
      log: this.deps.log,
    });
  }

  private async place(
    tenantId: string,
    name: string,
    stack: StackSpec,
    target: RouteTarget,
    opts: PlaceOptions,
  ) {
    const { claimed, balanced, recordWith = [], routeWith = [], private: isPrivate, ...rest } = opts;
    // Without the caller's (a deploy): the pool refills once the hosts are placed.
    let createDone = (): void => undefined;
    const refillAfter = rest.refillAfter ?? new Promise<void>((resolve) => (createDone = resolve));
    try {
      const placement = await placeServices(this.deps.placement, {
        ...rest,
        refillAfter,
        target,
        tenantId,
        name,
        stack,
        onClaimed: async (host) => {
          claimed.push({ hostId: host.hostId, service: host.service, generation: host.generation });
          await this.deps.envs.setHosts(tenantId, name, [...recordWith, ...claimed]);
        },
      });
      // Every service is ready: the load balancer gets them before the route (or the answer) says so.
      const tBalance = performance.now();
      const balancing = this.balancing && rest.mode === 'service' ? this.balancing : undefined;
      if (balancing) await balancing.attach({ tenantId, name }, stack, placement.hosts, { deadline: rest.deadline, ...(rest.signal ? { signal: rest.signal } : {}) }, balanced);
      const balanceMs = performance.now() - tBalance;
      const backends = [...routeWith, ...placement.hosts].filter((h) => h.service === null || h.service === target.service);
      const tRoute = performance.now();
      this.routes.set({ tenantId, name, private: isPrivate }, backends, target, rest.ref);
      return { ...placement, timings: { ...placement.timings, ...(balancing ? { balanceMs } : {}), routeMs: performance.now() - tRoute } };
    } finally {
      // The pools refill now: launching hosts meanwhile would take the CPU the services need.
      createDone();
    }
  }

  /** Service mode in place: more hosts of some services beside the others (service-hosts.ts). */
  private placeMore(row: EnvironmentRow, { spec, target, init }: EnvironmentStack, more: Parameters<ServiceHostsDeps['placeMore']>[2]) {
    const { routed, existing, counts, ...rest } = more;
    const opts = { pool: row.pool, mode: 'service' as const, ref: row.ref, ...countsOf(row), owner: row.owner, settings: row.settings, init, private: row.private };
    return this.place(row.tenant_id, row.name, spec, target, { ...opts, recordWith: routed, routeWith: existing, adding: { counts, existing }, ...rest });
  }

  /** A sleeping environment's services on new hosts again (its wake; sleep.ts), routed once they answer. */
  private async placeAgain(row: EnvironmentRow, claimed: EnvHostRecord[], balanced: Set<string>, deadline: number) {
    const { spec, target, init } = await recordedStack(this.deps, row);
    const generation = (row.route?.generation ?? 0) + 1;
    const mode = row.mode === 'service' ? 'service' : 'review';
    const placed = await this.place(row.tenant_id, row.name, spec, target, { pool: row.pool, mode, ref: row.ref, ...countsOf(row), owner: row.owner, settings: row.settings, generation, deadline, claimed, balanced, init, private: row.private });
    return { timings: placed.timings, route: { ...target, generation } };
  }

  /** Records a sleeping environment's new ref, command or settings for its next wake. */
  private async asleep(row: EnvironmentRow, fields: Parameters<EnvironmentsRepo['changeAsleep']>[2]): Promise<EnvironmentRow> {
    const changed = await this.deps.envs.changeAsleep(row.tenant_id, row.name, fields);
    if (!changed) throw new BerthError('conflict', `environment ${row.name} woke or changed meanwhile`, 'Look at it (berth env show), then try again.');
    return changed;
  }

  private async finishRemoval(row: EnvironmentRow, why: string): Promise<void> {
    this.deps.router.removeRoute(row.name);
    await this.hostRelease.letGo(row, row.hosts, `environment ${row.name} ${why}`);
    await this.deps.envs.delete(row.tenant_id, row.name);
  }

  private settingsDeps(): SettingsDeps {
    const { envs, hosts, changeHostTags, log, placement } = this.deps;
    return {
      envs,
      hosts,
      changeHostTags,
      awaitServicesReady: (tenantId, hostId, timeoutMs, label) => placement.awaitServicesReady(tenantId, hostId, timeoutMs, label),
      backendHealthy: (name, hostId) => this.deps.router.route(name)?.backends.find((b) => b.id === hostId)?.healthy,
      ...routerDrain(this.deps.router, this.deps.drainMs ?? 500),
      log,
    };
  }

  private async row(tenantId: string, name: string): Promise<EnvironmentRow> {
    const row = await this.deps.envs.get(tenantId, name);
    if (!row) throw new BerthError('environment_not_found', `environment ${name} does not exist`, 'List them with `berth env ls`.');
    return row;
  }

  private view(row: EnvironmentRow): EnvironmentView {
    const route = this.deps.router.route(row.name);
    return toEnvironmentView(row, route?.url ?? null, route);
  }
}
