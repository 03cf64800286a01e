/** Host rows: every query is scoped to a tenant. */
import { sql, type Kysely } from 'kysely';
import { assertTransition, LIVE_HOST_STATES, type HostState } from '../core/host-state.js';
import { assertSlotTransition, type Slot } from '../core/pool-state.js';
import type { Database, HostRow } from './schema.js';
import { hostEvent, slotEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';

export interface NewHost {
  id: string;
  tenantId: string;
  driver: string;
  image: string;
  /** The image build the host boots from; null for a plain root filesystem. */
  imageId?: string | null;
  hostname: string;
  tags: Record<string, string>;
  resources: Record<string, number | number[] | boolean | string[]>;
  agentTokenHash: string;
  /** For a pool's host: its pool, the pool's generation at launch, and its first slot. */
  pool?: { name: string; generation: number; slot: Slot; group?: string; claimId?: string };
}

export type PoolMember = Pick<HostRow, 'id' | 'tenant_id' | 'pool' | 'generation' | 'slot' | 'slot_since' | 'state' | 'created_at'>;

export interface SlotFields {
  generation?: number;
  image?: string;
  group?: string | null;
  claimId?: string | null;
  tags?: Record<string, string>;
}

/** What `listSummaries` reads of each host. */
export type HostSummaryRow = Pick<HostRow, 'id' | 'state' | 'state_reason' | 'image' | 'ip' | 'pool' | 'group_name' | 'agent_last_seen' | 'created_at'>;

export class HostsRepo {
  /** `events`: every change of a host's state or slot made here is reported there. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly events: EventSink = NO_EVENTS,
  ) {}

  async insert(host: NewHost): Promise<HostRow> {
    const row = await this.db
      .insertInto('hosts')
      .values({
        id: host.id,
        tenant_id: host.tenantId,
        driver: host.driver,
        state: 'launching',
        image: host.image,
        image_id: host.imageId ?? null,
        hostname: host.hostname,
        tags: JSON.stringify(host.tags),
        resources: JSON.stringify(host.resources),
        driver_data: '{}',
        agent_token_hash: host.agentTokenHash,
        ...(host.pool
          ? {
              pool: host.pool.name,
              generation: host.pool.generation,
              slot: host.pool.slot,
              slot_since: new Date(),
              group_name: host.pool.group ?? null,
              claim_id: host.pool.claimId ?? null,
            }
          : {}),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    this.events.emit(hostEvent(row));
    if (row.pool) this.events.emit(slotEvent(row));
    return row;
  }

  async get(tenantId: string, id: string): Promise<HostRow | undefined> {
    return this.db.selectFrom('hosts').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  }

  /** The group of each of these hosts (null: none); hosts not found are left out. */
  async groupsOf(tenantId: string, ids: readonly string[]): Promise<Map<string, string | null>> {
    if (ids.length === 0) return new Map();
    const rows = await this.db.selectFrom('hosts').select(['id', 'group_name']).where('tenant_id', '=', tenantId).where('id', 'in', ids).execute();
    return new Map(rows.map((r) => [r.id, r.group_name]));
  }

  /** For agent enrolment, which knows only the host id (the token proves the rest). */
  async getAnyTenant(id: string): Promise<HostRow | undefined> {
    return this.db.selectFrom('hosts').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async list(tenantId: string, opts: { states?: readonly HostState[]; tags?: Record<string, string>; group?: string } = {}): Promise<HostRow[]> {
    let q = this.db.selectFrom('hosts').selectAll().where('tenant_id', '=', tenantId);
    // A group's hosts are those it holds: not one still being initialised for a claim.
    if (opts.group !== undefined) q = q.where('group_name', '=', opts.group).where('slot', '=', 'claimed');
    if (opts.states) q = q.where('state', 'in', [...opts.states]);
    if (opts.tags && Object.keys(opts.tags).length > 0) q = q.where(sql<boolean>`tags @> ${JSON.stringify(opts.tags)}::jsonb`);
    return q.orderBy('created_at').orderBy('id').execute();
  }

  /** A group's running hosts, as the driver needs them to let them reach each other (see NetworkGroups). */
  async groupMembers(tenantId: string, group: string): Promise<Pick<HostRow, 'id' | 'driver_data' | 'hostname' | 'tags'>[]> {
    return this.db
      .selectFrom('hosts')
      .select(['id', 'driver_data', 'hostname', 'tags'])
      .where('tenant_id', '=', tenantId)
      .where('group_name', '=', group)
      .where('slot', '=', 'claimed')
      .where('state', '=', 'running')
      .execute();
  }

  /** The columns a host listing shows (the dashboard's table), for the hosts that are live or failed: a third of the cost of whole rows. */
  async listSummaries(tenantId: string, states: readonly HostState[]): Promise<HostSummaryRow[]> {
    return this.db
      .selectFrom('hosts')
      .select(['id', 'state', 'state_reason', 'image', 'ip', 'pool', 'group_name', 'agent_last_seen', 'created_at'])
      .where('tenant_id', '=', tenantId)
      .where('state', 'in', [...states])
      .orderBy('created_at')
      .orderBy('id')
      .execute();
  }

  async listInStates(states: readonly HostState[]): Promise<HostRow[]> {
    return this.db.selectFrom('hosts').selectAll().where('state', 'in', [...states]).execute();
  }

  /**
   * Moves a host to `to` only if it is still in one of `from` (compare-and-set), so two actors racing
   * on one host cannot both win. Returns the updated row, or undefined when the host was elsewhere.
   */
  async transition(
    id: string,
    from: readonly HostState[],
    to: HostState,
    fields: { reason?: string; ip?: string; driverData?: Record<string, unknown>; readyAt?: Date; terminatedAt?: Date } = {},
  ): Promise<HostRow | undefined> {
    for (const state of from) assertTransition(id, state, to);
    const row = await this.db
      .updateTable('hosts')
      .set({
        state: to,
        updated_at: new Date(),
        ...(fields.reason !== undefined ? { state_reason: fields.reason } : {}),
        ...(fields.ip !== undefined ? { ip: fields.ip } : {}),
        ...(fields.driverData !== undefined ? { driver_data: JSON.stringify(fields.driverData) } : {}),
        ...(fields.readyAt !== undefined ? { ready_at: fields.readyAt } : {}),
        ...(fields.terminatedAt !== undefined ? { terminated_at: fields.terminatedAt } : {}),
      })
      .where('id', '=', id)
      .where('state', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
    if (row) this.events.emit(hostEvent(row, from, fields.reason));
    return row;
  }

  /**
   * Moves a pool host from one of `from` to slot `to` (compare-and-set, like transition). Returns the
   * updated row with how long it had been in its previous slot, or undefined when it was elsewhere.
   */
  async setSlot(id: string, from: readonly Slot[], to: Slot, fields: SlotFields = {}): Promise<{ row: HostRow; previous: { slot: Slot; seconds: number } } | undefined> {
    for (const slot of from) assertSlotTransition(id, slot, to);
    const result = await sql<HostRow & { prev_slot: Slot; prev_s: number }>`
      with prev as (select id, slot, slot_since from hosts where id = ${id} and slot in (${sql.join([...from])}) for update)
      update hosts set
        slot = ${to}, slot_since = now(), updated_at = now()
        ${to === 'ready' ? sql`, pool_ready_at = coalesce(hosts.pool_ready_at, now())` : sql``}
        ${fields.group !== undefined ? sql`, group_name = ${fields.group}` : sql``}
        ${fields.generation !== undefined ? sql`, generation = ${fields.generation}` : sql``}
        ${fields.image !== undefined ? sql`, image = ${fields.image}` : sql``}
        ${fields.claimId !== undefined ? sql`, claim_id = ${fields.claimId}` : sql``}
        ${fields.tags !== undefined ? sql`, tags = ${JSON.stringify(fields.tags)}::jsonb` : sql``}
      from prev where hosts.id = prev.id
      returning hosts.*, prev.slot as prev_slot, extract(epoch from now() - prev.slot_since)::float8 as prev_s`.execute(this.db);
    const row = result.rows[0];
    if (!row) return undefined;
    const { prev_slot, prev_s, ...host } = row;
    this.events.emit(slotEvent(host, prev_slot));
    return { row: host, previous: { slot: prev_slot, seconds: Number(prev_s) } };
  }

  /** Every host of a pool that is not gone yet (any slot, any generation). */
  async listPool(tenantId: string, pool: string): Promise<HostRow[]> {
    return this.db
      .selectFrom('hosts')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('pool', '=', pool)
      .where('state', 'not in', ['terminated', 'failed'])
      .orderBy('created_at')
      .orderBy('id')
      .execute();
  }

  /**
   * How long the pool's hosts took from launch to first ready: the median of its last 20, in
   * seconds, or undefined when none ever was (a refill's lead time; see pools/demand.ts).
   */
  async medianLeadTimeS(tenantId: string, pool: string): Promise<number | undefined> {
    const row = await sql<{ s: number | null }>`
      select percentile_cont(0.5) within group (order by secs) as s from (
        select extract(epoch from pool_ready_at - created_at)::float8 as secs from hosts
        where tenant_id = ${tenantId} and pool = ${pool} and pool_ready_at is not null
        order by pool_ready_at desc limit 20
      ) as recent`.execute(this.db);
    const s = row.rows[0]?.s;
    return s === null || s === undefined ? undefined : Number(s);
  }

  /**
   * The few columns the reconciler needs of every live host of a pool: it reads them on every pass,
   * and whole rows (tags, resources, driver data) made those passes the store's biggest cost.
   */
  async listPoolMembers(tenantId: string, pool: string): Promise<PoolMember[]> {
    return this.db
      .selectFrom('hosts')
      .select(['id', 'tenant_id', 'pool', 'generation', 'slot', 'slot_since', 'state', 'created_at'])
      .where('tenant_id', '=', tenantId)
      .where('pool', '=', pool)
      .where('state', 'not in', ['terminated', 'failed'])
      .execute();
  }

  /** Live pool hosts of every tenant in the given slots (the reconciler's and recovery's view). */
  async listInSlots(slots: readonly Slot[]): Promise<HostRow[]> {
    return this.db.selectFrom('hosts').selectAll().where('slot', 'in', [...slots]).where('state', 'not in', ['terminated', 'failed']).execute();
  }

  /** Replaces a live host's desired services; false when the host is not live. */
  async setServices(tenantId: string, id: string, services: unknown[]): Promise<boolean> {
    const row = await this.db
      .updateTable('hosts')
      .set({ services: JSON.stringify(services), updated_at: new Date() })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .where('state', 'in', ['booting', 'running', 'lost'])
      .returning('id')
      .executeTakeFirst();
    return row !== undefined;
  }

  async setLaunched(id: string, ip: string, driverData: Record<string, unknown>): Promise<void> {
    await this.db.updateTable('hosts').set({ ip, driver_data: JSON.stringify(driverData), updated_at: new Date() }).where('id', '=', id).execute();
  }

  /** Names of the groups that hold a live host now (or are getting one: a claim in progress). */
  async groupsWithLiveHosts(): Promise<string[]> {
    const rows = await this.db
      .selectFrom('hosts')
      .select('group_name')
      .distinct()
      .where('group_name', 'is not', null)
      .where('state', 'in', [...LIVE_HOST_STATES])
      .execute();
    return rows.map((r) => r.group_name ?? '').filter(Boolean);
  }

  /** What the driver needs to find the host again changed (a fleet host moved to another group). */
  async setDriverData(id: string, driverData: Record<string, unknown>): Promise<void> {
    await this.db.updateTable('hosts').set({ driver_data: JSON.stringify(driverData), updated_at: new Date() }).where('id', '=', id).execute();
  }

  async setAgent(id: string, connected: boolean, at: Date, version?: string): Promise<void> {
    let q = this.db
      .updateTable('hosts')
      .set({ agent_connected: connected, agent_last_seen: at, ...(version ? { agent_version: version } : {}) })
      .where('id', '=', id);
    // A disconnect reported late (after a newer connection was recorded) must not undo it.
    if (!connected) q = q.where((eb) => eb.or([eb('agent_last_seen', 'is', null), eb('agent_last_seen', '<=', at)]));
    await q.execute();
  }

  /** For a reset: new agent credentials and tags; the host boots again (running -> booting). */
  /** `keepServices`: the host's desired services survive (a user's reset reruns them); else cleared. */
  async beginReset(id: string, agentTokenHash: string, tags: Record<string, string>, image: { image: string; imageId: string | null }, keepServices = false): Promise<HostRow | undefined> {
    assertTransition(id, 'running', 'booting');
    const row = await this.db
      .updateTable('hosts')
      .set({ state: 'booting', state_reason: 'resetting', agent_token_hash: agentTokenHash, tags: JSON.stringify(tags), image: image.image, image_id: image.imageId, ...(keepServices ? {} : { services: '[]' }), agent_connected: false, ready_at: null, updated_at: new Date() })
      .where('id', '=', id)
      .where('state', '=', 'running')
      .returningAll()
      .executeTakeFirst();
    if (row) this.events.emit(hostEvent(row, 'running', 'resetting'));
    return row;
  }

  /**
   * Changes a live host's tags in one statement (added or replaced, then removed), so two changes at
   * once both land. Returns the row, or undefined when the host is not live.
   */
  async changeTags(tenantId: string, id: string, set: Record<string, string>, remove: readonly string[]): Promise<HostRow | undefined> {
    const result = await sql<HostRow>`
      update hosts set tags = (tags || ${JSON.stringify(set)}::jsonb) - ${sql.val([...remove])}::text[], updated_at = now()
      where id = ${id} and tenant_id = ${tenantId} and state in (${sql.join([...LIVE_HOST_STATES])})
      returning *`.execute(this.db);
    return result.rows[0];
  }

  /** At server start nobody is connected yet, whatever the store says. */
  async markAllDisconnected(): Promise<void> {
    await this.db.updateTable('hosts').set({ agent_connected: false }).where('agent_connected', '=', true).execute();
  }
}
