/**
 * Environments heal: a host of a ready environment that is gone — lost (its machine stopped or its
 * init died, as the host monitor finds), failed, or terminated by someone — is replaced, as an Auto
 * Scaling group replaces an unhealthy instance and a ReplicaSet a deleted pod. Nobody has to notice
 * that a review app stopped answering and recreate it.
 *
 * - `review` mode, in place: the environment is `healing`; a new host is claimed for each one lost,
 *   as a create claims them (its services started, ready, answering over the network), and the route
 *   gets them; the others are not touched. The lost hosts leave the environment's record (the host
 *   service cleans their machines up, as for any lost host).
 * - `service` mode, in place too when no other host is told the lost hosts' services' addresses (a
 *   worker, the web front; service-hosts.ts): a new host for each lost one, routed and load balanced
 *   with the others, the lost ones out of their load balancers. Otherwise by a deploy of its ref: the
 *   hosts above the lost one's service are told where it answers, so their configuration changes.
 * - Its timings (claim, services, ready, route) are the environment's, as a create's, with
 *   `operation: heal` (`env show`, /metrics).
 * - A replacement that fails (an empty pool with `onEmpty: fail`, a service that does not start)
 *   gives back what it claimed, leaves the environment `ready` with the reason, and is tried again
 *   later: after 10 s, then twice as long each time, up to 5 minutes.
 *
 * Found by the environments' sweep (every 5 s), and at once when a host of a group leaves for good
 * (`soon`, from the server's events), with one statement (EnvironmentsRepo.lostHosts). A
 * heal cut short by a server restart is undone like a scale (recovery.ts) and done again by the
 * next sweep, as the lost hosts are still in the record until a heal finishes.
 */
import { errorMessage } from '../core/errors.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import { roundTimings, type PlacementDeps } from './placement.js';
import { joinReviewHosts } from './scale.js';
import { addServiceHosts, changesInPlace, detachHosts, type ServiceHostsDeps } from './service-hosts.js';
import type { EnvironmentStack } from './slug-stack.js';

type LostHost = Awaited<ReturnType<EnvironmentsRepo['lostHosts']>>[number];

export interface HealDeps extends ServiceHostsDeps {
  envs: Pick<EnvironmentsRepo, 'lostHosts' | 'get' | 'transition' | 'setHosts'>;
  placement: PlacementDeps;
  stackOf(row: EnvironmentRow): Promise<EnvironmentStack>;
  /** A service-mode environment on new hosts: a deploy of its ref, `why` in its reason. */
  redeploy(row: EnvironmentRow, why: string): Promise<unknown>;
  log: (line: string) => void;
  /** The first wait after a failed replacement, ms (doubling up to 30 times it); default 10 s. */
  retryMs?: number;
  /** Seconds a replacement's services get to be ready; default 120. */
  waitS?: number;
}

export class EnvironmentHealer {
  private readonly healing = new Map<string, Promise<void>>();
  private readonly retry = new Map<string, { at: number; waitMs: number }>();
  private soonTimer: NodeJS.Timeout | undefined;
  /** Once stopped, hosts that go (the server stopping, `berth down`) are not replaced. */
  private stopped = false;

  constructor(private readonly deps: HealDeps) {}

  /** A sweep in a moment: one for every host that went at about the same time (a machine's hosts die together). */
  soon(): void {
    if (this.soonTimer || this.stopped) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      void this.sweep().catch((err: unknown) => this.deps.log(`environments: healing: ${errorMessage(err)}`));
    }, 20);
    this.soonTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.soonTimer) clearTimeout(this.soonTimer);
  }

  /** Starts replacing the lost hosts of every ready environment not waiting to retry; resolves once those heals are over. */
  async sweep(now = Date.now()): Promise<string[]> {
    const byEnv = new Map<string, LostHost[]>();
    for (const lost of await this.deps.envs.lostHosts()) {
      const key = `${lost.tenantId}/${lost.name}`;
      byEnv.set(key, [...(byEnv.get(key) ?? []), lost]);
    }
    // An environment healed meanwhile by a deploy, or removed, waits for nothing any more.
    for (const key of this.retry.keys()) if (!byEnv.has(key)) this.retry.delete(key);
    const started: string[] = [];
    for (const [key, lost] of byEnv) {
      if (this.healing.has(key) || (this.retry.get(key)?.at ?? 0) > now) continue;
      const first = lost[0];
      if (!first) continue;
      const heal = this.heal(first.tenantId, first.name, lost)
        .catch((err: unknown) => this.deps.log(`environment ${first.name}: healing: ${errorMessage(err)}`))
        .finally(() => this.healing.delete(key));
      this.healing.set(key, heal);
      started.push(first.name);
    }
    await Promise.all([...this.healing.values()]);
    return started;
  }

  private async heal(tenantId: string, name: string, lost: LostHost[]): Promise<void> {
    const row = await this.deps.envs.get(tenantId, name);
    if (row?.state !== 'ready') return;
    const gone = row.hosts.filter((h) => lost.some((l) => l.hostId === h.hostId));
    if (gone.length === 0) return;
    const what = gone.map((h) => `${h.hostId}${h.service ? ` (${h.service})` : ''}`).join(', ');
    const why = lost.map((l) => `${l.hostId} ${l.state ?? 'is gone'}${l.reason ? `: ${l.reason}` : ''}`).join('; ');
    const key = `${tenantId}/${name}`;
    try {
      if (row.mode !== 'service') await this.replaceInPlace(row, gone, what, why);
      else {
        const stack = await this.deps.stackOf(row);
        if (changesInPlace(stack.spec, gone.map((h) => h.service ?? ''))) await this.replaceServicesInPlace(row, stack, gone, what, why);
        else await this.deps.redeploy(row, `replacing lost ${what}`);
      }
      this.retry.delete(key);
      this.deps.log(`environment ${name}: replaced lost ${what} (${why})`);
    } catch (err) {
      const waitMs = Math.min((this.retry.get(key)?.waitMs ?? (this.deps.retryMs ?? 10_000) / 2) * 2, (this.deps.retryMs ?? 10_000) * 30);
      this.retry.set(key, { at: Date.now() + waitMs, waitMs });
      this.deps.log(`environment ${name}: could not replace lost ${what}: ${errorMessage(err)}; trying again in ${Math.round(waitMs / 1000)} s`);
    }
  }

  /** Service mode in place: a new host of its service for each lost one, the others untouched. */
  private async replaceServicesInPlace(row: EnvironmentRow, stack: EnvironmentStack, gone: EnvHostRecord[], what: string, why: string): Promise<void> {
    const { tenant_id: tenantId, name } = row;
    const t0 = performance.now();
    const started = await this.deps.envs.transition(tenantId, name, ['ready'], 'healing', { reason: `replacing ${what} (${why})` });
    if (!started) return; // another operation came first; the next sweep looks again
    const routedGeneration = started.route?.generation ?? Math.max(0, ...started.hosts.map((h) => h.generation));
    const routed = started.hosts.filter((h) => h.generation === routedGeneration);
    const kept = routed.filter((h) => !gone.some((g) => g.hostId === h.hostId));
    const counts: Record<string, number> = {};
    for (const h of gone) if (h.service !== null) counts[h.service] = (counts[h.service] ?? 0) + 1;
    let placed: EnvHostRecord[] = [];
    try {
      const deadline = Date.now() + (this.deps.waitS ?? 120) * 1000;
      const added = await addServiceHosts(this.deps, started, stack, { routed, kept, counts, generation: routedGeneration, deadline, why: `environment ${name}: replacing ${what} failed` });
      placed = added.hosts;
      // A lost instance may still be registered with its service's load balancer.
      await detachHosts(this.deps, started, stack, gone, `environment ${name}: replaced ${what}`);
      const timings = roundTimings({ ...added.timings, totalMs: performance.now() - t0 });
      const done = await this.deps.envs.transition(tenantId, name, ['healing'], 'ready', { hosts: [...kept, ...added.hosts], reason: `replaced ${what} (${why}) with ${added.hosts.map((h) => h.hostId).join(', ')}`, timings, operation: 'heal' });
      if (!done) throw new Error('it changed while it healed');
    } catch (err) {
      // Placed but not recorded (addServiceHosts gives back what it placed when it fails itself): the
      // route back on the hosts it had, and those given back, never reused (they may be load balanced).
      if (placed.length > 0) {
        await this.deps.routes.restore(started, { ...stack.target, generation: routedGeneration }).catch(() => undefined);
        await this.deps.hostRelease.releaseAll(tenantId, started.pool, placed, `environment ${name}: replacing ${what} failed`, placed);
      }
      await this.deps.envs.transition(tenantId, name, ['healing'], 'ready', { hosts: routed, reason: `could not replace ${what} (${why}): ${errorMessage(err)}` });
      throw err;
    }
  }

  /** Review hosts: new ones for the lost, the others untouched. */
  private async replaceInPlace(row: EnvironmentRow, gone: EnvHostRecord[], what: string, why: string): Promise<void> {
    const { tenant_id: tenantId, name } = row;
    const t0 = performance.now();
    const { spec, target, init } = await this.deps.stackOf(row);
    const started = await this.deps.envs.transition(tenantId, name, ['ready'], 'healing', { reason: `replacing ${what} (${why})` });
    if (!started) return; // another operation came first; the next sweep looks again
    const routedGeneration = started.route?.generation ?? Math.max(0, ...started.hosts.map((h) => h.generation));
    const routed = started.hosts.filter((h) => h.generation === routedGeneration);
    const kept = routed.filter((h) => !gone.some((g) => g.hostId === h.hostId));
    const joining: EnvHostRecord[] = [];
    try {
      const deadline = Date.now() + (this.deps.waitS ?? 120) * 1000;
      const joined = await joinReviewHosts(this.deps, started, { spec, target, init }, { count: gone.length, generation: routedGeneration, routed, kept, joining, deadline });
      const timings = roundTimings({ ...joined.timings, totalMs: performance.now() - t0 });
      const done = await this.deps.envs.transition(tenantId, name, ['healing'], 'ready', { hosts: joined.hosts, reason: `replaced ${what} (${why}) with ${joined.added.join(', ')}`, timings, operation: 'heal' });
      if (!done) throw new Error('it changed while it healed');
    } catch (err) {
      await this.deps.hostRelease.releaseAll(tenantId, started.pool, joining, `environment ${name}: replacing ${what} failed`);
      await this.deps.envs.transition(tenantId, name, ['healing'], 'ready', { hosts: routed, reason: `could not replace ${what} (${why}): ${errorMessage(err)}` });
      throw err;
    }
  }
}
