/** Pools and groups. Pool counters are updated in place (one statement each, no read-modify-write). */
import { sql, type Kysely } from 'kysely';
import { BerthError } from '../core/errors.js';
import type { Database, GroupRow, HealthCheck, PoolDemand, PoolRow, PoolSchedule, PoolTemplate } from './schema.js';
import { poolEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';

export interface PoolSpec {
  name: string;
  /** The driver the pool needs, when it says (checked against the server's; not stored). */
  driver?: string;
  image: string;
  template: PoolTemplate;
  size: number;
  maxSize: number;
  maxLaunching: number;
  maxIdleAgeS: number | null;
  warmup: string[];
  healthCheck: HealthCheck | null;
  onEmpty: 'launch' | 'fail';
  /** What releasing a claimed host does: terminate it, or reset it and return it to the pool. */
  onRelease: 'terminate' | 'reuse';
  /** Sized by demand between `size` and `demand.max` ready hosts; null: always `size`. */
  demand: PoolDemand | null;
  /** Sizes by the clock: the first rule that holds gives the size, else `size`; null: always `size`. */
  schedule: PoolSchedule | null;
}

/** Host counts of one pool by slot; `stale` counts hosts of an older generation (any slot). */
export interface PoolCounts {
  warming: number;
  /** Waiting hosts whose agent is connected: what a claim can take now. */
  ready: number;
  /** Waiting hosts whose agent is not connected (yet): after a server restart, until agents redial. */
  reconnecting: number;
  claiming: number;
  claimed: number;
  quarantined: number;
  retiring: number;
  stale: number;
  staleReady: number;
}

/** Whether a host's agent is connected and it runs: the claim's pick asks the same (claims-repo.ts). */
const CONNECTED = sql<boolean>`(state = 'running' and agent_connected)`;

export class PoolsRepo {
  /** Recently read pools, for the claim path (see getRecent). */
  private readonly recent = new Map<string, { row: PoolRow; at: number }>();
  /** Per pool, how many times it was forgotten: a read that started before a change is not cached after it. */
  private readonly changes = new Map<string, number>();

  /** `events`: pools created, changed and removed are reported there. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly events: EventSink = NO_EVENTS,
  ) {}

  /**
   * A pool as read at most `maxAgeMs` ago. For the claim path, which reads the pool on every claim:
   * changes made through this process are seen at once (they drop the entry), changes made by
   * another server within `maxAgeMs`. The pick itself checks the generation in the store, and a
   * miss launches from the pool read afresh, so a stale entry never hands out a host of an old one.
   */
  async getRecent(tenantId: string, name: string, maxAgeMs = 1000): Promise<PoolRow | undefined> {
    const key = `${tenantId}/${name}`;
    const hit = this.recent.get(key);
    if (hit && Date.now() - hit.at < maxAgeMs) return hit.row;
    const changes = this.changes.get(key) ?? 0;
    const row = await this.get(tenantId, name);
    // Changed while it was read: the row may be from before, and must not outlive the change here.
    if ((this.changes.get(key) ?? 0) !== changes) return row;
    if (row) this.recent.set(key, { row, at: Date.now() });
    else this.recent.delete(key);
    return row;
  }

  /** Drops a cached pool once a change is committed: this repo's own, or one made outside it (an image rolled it). */
  forget(tenantId: string, name: string): void {
    const key = `${tenantId}/${name}`;
    this.recent.delete(key);
    this.changes.set(key, (this.changes.get(key) ?? 0) + 1);
  }

  async create(tenantId: string, spec: PoolSpec): Promise<PoolRow> {
    const row = await this.db
      .insertInto('pools')
      .values({ tenant_id: tenantId, ...columns(spec) })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
    if (!row) throw new BerthError('pool_exists', `pool ${spec.name} already exists`, 'Change it with `berth apply -f berth.yaml`, or remove it first with `berth pool rm`.', { pool: spec.name });
    this.events.emit(poolEvent(tenantId, spec.name, 'created'));
    return row;
  }

  /**
   * Replaces a pool's spec. A change of image or template starts a new generation: from that moment
   * no host of an older one is handed to a claim.
   */
  async update(tenantId: string, spec: PoolSpec): Promise<{ row: PoolRow; rolled: boolean } | undefined> {
    const updated = await this.db.transaction().execute(async (tx) => {
      const old = await tx.selectFrom('pools').selectAll().where('tenant_id', '=', tenantId).where('name', '=', spec.name).forUpdate().executeTakeFirst();
      if (!old) return undefined;
      const rolled = old.image !== spec.image || JSON.stringify(sortKeys(old.template)) !== JSON.stringify(sortKeys(spec.template));
      const row = await tx
        .updateTable('pools')
        .set({ ...columns(spec), updated_at: new Date(), ...(rolled ? { generation: old.generation + 1 } : {}) })
        .where('tenant_id', '=', tenantId)
        .where('name', '=', spec.name)
        .returningAll()
        .executeTakeFirstOrThrow();
      return { row, rolled };
    });
    // Once committed: a claim that read the pool before or meanwhile had the old row.
    this.forget(tenantId, spec.name);
    if (updated) this.events.emit(poolEvent(tenantId, spec.name, updated.rolled ? 'rolled' : 'updated'));
    return updated;
  }

  async get(tenantId: string, name: string): Promise<PoolRow | undefined> {
    return this.db.selectFrom('pools').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
  }

  async list(tenantId?: string): Promise<PoolRow[]> {
    let q = this.db.selectFrom('pools').selectAll();
    if (tenantId) q = q.where('tenant_id', '=', tenantId);
    return q.orderBy('tenant_id').orderBy('name').execute();
  }

  async remove(tenantId: string, name: string): Promise<boolean> {
    const result = await this.db.deleteFrom('pools').where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
    this.forget(tenantId, name);
    if (result.numDeletedRows > 0n) this.events.emit(poolEvent(tenantId, name, 'removed'));
    return result.numDeletedRows > 0n;
  }

  async counts(tenantId: string, name: string, generation: number): Promise<PoolCounts> {
    const rows = await this.db
      .selectFrom('hosts')
      .select(['slot', 'generation', CONNECTED.as('connected'), sql<number>`count(*)::int`.as('n')])
      .where('tenant_id', '=', tenantId)
      .where('pool', '=', name)
      .where('state', 'not in', ['terminated', 'failed'])
      .where('slot', 'is not', null)
      .groupBy(['slot', 'generation', CONNECTED])
      .execute();
    const counts: PoolCounts = { warming: 0, ready: 0, reconnecting: 0, claiming: 0, claimed: 0, quarantined: 0, retiring: 0, stale: 0, staleReady: 0 };
    for (const r of rows) {
      const n = Number(r.n);
      const slot = (r.slot === 'ready' && !r.connected ? 'reconnecting' : r.slot) as keyof PoolCounts;
      const current = r.generation === generation;
      // Claimed hosts belong to their groups whatever their generation; retiring and quarantined
      // ones are on their way out either way. Only waiting hosts of an old generation are stale.
      if (current || slot === 'claimed' || slot === 'claiming' || slot === 'retiring' || slot === 'quarantined') {
        if (slot in counts) counts[slot] += n;
      } else {
        counts.stale += n;
        if (r.slot === 'ready') counts.staleReady += n;
      }
    }
    return counts;
  }

  async recordFailure(tenantId: string, name: string, reason: string): Promise<void> {
    await this.db
      .updateTable('pools')
      .set({ consecutive_failures: sql`consecutive_failures + 1`, last_failure: reason, last_failure_at: new Date() })
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .execute();
  }

  async resetFailures(tenantId: string, name: string): Promise<void> {
    await this.db.updateTable('pools').set({ consecutive_failures: 0 }).where('tenant_id', '=', tenantId).where('name', '=', name).where('consecutive_failures', '>', 0).execute();
  }

  async addIdleSeconds(tenantId: string, name: string, seconds: number): Promise<void> {
    if (seconds <= 0) return;
    await this.db
      .updateTable('pools')
      .set({ idle_host_seconds: sql`idle_host_seconds + ${seconds}` })
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .execute();
  }

  /** Creates the group on first use; labels given later are merged in. */
  async ensureGroup(tenantId: string, name: string, labels: Record<string, string> = {}): Promise<void> {
    await this.db
      .insertInto('groups')
      .values({ tenant_id: tenantId, name, labels: JSON.stringify(labels) })
      .onConflict((oc) => (Object.keys(labels).length > 0 ? oc.columns(['tenant_id', 'name']).doUpdateSet({ labels: sql`groups.labels || excluded.labels` }) : oc.doNothing()))
      .execute();
  }

  async groups(tenantId: string): Promise<GroupRow[]> {
    return this.db.selectFrom('groups').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
  }

  async group(tenantId: string, name: string): Promise<GroupRow | undefined> {
    return this.db.selectFrom('groups').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
  }
}

function columns(spec: PoolSpec) {
  return {
    name: spec.name,
    image: spec.image,
    template: JSON.stringify(spec.template),
    size: spec.size,
    max_size: spec.maxSize,
    max_launching: spec.maxLaunching,
    max_idle_age_s: spec.maxIdleAgeS,
    warmup: JSON.stringify(spec.warmup),
    health_check: JSON.stringify(spec.healthCheck),
    on_empty: spec.onEmpty,
    on_release: spec.onRelease,
    demand: JSON.stringify(spec.demand),
    schedule: JSON.stringify(spec.schedule),
  };
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, sortKeys(v)]));
  }
  return value;
}
