/**
 * Claims: hand one ready host of a pool to a group, atomically, initialise it for its user, and
 * answer with a timing breakdown. A claim completes or rolls back: when init or the health check
 * fails, its host is quarantined (never left in the group) and the claim tries another host within
 * its deadline. When no host is ready it launches one (`onEmpty: launch`, counted as a miss;
 * cold-launch.ts) or fails with 503 and Retry-After (`onEmpty: fail`). The refill never runs on the
 * claim's path.
 */
import { claimDeadlineS } from './claim-deadline.js';
import { EventEmitter } from 'node:events';
import { BerthError, errorMessage, isBerthError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { CommandService } from '../commands/command-service.js';
import type { PoolFleet } from '../drivers/types.js';
import type { HostService } from '../hosts/host-service.js';
import type { ClaimsRepo, GroupMate } from '../store/claims-repo.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { ClaimRow, HostRow, PoolRow } from '../store/schema.js';
import { CheckFailed, runChecks } from './host-checks.js';
import { launchForClaim, poolNotFound, quarantine, refillEstimateS } from './cold-launch.js';
import { launchRequest } from './readiness.js';
import type { PoolReconciler } from './reconciler.js';
import type { ClaimInput } from './spec.js';
import { toClaimView, type ClaimView } from './views.js';

export interface ClaimServiceDeps {
  pools: PoolsRepo;
  claims: ClaimsRepo;
  hosts: HostsRepo;
  hostService: HostService;
  commands: CommandService;
  reconciler: PoolReconciler;
  isConnected: (hostId: string) => boolean;
  log: (line: string) => void;
  bootTimeoutMs?: number;
  /**
   * A claim gave the host its user's tags and its group: whatever follows from them (it reaches its
   * group's other hosts, `groupMates`; a stack's services start) happens; awaited.
   */
  onClaimed?: (host: HostRow, groupMates: GroupMate[]) => Promise<void>;
  /** A fleet driver's: a claimed host moves from its pool's group into the claiming group's. */
  fleet?: PoolFleet;
}

type FirstPick = { host: HostRow; idleSeconds: number; ms: number };
type DeadlinedClaim = ClaimInput & { deadline: number };

/** The errors `attempts` throws once it has recorded the claim's failure itself. */
const RECORDED_FAILURES: ReadonlySet<string> = new Set(['pool_empty', 'pool_failing', 'claim_failed']);

/** See the refill in `attempts`. */
const REFILL_DELAY_MS = 50;

/**
 * The longest a claim waits, in all, for a ready host whose agent has not redialled yet (after a
 * server restart). Agents retry at most 2 s apart (agent/connection.ts), and enrolling takes a
 * moment more: a warm host then comes sooner than a cold one with its warm-up would.
 */
const RECONNECT_WAIT_MS = 4000;

interface Attempt {
  hostId: string;
  hit: boolean;
  error: string;
}

export class ClaimService {
  /** Fires `<claimId>` when a claim this process runs ends (for same-key callers that wait). */
  private readonly finished = new EventEmitter();
  private readonly knownGroups = new Set<string>();

  constructor(private readonly deps: ClaimServiceDeps) {
    this.finished.setMaxListeners(0);
  }

  /**
   * `refillAfter`: the pool's refill waits for it (an environment's create, whose services start
   * after the claim: a host launched meanwhile would take the CPU they need). Without it the refill
   * starts when the claim ends, or REFILL_DELAY_MS into a long init.
   */
  async claim(tenantId: string, poolName: string, given: ClaimInput, signal?: AbortSignal, opts: { refillAfter?: Promise<unknown> } = {}): Promise<ClaimView> {
    const input: DeadlinedClaim = { ...given, deadline: claimDeadlineS(given.deadline, this.deps.bootTimeoutMs) };
    const t0 = performance.now();
    const pool = await this.deps.pools.getRecent(tenantId, poolName);
    if (!pool) throw poolNotFound(poolName);
    if (input.idempotencyKey) {
      const existing = await this.existing(tenantId, input.idempotencyKey, poolName, input.group, input.deadline * 1000, signal);
      if (existing) return existing;
    }
    await this.ensureGroup(tenantId, input.group, input.labels);
    const claimId = newId('cl');
    const tPick = performance.now();
    const first = await this.deps.claims.insertAndPick({
      id: claimId,
      tenantId,
      pool: poolName,
      group: input.group,
      idempotencyKey: input.idempotencyKey ?? null,
      request: { init: input.init, env: input.env, tags: input.tags, deadline: input.deadline },
    });
    if (!first.inserted) {
      // Another request with the same key got in first: it is the claim.
      const existing = input.idempotencyKey ? await this.existing(tenantId, input.idempotencyKey, poolName, input.group, input.deadline * 1000, signal) : undefined;
      if (existing) return existing;
      throw new BerthError('conflict', `a claim with idempotency key ${input.idempotencyKey ?? ''} is being replaced`, 'Retry the claim.');
    }
    try {
      return await this.run(pool, claimId, input, t0, signal, first.picked && { ...first.picked, ms: performance.now() - tPick }, opts.refillAfter);
    } finally {
      this.finished.emit(claimId);
    }
  }

  async get(tenantId: string, id: string): Promise<ClaimView> {
    const row = await this.deps.claims.get(tenantId, id);
    if (!row) throw new BerthError('claim_not_found', `claim ${id} does not exist`, 'List claims with `berth claim ls`.');
    return this.view(row);
  }

  async list(tenantId: string, filter: { pool?: string; group?: string; limit?: number }): Promise<ClaimView[]> {
    const rows = await this.deps.claims.list(tenantId, filter);
    return Promise.all(rows.map((r) => this.view(r)));
  }

  /**
   * Gives a claimed host back: it is terminated, or with `reuse` reset to a clean state and returned
   * to its pool (warmed and checked again like a new host).
   */
  async release(tenantId: string, hostId: string, opts: { reuse?: boolean } = {}): Promise<HostRow> {
    const host = await this.deps.hosts.get(tenantId, hostId);
    if (!host || host.state === 'terminated') throw new BerthError('host_not_found', `host ${hostId} does not exist${host ? ' any more' : ''}`, 'List hosts with `berth host ls`.', { hostId });
    if (host.slot !== 'claimed') {
      throw new BerthError('host_not_claimed', `host ${hostId} is not claimed (it is ${host.slot ?? 'not a pool host'})`, 'Release only hosts handed out by `berth claim`; remove others with `berth host rm`.', { hostId });
    }
    if (opts.reuse) {
      const pool = host.pool ? await this.deps.pools.get(tenantId, host.pool) : undefined;
      if (pool && this.deps.hostService.canReset()) {
        const back = await this.deps.reconciler.reuse(pool, host);
        if (!back) throw new BerthError('conflict', `host ${hostId} is being released already`, 'Check it with `berth host ls`.');
        if (host.claim_id) await this.deps.claims.finish(host.claim_id, 'ready', 'released', {});
        return back;
      }
      // Its pool is gone, or hosts cannot be reset here: a plain release is all there is.
    }
    const moved = await this.deps.hosts.setSlot(hostId, ['claimed'], 'retiring');
    if (!moved) throw new BerthError('conflict', `host ${hostId} is being released already`, 'Check it with `berth host ls`.');
    if (host.claim_id) await this.deps.claims.finish(host.claim_id, 'ready', 'released', {});
    await this.deps.hostService.terminate(tenantId, hostId, `released from group ${host.group_name ?? '?'}`);
    const done = await this.deps.hosts.setSlot(hostId, ['retiring'], 'released');
    return done?.row ?? moved.row;
  }

  /**
   * After a restart: claims that were running did not finish, so they fail (the client saw its
   * connection drop; a retry with the same idempotency key starts afresh), and their hosts leave
   * their groups for quarantine — init may have half-run on them. Returns how many claims failed.
   */
  async recover(): Promise<number> {
    const pending = await this.deps.claims.pending();
    for (const claim of pending) {
      await this.deps.claims.finish(claim.id, 'pending', 'failed', { error: { message: 'the control plane restarted during the claim; nothing of it was kept' } });
    }
    for (const host of await this.deps.hosts.listInSlots(['claiming'])) {
      await this.deps.hosts.setSlot(host.id, ['claiming'], 'quarantined', { group: null, claimId: null });
    }
    return pending.length;
  }

  /**
   * Whether an agent of one of the pool's ready hosts connects within `ms`; false at once when none
   * is away (the usual empty pool). Listening starts before the count, so an agent that redials
   * in between is not missed.
   */
  private async agentOfPool(pool: PoolRow, ms: number, signal: AbortSignal): Promise<boolean> {
    if (ms <= 0) return false;
    const wait = this.deps.hostService.agentArrivals.wait((row) => row.tenant_id === pool.tenant_id && row.pool === pool.name && row.slot === 'ready', ms, signal);
    if ((await this.deps.claims.reconnecting(pool.tenant_id, pool.name)) === 0) {
      wait.cancel();
      return false;
    }
    return wait.arrived;
  }

  private async run(pool: PoolRow, claimId: string, input: DeadlinedClaim, t0: number, signal: AbortSignal | undefined, firstPick: FirstPick | undefined, refillAfter: Promise<unknown> | undefined): Promise<ClaimView> {
    const tenantId = pool.tenant_id;
    const deadline = Date.now() + input.deadline * 1000;
    const deadlineSignal = AbortSignal.any([AbortSignal.timeout(input.deadline * 1000), ...(signal ? [signal] : [])]);
    const refill: { timer?: NodeJS.Timeout; held?: boolean } = refillAfter ? { held: true } : {};
    try {
      return await this.attempts(pool, claimId, input, { t0, deadline, signal: deadlineSignal, refill, firstPick });
    } catch (err) {
      // Whatever else ended it (the store failing, a bug): the claim fails rather than stay pending,
      // and a host it held half-claimed goes to quarantine (its init may have half-run), as after a
      // restart. The failures `attempts` recorded itself cost nothing more (an empty pool's 503 is hot).
      if (!(isBerthError(err) && RECORDED_FAILURES.has(err.code))) {
        await this.abandon(claimId, t0, err).catch((e: unknown) => this.deps.log(`claim ${claimId}: cleaning up after it failed: ${errorMessage(e)}`));
      }
      throw err;
    } finally {
      const kick = () => setImmediate(() => this.deps.reconciler.kick(tenantId, pool.name));
      if (refillAfter) void refillAfter.catch(() => undefined).finally(kick);
      else if (refill.timer) {
        clearTimeout(refill.timer);
        kick();
      }
    }
  }

  private async attempts(
    pool: PoolRow,
    claimId: string,
    input: DeadlinedClaim,
    ctx: { t0: number; deadline: number; signal: AbortSignal; refill: { timer?: NodeJS.Timeout; held?: boolean }; firstPick: FirstPick | undefined },
  ): Promise<ClaimView> {
    const { t0, deadline, signal: deadlineSignal } = ctx;
    const tenantId = pool.tenant_id;
    const attempts: Attempt[] = [];
    const script = [...input.init, ...(pool.health_check ? [pool.health_check.command] : [])];
    let reconnectWaitMs = 0;
    let awaitReconnects = true;
    // The deadline signal also aborts when the caller went away: then no other host is tried for nobody.
    while (attempts.length < input.maxAttempts && Date.now() < deadline && !deadlineSignal.aborted) {
      // The first pick was made with the claim's insert; later attempts pick again.
      const tPick = performance.now();
      const picked = attempts.length === 0 && ctx.firstPick ? ctx.firstPick : await this.deps.claims.pickReady(tenantId, pool.name, claimId, input.group);
      let host: HostRow | undefined = picked?.host;
      const hit = host !== undefined;
      const timings: Record<string, number> = { pickMs: attempts.length === 0 && ctx.firstPick ? ctx.firstPick.ms : performance.now() - tPick };
      if (picked) {
        // A spare yields the CPU to serving hosts; from here on it is one (before its init runs).
        this.deps.hostService.serve(picked.host);
        // The pool is one short from now on. The refill starts when this claim ends, or after
        // REFILL_DELAY_MS if its init runs long: a launch right now would take the CPU this claim's
        // init needs (on a small machine it tripled a warm claim's latency).
        if (!ctx.refill.held) ctx.refill.timer ??= setTimeout(() => this.deps.reconciler.kick(tenantId, pool.name), REFILL_DELAY_MS);
      } else {
        // None ready now, but some will be as soon as their agents redial: wait for that first.
        if (awaitReconnects) {
          const tWait = performance.now();
          const came = await this.agentOfPool(pool, Math.min(RECONNECT_WAIT_MS - reconnectWaitMs, deadline - Date.now()), deadlineSignal);
          reconnectWaitMs += performance.now() - tWait;
          if (came) continue;
          // Nothing to wait for (or nobody came in time): the pool is empty, as its policy says.
          awaitReconnects = false;
        }
        if (pool.on_empty === 'fail') {
          await this.fail(claimId, attempts, t0, 'no ready host');
          throw new BerthError('pool_empty', `pool ${pool.name} has no ready host`, 'Retry after the Retry-After delay, raise the pool size, or set onEmpty: launch.', {
            pool: pool.name,
            retryAfterS: await refillEstimateS(this.deps.hosts, pool),
          });
        }
        const tLaunch = performance.now();
        try {
          host = await launchForClaim(this.deps, pool, claimId, input.group, deadline, deadlineSignal);
        } catch (err) {
          if (isBerthError(err) && err.code === 'pool_failing') {
            await this.fail(claimId, attempts, t0, err.message);
            throw err;
          }
          attempts.push({ hostId: '', hit: false, error: `cold launch: ${errorMessage(err)}` });
          continue;
        } finally {
          timings['launchMs'] = performance.now() - tLaunch;
        }
      }
      if (!host) continue;
      if (this.deps.fleet && hit) {
        // The backend's half of the claim (AWS: detach from the pool's group, which launches the
        // replacement, and attach to the user's). The database claim above is the lock: two claims
        // never move one machine.
        const tMove = performance.now();
        try {
          const moved = await this.deps.fleet.moveToGroup(pool.name, input.group, host.driver_data, { signal: deadlineSignal });
          await this.deps.hosts.setDriverData(host.id, moved.driverData);
          host = { ...host, driver_data: moved.driverData };
          timings['backendCalls'] = Object.values(moved.calls).reduce((a, b) => a + b, 0);
        } catch (err) {
          attempts.push({ hostId: host.id, hit, error: `moving it into group ${input.group}: ${errorMessage(err)}` });
          await quarantine(this.deps, host, pool);
          continue;
        } finally {
          timings['moveMs'] = performance.now() - tMove;
        }
      }
      const tags = { ...launchRequest(pool).tags, ...input.tags, 'berth:group': input.group };
      const tInit = performance.now();
      try {
        if (script.length > 0) {
          await runChecks(this.deps.commands, tenantId, host.id, 'init', script, {
            timeoutS: Math.max(1, (deadline - Date.now()) / 1000),
            // The init sees the tags the claim gives (its user's), which the host keeps only once it passed.
            env: { BERTH_TAGS: JSON.stringify(tags), ...input.env },
            signal: deadlineSignal,
          });
        }
      } catch (err) {
        timings['initMs'] = performance.now() - tInit;
        attempts.push({ hostId: host.id, hit, error: errorMessage(err) });
        await quarantine(this.deps, host, pool);
        if (err instanceof CheckFailed || deadlineSignal.aborted) continue;
        throw err;
      }
      timings['initMs'] = performance.now() - tInit;
      if (reconnectWaitMs >= 1) timings['reconnectWaitMs'] = reconnectWaitMs;
      timings['totalMs'] = performance.now() - t0;
      const done = await this.deps.claims.complete({ claimId, tenantId, pool: pool.name, hostId: host.id, tags, hit, attempts: attempts.length + 1, timings: round(timings), durationMs: timings['totalMs'] });
      if (!done) {
        attempts.push({ hostId: host.id, hit, error: 'the host left the claim while it was being initialised' });
        await quarantine(this.deps, host, pool);
        continue;
      }
      // Awaited (its failure only logged): when the claim answers, the host's stack services have
      // been sent for its new tags, so a caller waiting for them (an environment) waits for the
      // right set. A host without a stack costs nothing here.
      await this.deps.onClaimed?.(done.host, done.groupMates).catch((err: unknown) => this.deps.log(`host ${host.id}: after its claim: ${errorMessage(err)}`));
      return toClaimView(done.claim, done.host, this.deps.isConnected(host.id));
    }
    const why = attempts.length > 0 ? attempts.map((a) => a.error).join('; ') : `deadline of ${input.deadline} s passed`;
    await this.fail(claimId, attempts, t0, why);
    throw new BerthError('claim_failed', `claim on pool ${pool.name} failed after ${attempts.length} attempt(s): ${why}`, 'Fix the init commands or the pool (see `berth pool show`); nothing was left in the group.', {
      claimId,
      attempts,
    });
  }

  private async abandon(claimId: string, t0: number, err: unknown): Promise<void> {
    await this.deps.claims.finish(claimId, 'pending', 'failed', { hostId: null, durationMs: performance.now() - t0, error: { message: errorMessage(err) } });
    for (const host of await this.deps.hosts.listInSlots(['claiming'])) {
      if (host.claim_id === claimId) await this.deps.hosts.setSlot(host.id, ['claiming'], 'quarantined', { group: null, claimId: null });
    }
  }

  private async fail(claimId: string, attempts: Attempt[], t0: number, why: string): Promise<void> {
    await this.deps.claims.finish(claimId, 'pending', 'failed', { hostId: null, durationMs: performance.now() - t0, error: { message: why, attempts } });
  }

  private async ensureGroup(tenantId: string, group: string, labels: Record<string, string> | undefined): Promise<void> {
    const key = `${tenantId}/${group}`;
    if (!labels && this.knownGroups.has(key)) return;
    await this.deps.pools.ensureGroup(tenantId, group, labels ?? {});
    this.knownGroups.add(key);
  }

  /**
   * The claim a key already names: finished, or awaited while it runs (as long as this request's own
   * deadline, or until its caller leaves). Failed ones free their key.
   */
  private async existing(tenantId: string, key: string, poolName: string, group: string, waitMs: number, signal: AbortSignal | undefined): Promise<ClaimView | undefined> {
    let row = await this.deps.claims.byIdempotencyKey(tenantId, key);
    if (!row) return undefined;
    if (row.pool !== poolName) {
      throw new BerthError('conflict', `idempotency key ${key} was used for a claim on pool ${row.pool}`, 'Use a new key for a different request.', { claimId: row.id });
    }
    // Another group's claim is another request: its host is not this caller's to get.
    if (row.group_name !== group) {
      throw new BerthError('conflict', `idempotency key ${key} was used for a claim for another group`, 'Use a new key for a different request.', { claimId: row.id });
    }
    if (row.state === 'pending') {
      const id = row.id;
      await new Promise<void>((resolve) => {
        const end = () => {
          clearTimeout(timer);
          this.finished.off(id, end);
          signal?.removeEventListener('abort', end);
          resolve();
        };
        const timer = setTimeout(end, waitMs);
        this.finished.once(id, end);
        if (signal?.aborted) end();
        else signal?.addEventListener('abort', end, { once: true });
        // It may have ended between the read above and the listening.
        void this.deps.claims.get(tenantId, id).then((r) => r?.state !== 'pending' && end(), () => undefined);
      });
      row = (await this.deps.claims.get(tenantId, id)) ?? row;
      if (row.state === 'pending') {
        throw new BerthError('conflict', `the claim with idempotency key ${key} (${id}) is still running`, 'Retry with the same key once it has finished (`berth claim ls` shows it).', { claimId: id });
      }
    }
    if (row.state === 'failed') {
      await this.deps.claims.forgetKey(row.id);
      return undefined;
    }
    return this.view(row);
  }

  private async view(row: ClaimRow): Promise<ClaimView> {
    const host = row.host_id ? await this.deps.hosts.get(row.tenant_id, row.host_id) : undefined;
    return toClaimView(row, host, host ? this.deps.isConnected(host.id) : false);
  }
}


function round(timings: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v * 100) / 100]));
}

