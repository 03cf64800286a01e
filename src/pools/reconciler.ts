/**
 * Keeps every pool at `size` ready hosts, level-triggered: each pass looks at the pool's hosts as
 * they are and acts on the difference — launch (at most `maxLaunching` at once, within `maxSize`),
 * warm up and health-check new hosts, replace stale ones (old generation or idle past maxIdleAge)
 * only as their replacements become ready, retire quarantined ones, and back off an image that
 * keeps failing. A claim kicks a pass at once; a timer runs one every `intervalMs` anyway.
 */
import { setMaxListeners } from 'node:events';
import { errorMessage } from '../core/errors.js';
import type { Slot } from '../core/pool-state.js';
import type { RegisteredHost } from '../hosts/host-service.js';
import type { HostsRepo, PoolMember } from '../store/hosts-repo.js';
import type { HostRow, PoolRow } from '../store/schema.js';
import { runChecks } from './host-checks.js';
import { PoolTargets } from './targets.js';
import { RollWatch } from './roll-watch.js';
import { FAIL_FAST_AFTER_FAILURES } from './cold-launch.js';
import type { PoolProgress, ReconcilerDeps } from './reconciler-deps.js';
import { checkReady, launchRequest, prepareHost } from './readiness.js';
import { asSystem } from '../events/actor.js';

export type { PoolProgress, ReconcilerDeps } from './reconciler-deps.js';

const poolKey = (tenantId: string, name: string) => `${tenantId}/${name}`;

export class PoolReconciler {
  /** Warm-ups and health checks this process runs, by host id. */
  private readonly busy = new Set<string>();
  /** Hosts whose machine this process is creating or resetting, and retires asked for meanwhile. */
  private readonly booting = new Set<string>();
  private readonly doomed = new Map<string, string>();
  private readonly lastHealth = new Map<string, number>();
  private readonly passes = new Map<string, { running: Promise<void>; again: boolean }>();
  private readonly progress = new Map<string, PoolProgress>();
  private readonly targets: PoolTargets;
  private readonly rolls: RollWatch;
  private readonly background = new Set<Promise<unknown>>();
  private readonly stopping = new AbortController();
  /** Fleet pools: the size and generation this process last gave each pool's group. */
  private readonly ensured = new Map<string, string>();

  constructor(private readonly deps: ReconcilerDeps) {
    // Every warm-up in flight listens to it.
    setMaxListeners(0, this.stopping.signal);
    this.targets = new PoolTargets(deps);
    this.rolls = new RollWatch(deps.events);
  }

  progressOf(tenantId: string, name: string): PoolProgress {
    return this.progress.get(poolKey(tenantId, name)) ?? { notFullReason: 'not reconciled yet' };
  }

  /** Runs a pass for the pool soon; passes of one pool never overlap (a kick during one runs another after). */
  kick(tenantId: string, name: string): void {
    if (this.stopping.signal.aborted) return;
    const key = poolKey(tenantId, name);
    const current = this.passes.get(key);
    if (current) {
      current.again = true;
      return;
    }
    const entry = { running: Promise.resolve(), again: false };
    // The pool's own work, whoever's claim or release kicked it.
    entry.running = asSystem(async () => {
      for (;;) {
        entry.again = false;
        try {
          await this.pass(tenantId, name);
        } catch (err) {
          this.deps.log(`pool ${name}: reconcile pass failed: ${errorMessage(err)}`);
        }
        if (!entry.again || this.stopping.signal.aborted) break;
        // Under a burst of claims every one kicks: one pass per interval sees them all, instead of a
        // pass per claim competing with the claims for the store.
        await new Promise((resolve) => setTimeout(resolve, this.deps.minPassIntervalMs ?? 50));
      }
      this.passes.delete(key);
    });
    this.passes.set(key, entry);
  }

  /** Kicks every pool (the periodic timer). */
  async kickAll(): Promise<void> {
    for (const pool of await this.deps.pools.list()) this.kick(pool.tenant_id, pool.name);
  }

  /** Stops passes and aborts warm-ups (their hosts are retired at the next start); waits up to `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.settled(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }

  /** Waits for running passes and background work (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.passes.size > 0 || this.background.size > 0) {
      await Promise.allSettled([...[...this.passes.values()].map((p) => p.running), ...this.background]);
    }
  }

  /**
   * After a restart: warm-ups that were running are lost with the old process, so their hosts are
   * retired (their state is unknown); ready hosts are kept (their agents reconnect), and their next
   * health check is one interval away, as it was: checked at once, before their agents are back,
   * they would all fail and be replaced.
   */
  async recover(): Promise<number> {
    const now = Date.now();
    for (const host of await this.deps.hosts.listInSlots(['ready'])) this.lastHealth.set(host.id, now);
    const orphans = await this.deps.hosts.listInSlots(['warming', 'quarantined', 'retiring']);
    for (const host of orphans) this.retire(host, [host.slot as Slot], `control plane restarted while the host was ${host.slot ?? 'unknown'}`);
    return orphans.length;
  }

  private async pass(tenantId: string, name: string): Promise<void> {
    const row = await this.deps.pools.get(tenantId, name);
    if (!row) return;
    // A pool sized by its schedule or by demand is, for this pass, a pool of its current target size.
    const { pool, demand: reading } = await this.targets.of(row);
    const rows = await this.deps.hosts.listPoolMembers(tenantId, name);
    const now = Date.now();
    const stale = (h: PoolMember) => h.generation !== pool.generation || (pool.max_idle_age_s !== null && h.slot === 'ready' && now - new Date(h.slot_since ?? h.created_at).getTime() > pool.max_idle_age_s * 1000);
    const warming = rows.filter((h) => h.slot === 'warming');
    const warmingCurrent = warming.filter((h) => !stale(h));
    const ready = rows.filter((h) => h.slot === 'ready' && !stale(h) && h.state === 'running');
    const staleReady = rows.filter((h) => h.slot === 'ready' && stale(h));
    this.rolls.observe(pool, rows);

    for (const h of rows.filter((r) => r.slot === 'quarantined')) this.retire(h, ['quarantined'], 'quarantined');
    // Warming hosts nobody is warming (the process that was is gone) would wait forever. A fleet
    // host is booting from its enrolment until its warm-up starts a moment later.
    const unattended = (r: PoolMember) => !this.busy.has(r.id) && r.state !== 'launching' && !(this.deps.fleet && r.state === 'booting');
    for (const h of warming.filter(unattended)) this.retire(h, ['warming'], 'its warm-up was interrupted');
    // Ready hosts whose machine died are gone already (the host monitor terminates them).
    for (const h of rows.filter((r) => r.slot === 'ready' && r.state !== 'running' && r.state !== 'lost')) this.retire(h, ['ready'], `host is ${h.state}`);
    if (this.deps.fleet) {
      await this.fleetPass(pool, { ready, warming, warmingCurrent, staleReady }, this.deps.fleet);
      this.progress.set(poolKey(tenantId, name), { ...this.progressOf(tenantId, name), target: pool.size, ...(reading ? { demand: reading } : {}) });
      return;
    }

    // Stale hosts cannot be claimed; they are replaced one for one as new ones become ready, so the
    // pool is never torn down before its replacement exists (what Recreate rollouts get wrong).
    let retireStale = Math.max(0, ready.length + staleReady.length - pool.size);
    const need = Math.max(0, pool.size - ready.length - warmingCurrent.length);
    const launchSlots = Math.max(0, pool.max_launching - warming.length);
    let room = pool.max_size - (ready.length + warming.length + staleReady.length - retireStale);
    if (room < Math.min(need, launchSlots)) {
      const extra = Math.min(staleReady.length - retireStale, Math.min(need, launchSlots) - room);
      if (extra > 0) {
        retireStale += extra;
        room += extra;
      }
    }
    // More ready than needed (hosts came back by reuse while refills ran): retire the longest idle.
    const excess = Math.max(0, ready.length - pool.size);
    for (const h of [...ready].sort((a, b) => new Date(a.slot_since ?? a.created_at).getTime() - new Date(b.slot_since ?? b.created_at).getTime()).slice(0, excess)) {
      this.retire(h, ['ready'], reading ? `demand fell: the pool keeps ${pool.size} ready hosts now` : row.schedule ? `the schedule keeps ${pool.size} ready hosts now` : `the pool has more than its ${pool.size} ready hosts`);
    }
    const oldestFirst = [...staleReady].sort((a, b) => new Date(a.created_at).getTime() - new Date(b.created_at).getTime());
    for (const h of oldestFirst.slice(0, retireStale)) {
      this.retire(h, ['ready'], h.generation !== pool.generation ? `replaced: pool generation ${pool.generation} supersedes ${h.generation ?? '?'}` : `idle longer than ${pool.max_idle_age_s} s`);
    }

    const launch = Math.max(0, Math.min(need, launchSlots, room));
    const backoffUntil = this.backoffUntil(pool);
    let notFull = '';
    if (need > 0) {
      if (backoffUntil > now) {
        notFull = `backing off after ${pool.consecutive_failures} failed launch(es): ${pool.last_failure ?? 'unknown'}; next attempt in ${Math.ceil((backoffUntil - now) / 1000)} s${pool.consecutive_failures >= FAIL_FAST_AFTER_FAILURES ? ' (claims that find it empty fail at once meanwhile)' : ''}`;
        setTimeout(() => this.kick(tenantId, name), backoffUntil - now).unref();
      } else {
        for (let i = 0; i < launch; i++) await this.launchOne(pool);
        notFull =
          launch < need
            ? `${warming.length + launch} launching (maxLaunching ${pool.max_launching}${room < need ? `, maxSize ${pool.max_size} reached` : ''})`
            : `${warming.length + launch} launching`;
      }
    } else if (staleReady.length > 0) {
      notFull = `rolling: ${staleReady.length} host(s) of an older generation or idle too long still to replace`;
    }
    this.healthChecks(pool, ready, now);
    this.progress.set(poolKey(tenantId, name), { notFullReason: notFull, target: pool.size, ...(reading ? { demand: reading } : {}) });
  }

  /**
   * A fleet pool: its group keeps `size` machines and replaces what is terminated with
   * replacement, so the pass only gives the group its size and template when they changed (not
   * while backing off an image that keeps failing: failed hosts then leave without replacement),
   * and rolls stale hosts one at a time, each replaced by its group from the new template.
   */
  private async fleetPass(
    pool: PoolRow,
    sets: { ready: PoolMember[]; warming: PoolMember[]; warmingCurrent: PoolMember[]; staleReady: PoolMember[] },
    fleet: NonNullable<ReconcilerDeps['fleet']>,
  ): Promise<void> {
    const key = poolKey(pool.tenant_id, pool.name);
    const now = Date.now();
    const backoffUntil = this.backoffUntil(pool);
    let notFull = '';
    const want = `${pool.size}/${pool.generation}/${fleet.bootVersion?.() ?? ''}`;
    if (backoffUntil > now) {
      notFull = `backing off after ${pool.consecutive_failures} failed host(s): ${pool.last_failure ?? 'unknown'}; the pool's group is refilled in ${Math.ceil((backoffUntil - now) / 1000)} s`;
      setTimeout(() => this.kick(pool.tenant_id, pool.name), backoffUntil - now).unref();
    } else if (this.ensured.get(key) !== want) {
      try {
        await fleet.ensure(pool, this.stopping.signal);
        this.ensured.set(key, want);
      } catch (err) {
        await this.deps.pools.recordFailure(pool.tenant_id, pool.name, `the pool's group: ${errorMessage(err)}`);
        notFull = `the pool's group could not be sized: ${errorMessage(err)}`;
      }
    }
    const { ready, warming, warmingCurrent, staleReady } = sets;
    if (staleReady.length > 0 && warmingCurrent.length === 0 && ready.length + staleReady.length >= pool.size) {
      const oldest = [...staleReady].sort((a, b) => new Date(a.created_at).getTime() - new Date(b.created_at).getTime())[0];
      if (oldest) this.retire(oldest, ['ready'], oldest.generation !== pool.generation ? `replaced: pool generation ${pool.generation} supersedes ${oldest.generation ?? '?'}` : `idle longer than ${pool.max_idle_age_s} s`);
    }
    const missing = Math.max(0, pool.size - ready.length - warming.length);
    if (!notFull && (missing > 0 || warming.length > 0)) notFull = `${warming.length} warming, ${missing} launching in the pool's group`;
    else if (!notFull && staleReady.length > 0) notFull = `rolling: ${staleReady.length} host(s) of an older generation or idle too long still to replace`;
    this.healthChecks(pool, ready, now);
    this.progress.set(key, { ...this.progressOf(pool.tenant_id, pool.name), notFullReason: notFull });
  }

  /**
   * A fleet machine the control plane just admitted as a host of `pool`: warmed up and checked
   * once its agent connects. One that fails leaves without replacement and the pool backs off.
   */
  adoptEnrolled(pool: PoolRow, host: RegisteredHost): void {
    this.busy.add(host.id);
    const boot = async (): Promise<void> => {
      await this.deps.hostService.awaitEnrolled(host.id, host.bootTimeoutMs ?? this.deps.bootTimeoutMs ?? 30_000, this.stopping.signal);
      await checkReady(this.deps, pool, host.id, this.deps.warmupTimeoutS ?? 600, this.stopping.signal);
    };
    this.track(this.makeReady(pool, host.id, boot, true).finally(() => this.busy.delete(host.id)));
  }

  /** The pool is gone: what this process remembers of its group goes too. */
  forget(tenantId: string, name: string): void {
    this.ensured.delete(poolKey(tenantId, name));
    this.targets.forget(tenantId, name);
    this.rolls.forget(tenantId, name);
  }

  /** When the pool may launch again after failed launches (0: at once); claims heed it too. */
  backoffUntil(pool: Pick<PoolRow, 'consecutive_failures' | 'last_failure_at'>): number {
    if (pool.consecutive_failures === 0 || !pool.last_failure_at) return 0;
    const base = this.deps.backoffMs ?? 1000;
    const delay = Math.min(base * 2 ** (pool.consecutive_failures - 1), this.deps.maxBackoffMs ?? 60_000);
    return new Date(pool.last_failure_at).getTime() + delay;
  }

  /** Records a new host (so the next pass counts it) and warms it in the background. */
  private async launchOne(pool: PoolRow): Promise<void> {
    const host = await this.deps.hostService.register(pool.tenant_id, launchRequest(pool), { name: pool.name, generation: pool.generation, slot: 'warming' });
    this.busy.add(host.id);
    this.booting.add(host.id);
    this.track(
      this.makeReady(pool, host.id, () => prepareHost(this.deps, pool, host, this.deps.bootTimeoutMs ?? 30_000, this.deps.warmupTimeoutS ?? 600, this.stopping.signal), false).finally(async () => {
        this.busy.delete(host.id);
        await this.bootEnded(pool.tenant_id, host.id);
      }),
    );
  }

  /** A retire asked for while the host was booting happens now that the boot is over. */
  private async bootEnded(tenantId: string, hostId: string): Promise<void> {
    this.booting.delete(hostId);
    const reason = this.doomed.get(hostId);
    if (reason === undefined) return;
    this.doomed.delete(hostId);
    const row = await this.deps.hosts.get(tenantId, hostId);
    if (row) this.retire(row, ['warming', 'ready'], reason);
  }

  /**
   * Boots a pool host to ready (`boot`: launch or enrolment, warm-up, checks). One that fails is
   * retired and counts as the pool's failure; a fleet pool's leaves without replacement (its group
   * would start another at once) and the group is sized again after the back-off.
   */
  private async makeReady(pool: PoolRow, hostId: string, boot: () => Promise<void>, fleet: boolean): Promise<void> {
    try {
      await boot();
      this.lastHealth.set(hostId, Date.now());
      const moved = await this.deps.hosts.setSlot(hostId, ['warming'], 'ready');
      // A pool removed while this host was registered (after remove() listed its hosts) would leave
      // it running for good, and a new pool of the same name would hand it out: it goes instead.
      const still = moved ? await this.deps.pools.get(pool.tenant_id, pool.name) : undefined;
      if (moved && (!still || new Date(still.created_at).getTime() !== new Date(pool.created_at).getTime())) {
        this.retire(moved.row, ['ready'], `pool ${pool.name} was removed`, { replace: false });
        return;
      }
      if (moved) await this.deps.pools.resetFailures(pool.tenant_id, pool.name);
    } catch (err) {
      if (this.stopping.signal.aborted) return;
      const reason = errorMessage(err);
      this.deps.log(`pool ${pool.name}: host ${hostId} did not become ready: ${reason}`);
      await this.deps.pools.recordFailure(pool.tenant_id, pool.name, `host ${hostId}: ${reason}`);
      if (fleet) this.ensured.delete(poolKey(pool.tenant_id, pool.name));
      const row = await this.deps.hosts.get(pool.tenant_id, hostId);
      if (row) this.retire(row, ['warming'], `not ready: ${reason}`, fleet ? { replace: false } : {});
    }
    this.kick(pool.tenant_id, pool.name);
  }

  private healthChecks(pool: PoolRow, ready: PoolMember[], now: number): void {
    const check = pool.health_check;
    if (!check) return;
    for (const host of ready) {
      if (this.busy.has(host.id) || now - (this.lastHealth.get(host.id) ?? 0) < check.intervalS * 1000) continue;
      this.busy.add(host.id);
      this.lastHealth.set(host.id, now);
      this.track(
        runChecks(this.deps.commands, pool.tenant_id, host.id, 'health check', [check.command], { timeoutS: check.timeoutS })
          .catch(async (err: unknown) => {
            // Claimed meanwhile? Then it is the claim's (which runs the check itself), not ours.
            const moved = await this.deps.hosts.setSlot(host.id, ['ready'], 'quarantined');
            if (moved) {
              await this.deps.pools.addIdleSeconds(pool.tenant_id, pool.name, moved.previous.seconds);
              await this.deps.pools.recordFailure(pool.tenant_id, pool.name, errorMessage(err));
              this.kick(pool.tenant_id, pool.name);
            }
          })
          .finally(() => this.busy.delete(host.id)),
      );
    }
  }

  /**
   * Returns a released host to its pool (release --reuse): it leaves its group at once, then is
   * reset to a fresh host of the pool's current generation, warmed up and checked like a new one.
   * Returns the host as it left the group, or undefined when it was not claimed any more.
   */
  async reuse(pool: PoolRow, host: HostRow): Promise<HostRow | undefined> {
    this.busy.add(host.id);
    let moved: Awaited<ReturnType<HostsRepo['setSlot']>>;
    try {
      const { tags } = launchRequest(pool);
      moved = await this.deps.hosts.setSlot(host.id, ['claimed'], 'warming', { group: null, claimId: null, tags, generation: pool.generation, image: pool.image });
    } catch (err) {
      this.busy.delete(host.id);
      throw err;
    }
    if (!moved) {
      this.busy.delete(host.id);
      return undefined;
    }
    this.booting.add(host.id);
    const work = (async () => {
      const { tags, image, resources } = launchRequest(pool);
      await this.deps.hostService.reset(pool.tenant_id, host.id, { image, tags, resources, standby: true }, { waitMs: this.deps.bootTimeoutMs ?? 30_000, signal: this.stopping.signal });
      await checkReady(this.deps, pool, host.id, this.deps.warmupTimeoutS ?? 600, this.stopping.signal);
      this.lastHealth.set(host.id, Date.now());
      await this.deps.hosts.setSlot(host.id, ['warming'], 'ready');
    })()
      .catch(async (err: unknown) => {
        if (this.stopping.signal.aborted) return;
        this.deps.log(`pool ${pool.name}: reused host ${host.id} did not become ready: ${errorMessage(err)}`);
        const row = await this.deps.hosts.get(pool.tenant_id, host.id);
        if (row) this.retire(row, ['warming'], `reuse failed: ${errorMessage(err)}`);
      })
      .finally(async () => {
        this.busy.delete(host.id);
        await this.bootEnded(pool.tenant_id, host.id);
        this.kick(pool.tenant_id, pool.name);
      });
    this.track(work);
    return moved.row;
  }

  /**
   * Takes a host out of the pool and terminates it, in the background. `replace` (fleet pools):
   * whether its group starts another; by default a host in no claiming group is replaced.
   */
  retire(host: PoolMember, from: readonly Slot[], reason: string, opts: { replace?: boolean } = {}): void {
    // Terminating a host while its machine is still being created or reset could leave the
    // launch's remains behind: it is retired as soon as that ends.
    if (this.booting.has(host.id)) {
      this.doomed.set(host.id, reason);
      return;
    }
    this.track(
      (async () => {
        const moved = from.includes('retiring') && host.slot === 'retiring' ? { row: host, previous: { slot: 'retiring' as Slot, seconds: 0 } } : await this.deps.hosts.setSlot(host.id, from, 'retiring');
        if (!moved) return;
        if (moved.previous.slot === 'ready' && host.pool) await this.deps.pools.addIdleSeconds(host.tenant_id, host.pool, moved.previous.seconds);
        this.lastHealth.delete(host.id);
        await this.deps.hostService.terminate(host.tenant_id, host.id, `retired from pool ${host.pool ?? '?'}: ${reason}`, opts);
        await this.deps.hosts.setSlot(host.id, ['retiring'], 'released');
        if (host.pool) this.kick(host.tenant_id, host.pool);
      })().catch((err: unknown) => this.deps.log(`host ${host.id}: retiring failed: ${errorMessage(err)}`)),
    );
  }

  private track(work: Promise<unknown>): void {
    this.background.add(work);
    void work.finally(() => this.background.delete(work));
  }
}
