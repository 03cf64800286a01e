/** Pools as users manage them: create, change (a new generation when the image or template changes), show, remove. */
import { BerthError } from '../core/errors.js';
import type { ClaimsRepo } from '../store/claims-repo.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { PoolSpec, PoolsRepo } from '../store/pools-repo.js';
import type { PoolRow } from '../store/schema.js';
import { poolNotFound } from './cold-launch.js';
import { checkPoolSizes } from './spec.js';
import type { PoolReconciler } from './reconciler.js';
import { toPoolHostView, toPoolStatusView, type PoolHostView, type PoolStatusView } from './views.js';

export interface PoolServiceDeps {
  pools: PoolsRepo;
  claims: ClaimsRepo;
  hosts: HostsRepo;
  /** What the pool service asks of the reconciler (the server's PoolReconciler). */
  reconciler: Pick<PoolReconciler, 'kick' | 'forget' | 'retire' | 'progressOf'>;
  isConnected: (hostId: string) => boolean;
  /** Checks a pool can run here: its image exists (a name must be built; a path must be a directory), its driver is the server's. */
  checkSpec: (tenantId: string, spec: PoolSpec) => Promise<void>;
  log: (line: string) => void;
  /** A fleet driver's pools: removing one removes its group (and the machines still in it). */
  removeFleetPool?: (name: string) => Promise<void>;
  /** The time pools' schedules are read at (default: now). */
  scheduleClock?: () => Date;
}

export class PoolService {
  constructor(private readonly deps: PoolServiceDeps) {}

  async create(tenantId: string, spec: PoolSpec): Promise<PoolStatusView> {
    await this.deps.checkSpec(tenantId, spec);
    await this.deps.pools.create(tenantId, spec);
    this.deps.reconciler.kick(tenantId, spec.name);
    return this.show(tenantId, spec.name);
  }

  /** Creates or changes a pool (what `berth apply` does); says whether a roll to a new generation began. */
  async apply(tenantId: string, spec: PoolSpec): Promise<{ pool: PoolStatusView; action: 'created' | 'updated' | 'rolled' | 'unchanged' }> {
    await this.deps.checkSpec(tenantId, spec);
    const before = await this.deps.pools.get(tenantId, spec.name);
    let action: 'created' | 'updated' | 'rolled' | 'unchanged';
    if (!before) {
      await this.deps.pools.create(tenantId, spec);
      action = 'created';
    } else if (sameSpec(before, spec)) {
      action = 'unchanged';
    } else {
      const updated = await this.deps.pools.update(tenantId, spec);
      if (!updated) throw poolNotFound(spec.name);
      action = updated.rolled ? 'rolled' : 'updated';
    }
    this.deps.reconciler.kick(tenantId, spec.name);
    return { pool: await this.show(tenantId, spec.name), action };
  }

  /**
   * Changes a pool's numbers only (size, maxSize, maxLaunching): no roll, its ready hosts stay. A
   * size above the pool's maxSize is refused, not met by raising the max someone set. Growing
   * launches at once; shrinking retires the longest-idle ready hosts, never claimed ones.
   */
  async scale(tenantId: string, name: string, change: { size?: number | undefined; maxSize?: number | undefined; maxLaunching?: number | undefined }): Promise<PoolStatusView> {
    const row = await this.deps.pools.get(tenantId, name);
    if (!row) throw poolNotFound(name);
    const spec = { ...specOf(row), ...Object.fromEntries(Object.entries(change).filter(([, v]) => v !== undefined)) };
    checkPoolSizes(name, { size: spec.size, maxSize: spec.maxSize, demandMax: spec.demand?.max, schedule: spec.schedule }, `Raise maxSize with it (berth pool scale ${name} --size ${spec.size} --max ${spec.size + spec.maxLaunching}).`);
    if (!sameSpec(row, spec) && !(await this.deps.pools.update(tenantId, spec))) throw poolNotFound(name);
    this.deps.reconciler.kick(tenantId, name);
    return this.show(tenantId, name);
  }

  /**
   * `withClaimHistory: false` leaves out each pool's claim latency histogram and last claim time
   * (empty and null), which read the pool's whole claim history: the dashboard takes those from the
   * metrics, which add the history up once.
   */
  async list(tenantId: string, opts: { withClaimHistory?: boolean } = {}): Promise<PoolStatusView[]> {
    const rows = await this.deps.pools.list(tenantId);
    return Promise.all(rows.map((row) => this.status(row, opts.withClaimHistory ?? true)));
  }

  async show(tenantId: string, name: string): Promise<PoolStatusView> {
    const row = await this.deps.pools.get(tenantId, name);
    if (!row) throw poolNotFound(name);
    return this.status(row);
  }

  async hosts(tenantId: string, name: string): Promise<PoolHostView[]> {
    if (!(await this.deps.pools.get(tenantId, name))) throw poolNotFound(name);
    const rows = await this.deps.hosts.listPool(tenantId, name);
    return rows.map((r) => toPoolHostView(r, this.deps.isConnected(r.id)));
  }

  /**
   * Removes a pool: its waiting hosts are retired; claimed hosts stay with their groups (they are
   * released one by one). Refused while a claim on it is running.
   */
  async remove(tenantId: string, name: string): Promise<{ retired: number; keptClaimed: number }> {
    const row = await this.deps.pools.get(tenantId, name);
    if (!row) throw poolNotFound(name);
    const hosts = await this.deps.hosts.listPoolMembers(tenantId, name);
    if (hosts.some((h) => h.slot === 'claiming')) {
      throw new BerthError('conflict', `pool ${name} has claims in progress`, 'Retry in a moment, when they have finished.', { pool: name });
    }
    await this.deps.pools.remove(tenantId, name);
    this.deps.reconciler.forget(tenantId, name);
    // The group first: with it go its machines, so the retires below only settle the store.
    if (this.deps.removeFleetPool) await this.deps.removeFleetPool(name);
    let retired = 0;
    for (const host of hosts) {
      if (host.slot === 'ready' || host.slot === 'warming' || host.slot === 'quarantined') {
        this.deps.reconciler.retire(host, [host.slot], `pool ${name} was removed`);
        retired++;
      }
    }
    return { retired, keptClaimed: hosts.filter((h) => h.slot === 'claimed').length };
  }

  private async status(row: PoolRow, withClaimHistory = true): Promise<PoolStatusView> {
    const counts = await this.deps.pools.counts(row.tenant_id, row.name, row.generation);
    const hosts = counts.ready + counts.reconnecting > 0 ? await this.deps.hosts.listPoolMembers(row.tenant_id, row.name) : [];
    const now = Date.now();
    const currentIdleSeconds = hosts.filter((h) => h.slot === 'ready').reduce((sum, h) => sum + (now - new Date(h.slot_since ?? h.created_at).getTime()) / 1000, 0);
    const claimLatency = withClaimHistory ? await this.deps.claims.latencyHistogram(row.tenant_id, row.name) : [];
    const lastClaimAt = withClaimHistory ? await this.deps.claims.lastClaimAt(row.tenant_id, row.name) : null;
    const scheduleAt = this.deps.scheduleClock?.() ?? new Date();
    return toPoolStatusView(row, counts, this.deps.reconciler.progressOf(row.tenant_id, row.name), { currentIdleSeconds, claimLatency, lastClaimAt, scheduleAt });
  }
}

/** The spec a pool row was made from (what PUT would give to keep it as it is). */
function specOf(row: PoolRow): PoolSpec {
  return {
    name: row.name,
    image: row.image,
    template: row.template,
    size: row.size,
    maxSize: row.max_size,
    maxLaunching: row.max_launching,
    maxIdleAgeS: row.max_idle_age_s,
    warmup: row.warmup,
    healthCheck: row.health_check,
    onEmpty: row.on_empty === 'fail' ? 'fail' : 'launch',
    onRelease: row.on_release === 'reuse' ? 'reuse' : 'terminate',
    demand: row.demand,
    schedule: row.schedule,
  };
}

function sameSpec(row: PoolRow, spec: PoolSpec): boolean {
  const { name: _a, ...a } = specOf(row);
  const { name: _b, driver: _driver, ...b } = spec;
  return stable(a) === stable(b);
}

function stable(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([x], [y]) => x.localeCompare(y))) : v,
  );
}
