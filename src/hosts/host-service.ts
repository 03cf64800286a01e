/**
 * Hosts on the control plane: launch through the driver, track the agent's enrolment, terminate, and
 * after a restart adopt what still runs and clean up everything else (nothing is ever leaked).
 */
import { timingSafeEqual } from 'node:crypto';
import { BerthError, errorMessage, isBerthError } from '../core/errors.js';
import { hashSecret, newId, newSecret } from '../core/ids.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import { agentBootstrap, type HostResources } from '../drivers/types.js';
import type { BootImage, HostServiceDeps, LaunchRequest, RegisteredHost } from './host-types.js';
import type { NewHost } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';
import { toHostSummary, toHostView, type HostStatsView, type HostSummary, type HostView } from './views.js';
import { bootTimeoutOf, checkHost, LeftAgentChecks, monitorHosts, recoverHosts, sweepOrphans, type RecoveryContext } from './host-recovery.js';
import { AgentArrivals, ReadyWaiters } from './ready-waiters.js';
import { hostStats, runningHostStats } from './host-stats.js';

export type { AgentPresence, BootImage, HostServiceDeps, ImageResolver, LaunchRequest, RegisteredHost } from './host-types.js';

export class HostService {
  private readonly readyWaiters = new ReadyWaiters();
  /** Every agent that (re)connects to a running host: claims wait here for a pool's hosts after a restart. */
  readonly agentArrivals = new AgentArrivals<HostRow>();
  /** Hosts being reset by this process: their init is replaced on purpose, so the monitor leaves them be. */
  private readonly resetting = new Set<string>();
  /** Resets under way: a terminate waits for its host's (both would rebuild or remove its parts at once). */
  private readonly resetsOver = new Map<string, Promise<void>>();
  private readonly terminations = new Map<string, Promise<HostView>>();
  private readonly leftAgents = new LeftAgentChecks((id) => this.deps.hosts.getAnyTenant(id).then((row) => row && checkHost(this.recovery(), row, new Date())), (line) => this.deps.log(line));

  constructor(private readonly deps: HostServiceDeps) {}

  /**
   * `wait` without `waitMs`: as long as any host of this driver may take to enrol — berth's agent's
   * limit (the driver's: an EC2 instance boots in a minute), or a backend agent's (SSM) when longer.
   */
  async launch(tenantId: string, req: LaunchRequest, opts: { wait?: boolean; waitMs?: number; signal?: AbortSignal; boot?: BootImage } = {}): Promise<HostView> {
    const registered = await this.register(tenantId, req, undefined, opts.boot);
    const waitMs = opts.waitMs ?? (opts.wait ? Math.max(this.deps.bootTimeoutMs ?? 30_000, this.deps.driver.agents?.bootTimeoutMs ?? 0) : undefined);
    await this.start(registered, { ...(waitMs ? { waitMs } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    return this.get(tenantId, registered.id);
  }

  /**
   * First half of a launch: records the host (state `launching`), so it counts from this moment.
   * `pool` makes it a pool's host in the given slot.
   */
  async register(tenantId: string, req: LaunchRequest, pool?: NewHost['pool'], boot?: BootImage, fixedId?: string): Promise<RegisteredHost> {
    const resolved = boot ?? (await this.deps.images.resolve(tenantId, req.image ?? this.deps.defaultImage));
    const id = fixedId ?? newId('h');
    const token = newSecret();
    const hostname = req.hostname ?? id;
    const resources = { ...this.deps.defaultResources, ...(req.resources ?? {}) };
    this.deps.driver.checkResources?.(resources);
    const tags = req.tags ?? {};
    await this.deps.hosts.insert({
      id,
      tenantId,
      driver: this.deps.driver.name,
      image: resolved.image,
      imageId: resolved.imageId,
      hostname,
      tags,
      resources: { ...resources },
      agentTokenHash: hashSecret(token),
      ...(pool ? { pool } : {}),
    });
    return { id, tenantId, token, hostname, boot: resolved, resources, tags, ...(pool?.slot === 'warming' ? { standby: true } : {}) };
  }

  /**
   * Second half: creates the machine and, with `waitMs`, waits until its agent has enrolled. On
   * failure the host is cleaned up and the error thrown.
   */
  async start(host: RegisteredHost, opts: { waitMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    const { id, tenantId } = host;
    const ready = opts.waitMs ? this.readyWaiters.wait(id, opts.waitMs, opts.signal) : undefined;
    try {
      const launched = await this.deps.driver.launch(
        { id, hostname: host.hostname, image: host.boot.base, layers: host.boot.layers, tags: host.tags, resources: host.resources, agent: agentBootstrap(this.deps.agentChannel, id, host.token), ...(host.standby ? { standby: true } : {}) },
        opts.signal ? { signal: opts.signal } : {},
      );
      await this.deps.hosts.setLaunched(id, launched.ip, launched.driverData);
      this.deps.onMachine?.({ id, tenantId, driverData: launched.driverData });
      // The agent may already have enrolled (launching -> running) before launch() returned.
      await this.deps.hosts.transition(id, ['launching'], 'booting');
    } catch (err) {
      ready?.catch(() => undefined);
      await this.deps.hosts.transition(id, ['launching'], 'failed', { reason: `launch failed: ${errorMessage(err)}` });
      await this.deps.driver.terminate(id, {}).catch((cleanupErr: unknown) => this.deps.log(`host ${id}: cleanup after failed launch: ${errorMessage(cleanupErr)}`));
      if (err instanceof BerthError) throw err;
      throw new BerthError('launch_failed', `host ${id} failed to launch: ${errorMessage(err)}`, 'See the server log; check the image directory exists and the machine supports namespaces.', { hostId: id }, { cause: err });
    }
    if (ready) {
      try {
        await ready;
      } catch (err) {
        if (!(err instanceof BerthError) || err.code !== 'deadline_exceeded') throw err;
        await this.terminate(tenantId, id, `agent did not enrol within ${opts.waitMs} ms`);
        throw err;
      }
    }
  }

  /**
   * A machine its backend launched by itself (a fleet pool's) that asked to enrol, and was found
   * to be one of the pool's: recorded as a booting host with a fresh token, whose agent connects
   * next. Its id comes from the machine's, so one machine can never be admitted twice.
   */
  async admit(tenantId: string, req: LaunchRequest, pool: NonNullable<NewHost['pool']>, machine: { id: string; ip: string; driverData: Record<string, unknown> }): Promise<RegisteredHost> {
    let registered: RegisteredHost;
    try {
      // The machine boots what its group's template names (an AMI): nothing to resolve here.
      const image = req.image ?? this.deps.defaultImage;
      registered = await this.register(tenantId, { ...req, hostname: req.hostname ?? machine.id }, pool, { image, imageId: null, base: image, layers: [] }, machine.id);
    } catch (err) {
      if (await this.deps.hosts.getAnyTenant(machine.id)) {
        throw new BerthError('conflict', `host ${machine.id} has enrolled already`, 'A machine enrols once; its agent keeps the identity it got (agent.json). Terminate the machine if it lost it.', { hostId: machine.id });
      }
      throw err;
    }
    await this.deps.hosts.setLaunched(registered.id, machine.ip, machine.driverData);
    await this.deps.hosts.transition(registered.id, ['launching'], 'booting');
    this.deps.onMachine?.({ id: registered.id, tenantId, driverData: machine.driverData });
    const backendBoot = bootTimeoutOf(this.deps.driver, machine.driverData);
    return backendBoot === undefined ? registered : { ...registered, bootTimeoutMs: backendBoot };
  }

  /** Resolves when the host's agent has connected (at once if it is running), else deadline_exceeded. */
  async awaitEnrolled(id: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const ready = this.readyWaiters.wait(id, timeoutMs, signal);
    const row = await this.deps.hosts.getAnyTenant(id);
    if (row?.state === 'running' && this.deps.agents.isConnected(id)) {
      ready.catch(() => undefined);
      this.readyWaiters.ready(id);
    }
    return ready;
  }

  async get(tenantId: string, id: string): Promise<HostView> {
    const row = await this.deps.hosts.get(tenantId, id);
    if (!row) throw new BerthError('host_not_found', `host ${id} does not exist`, 'List hosts with `berth host ls`.', { hostId: id });
    return toHostView(row, this.deps.agents.isConnected(id));
  }

  /** What a running host uses now (host-stats.ts). */
  stats(tenantId: string, id: string): Promise<HostStatsView> {
    return hostStats(this.deps, tenantId, id);
  }

  /** The stats of every running host of the tenant (host-stats.ts). */
  runningStats(tenantId: string): Promise<HostStatsView[]> {
    return runningHostStats(this.deps, tenantId);
  }

  async list(tenantId: string, opts: { all?: boolean; tags?: Record<string, string> } = {}): Promise<HostView[]> {
    const rows = await this.deps.hosts.list(tenantId, { ...(opts.all ? {} : { states: [...LIVE_HOST_STATES, 'failed'] }), ...(opts.tags ? { tags: opts.tags } : {}) });
    return rows.map((row) => toHostView(row, this.deps.agents.isConnected(row.id)));
  }

  /** Every host of every tenant that may still have processes or resources on the backend. */
  liveHosts(): Promise<HostRow[]> {
    return this.deps.hosts.listInStates([...LIVE_HOST_STATES, 'failed']);
  }

  /** Live and failed hosts, as a table lists them (the dashboard): fewer columns than `list`, read faster. */
  async summaries(tenantId: string): Promise<HostSummary[]> {
    const rows = await this.deps.hosts.listSummaries(tenantId, [...LIVE_HOST_STATES, 'failed']);
    return rows.map((row) => toHostSummary(row, this.deps.agents.isConnected(row.id)));
  }

  /**
   * Terminates a host; a second call while this process terminates it waits for the first.
   * `replace` (fleet drivers): whether the host's group replaces it; by default a pool's host
   * that is in no claiming group is replaced (the pool's group keeps its size), others are not.
   */
  async terminate(tenantId: string, id: string, reason = 'terminated by request', opts: { replace?: boolean } = {}): Promise<HostView> {
    const running = this.terminations.get(id);
    if (running) return running;
    const termination = this.terminateOnce(tenantId, id, reason, opts.replace).finally(() => this.terminations.delete(id));
    this.terminations.set(id, termination);
    return termination;
  }

  private async terminateOnce(tenantId: string, id: string, reason: string, replace: boolean | undefined): Promise<HostView> {
    await this.resetsOver.get(id);
    const row = await this.deps.hosts.get(tenantId, id);
    if (!row) throw new BerthError('host_not_found', `host ${id} does not exist`, 'List hosts with `berth host ls`.', { hostId: id });
    if (row.state === 'terminated') return toHostView(row, false);
    // A host already terminating (an earlier attempt failed half-way) is cleaned up again as it is.
    await this.deps.hosts.transition(id, ['launching', 'booting', 'running', 'lost', 'failed'], 'terminating', { reason });
    await this.cleanUp(row, reason, replace);
    return this.get(tenantId, id);
  }

  /**
   * A claimed standby host serves from now on: its CPU share becomes a serving host's before its
   * init runs. Never fails a claim: a host that keeps its small share is slower under load, not wrong.
   */
  serve(host: Pick<HostRow, 'id' | 'driver_data'>): void {
    try {
      this.deps.driver.setStandby?.(host.id, host.driver_data, false);
    } catch (err) {
      this.deps.log(`host ${host.id}: could not give it a serving host's CPU share: ${errorMessage(err)}`);
    }
  }

  canReset(): boolean {
    return typeof this.deps.driver.reset === 'function';
  }

  /**
   * Makes a running host a fresh one (see HostDriver.reset): new files, processes and agent
   * credentials, the given image and tags; waits until the new agent has enrolled. Whatever was
   * still running on it is settled as the host's end. On failure the host is terminated.
   */
  async reset(
    tenantId: string,
    id: string,
    req: { image: string; tags: Record<string, string>; resources?: HostResources; keepServices?: boolean; standby?: boolean },
    opts: { waitMs: number; signal?: AbortSignal },
  ): Promise<HostRow> {
    const reset = this.deps.driver.reset?.bind(this.deps.driver);
    if (!reset) throw new BerthError('invalid_state', `the ${this.deps.driver.name} driver cannot reset hosts`, 'Release without --reuse.');
    const boot = await this.deps.images.resolve(tenantId, req.image);
    const token = newSecret();
    const row = await this.deps.hosts.beginReset(id, hashSecret(token), req.tags, { image: boot.image, imageId: boot.imageId }, req.keepServices ?? false);
    if (!row) throw new BerthError('invalid_state', `host ${id} is not running, so it cannot be reset`, 'Check it with `berth host ls`.', { hostId: id });
    this.resetting.add(id);
    let over = (): void => undefined;
    this.resetsOver.set(id, new Promise<void>((resolve) => (over = () => (this.resetsOver.delete(id), resolve()))));
    this.deps.agents.disconnect(id, 'the host is being reset');
    await this.deps.onHostGone(id, 'the host was reset');
    const ready = this.readyWaiters.wait(id, opts.waitMs, opts.signal);
    try {
      const resources = { ...row.resources, ...(req.resources ?? {}) };
      const spec = { id, hostname: row.hostname, image: boot.base, layers: boot.layers, tags: req.tags, resources, agent: agentBootstrap(this.deps.agentChannel, id, token), ...(req.standby ? { standby: true } : {}) };
      const launched = await reset(spec, row.driver_data, opts.signal ? { signal: opts.signal } : {});
      await this.deps.hosts.setLaunched(id, launched.ip, launched.driverData);
      await ready;
    } catch (err) {
      ready.catch(() => undefined);
      this.resetting.delete(id);
      over();
      await this.terminate(tenantId, id, `reset failed: ${errorMessage(err)}`).catch((cleanupErr: unknown) => this.deps.log(`host ${id}: cleanup after a failed reset: ${errorMessage(cleanupErr)}`));
      throw err instanceof BerthError ? err : new BerthError('launch_failed', `host ${id} could not be reset: ${errorMessage(err)}`, 'A new host will replace it.', { hostId: id }, { cause: err });
    }
    this.resetting.delete(id);
    over();
    const after = await this.deps.hosts.get(tenantId, id);
    if (!after) throw new BerthError('host_not_found', `host ${id} vanished during its reset`, 'A new host will replace it.');
    return after;
  }

  /**
   * A user's reset (`berth host reset`): the host's services are stopped properly, every process is
   * killed, its writable layer is discarded and it boots again from its image with its tags; its
   * services start again once its new agent has enrolled. Pool hosts waiting in a pool are the pool's
   * to reset (release --reuse).
   */
  async resetHost(tenantId: string, id: string, waitMs = 30_000): Promise<HostView> {
    const row = await this.deps.hosts.get(tenantId, id);
    if (!row) throw new BerthError('host_not_found', `host ${id} does not exist`, 'List hosts with `berth host ls`.', { hostId: id });
    if (row.pool && row.slot !== 'claimed') {
      throw new BerthError('invalid_state', `host ${id} is a ${row.slot ?? 'pool'} host of pool ${row.pool}`, 'A pool resets its own hosts; claim it first, or release a claimed host with --reuse.', { hostId: id });
    }
    const after = await this.reset(tenantId, id, { image: row.image, tags: row.tags, keepServices: true }, { waitMs });
    if (after.group_name && after.slot === 'claimed') await this.deps.onResetInGroup?.(after);
    return this.get(tenantId, id);
  }

  /**
   * Changes a live host's tags (`berth host tag`): the host converges to them without a restart of
   * services they leave untouched. A pool's waiting hosts carry the pool's tags, so they are refused.
   */
  async changeTags(tenantId: string, id: string, change: { set: Record<string, string>; remove: readonly string[] }): Promise<HostView> {
    const clash = change.remove.find((key) => key in change.set);
    if (clash !== undefined) throw new BerthError('validation_failed', `tag ${clash} is both set and removed`, 'Set it or remove it, not both.');
    const current = await this.deps.hosts.get(tenantId, id);
    if (!current) throw new BerthError('host_not_found', `host ${id} does not exist`, 'List hosts with `berth host ls`.', { hostId: id });
    if (current.pool && current.slot !== 'claimed') {
      throw new BerthError('invalid_state', `host ${id} is a ${current.slot ?? 'pool'} host of pool ${current.pool}`, "A pool's waiting hosts carry the pool's tags; claim it first (claims can add tags).", { hostId: id });
    }
    const row = await this.deps.hosts.changeTags(tenantId, id, change.set, change.remove);
    if (!row) throw new BerthError('invalid_state', `host ${id} is ${current.state}, so its tags cannot change`, 'Only live hosts have tags that matter.', { hostId: id });
    if (row.state === 'running') await this.deps.onTagsChanged?.(row);
    return toHostView(row, this.deps.agents.isConnected(id));
  }

  /**
   * Writes what a host changed into `dest` (see HostDriver.captureLayer). With `stop`, the host is
   * stopped and its layer moved, not copied; the host is then terminated in the background.
   */
  async captureLayer(tenantId: string, id: string, dest: string, opts: { stop: boolean; signal?: AbortSignal }): Promise<HostRow> {
    const capture = this.deps.driver.captureLayer?.bind(this.deps.driver);
    if (!capture) throw new BerthError('invalid_state', `the ${this.deps.driver.name} driver cannot capture hosts`, 'Bake the image from a spec instead.');
    const row = await this.deps.hosts.get(tenantId, id);
    if (!row) throw new BerthError('host_not_found', `host ${id} does not exist`, 'List hosts with `berth host ls`.', { hostId: id });
    if (row.state !== 'running') throw new BerthError('invalid_state', `host ${id} is ${row.state}; only a running host can be captured`, 'Capture a running host (`berth host ls`).', { hostId: id });
    if (opts.stop) {
      this.resetting.add(id); // its init is stopped on purpose: not a loss for the monitor to report
      try {
        await capture(id, row.driver_data, dest, { stop: true, ...(opts.signal ? { signal: opts.signal } : {}) });
      } finally {
        // The layer is taken: removing the rest of the host (netns, cgroups) need not hold the caller up.
        void this.terminate(tenantId, id, 'captured into an image layer')
          .catch((err: unknown) => this.deps.log(`host ${id}: termination after capture: ${errorMessage(err)}`))
          .finally(() => this.resetting.delete(id));
      }
    } else {
      await capture(id, row.driver_data, dest, { stop: false, ...(opts.signal ? { signal: opts.signal } : {}) });
    }
    return row;
  }

  /** Verifies an agent's credentials: the token must be the one issued to this very host. */
  async authenticate(hostId: string, token: string): Promise<{ tenantId: string } | undefined> {
    const row = await this.deps.hosts.getAnyTenant(hostId);
    if (!row || !(['booting', 'running', 'lost', 'launching'] as string[]).includes(row.state)) return undefined;
    const given = Buffer.from(hashSecret(token));
    const stored = Buffer.from(row.agent_token_hash);
    return given.length === stored.length && timingSafeEqual(given, stored) ? { tenantId: row.tenant_id } : undefined;
  }

  /** Records the enrolment; resolves with the host's row (for what else follows from it). */
  async onAgentConnected(hostId: string, version: string): Promise<HostRow | undefined> {
    const now = new Date();
    await this.deps.hosts.setAgent(hostId, true, now, version);
    const row = (await this.deps.hosts.transition(hostId, ['launching', 'booting', 'lost'], 'running', { readyAt: now, reason: '' })) ?? (await this.deps.hosts.getAnyTenant(hostId));
    if (row?.state !== 'running') return row;
    this.readyWaiters.ready(hostId);
    this.agentArrivals.arrived(row);
    return row;
  }

  async onAgentDisconnected(hostId: string): Promise<void> {
    if (this.deps.agents.isConnected(hostId)) return; // a newer connection took over
    await this.deps.hosts.setAgent(hostId, false, new Date());
    this.leftAgents.schedule(hostId); // it may have gone with its machine
  }

  /** The server stops: agents leaving now (all, as the agent channel closes) are not looked at. */
  stop(): void {
    this.leftAgents.stop();
  }

  /**
   * After a control-plane restart: hosts whose processes still run are adopted (their agents
   * reconnect by themselves); hosts that died, were mid-launch or mid-termination are cleaned up;
   * anything the driver finds that the store does not know as live is removed.
   */
  recover(): Promise<{ adopted: string[]; cleaned: string[] }> {
    return recoverHosts(this.recovery());
  }

  /** Periodic: machines the store does not know as live hosts are removed (see sweepOrphans). */
  sweepOrphans(): Promise<string[]> {
    return sweepOrphans(this.recovery());
  }

  /** Periodic check: hosts whose processes died are marked lost and cleaned; hosts that never enrol fail. */
  monitor(now = new Date()): Promise<void> {
    return monitorHosts(this.recovery(), now);
  }

  private recovery(): RecoveryContext {
    return {
      deps: this.deps,
      cleanUp: (row, reason) => this.cleanUp(row, reason),
      markLost: (row, why) => this.markLost(row, why),
      isTerminating: (id) => this.terminations.has(id),
      isResetting: (id) => this.resetting.has(id),
    };
  }

  private async markLost(row: HostRow, why: string): Promise<void> {
    await this.deps.hosts.transition(row.id, ['booting', 'running'], 'lost', { reason: why });
    // Whoever moves it on from lost cleans it up (the monitor and a check after a disconnect may race).
    if (!(await this.deps.hosts.transition(row.id, ['lost'], 'terminating', { reason: `lost: ${why}` }))) return;
    this.deps.log(`host ${row.id}: lost (${why}); cleaning up`);
    await this.cleanUp(row, `host lost: ${why}`);
  }

  private async cleanUp(row: HostRow, reason: string, replace?: boolean): Promise<void> {
    this.deps.agents.disconnect(row.id, reason);
    try {
      await this.deps.driver.terminate(row.id, row.driver_data, { replace: replace ?? (row.pool !== null && row.group_name === null) });
    } catch (err) {
      await this.deps.hosts.transition(row.id, ['terminating'], 'failed', { reason: `termination failed: ${errorMessage(err)}` });
      // The driver's own code and hint when they are a server-side one (a missing permission, a throttled or unreachable API): they say what to do.
      const own = isBerthError(err) && err.status >= 500 ? err : undefined;
      const hint = own ? `${own.hint} Then retry \`berth host rm ${row.id}\`.` : 'Retry `berth host rm`; see the server log for what was left.';
      throw new BerthError(own?.code ?? 'internal', `host ${row.id} could not be terminated: ${errorMessage(err)}`, hint, { ...own?.details, hostId: row.id }, { cause: err });
    }
    await this.deps.hosts.transition(row.id, ['terminating'], 'terminated', { terminatedAt: new Date() });
    this.readyWaiters.gone(row.id, reason);
    await this.deps.onHostGone(row.id, `the host was terminated (${reason})`);
  }
}
