/**
 * Claims, and the one statement that hands a ready host to a claim. The pick locks the oldest ready
 * host of the pool's current generation with FOR UPDATE SKIP LOCKED and moves it to the claim in the
 * same statement, so concurrent claims never get the same host (on PostgreSQL each skips the rows
 * others hold; on PGlite statements run one at a time).
 */
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { ClaimState } from '../core/pool-state.js';
import type { ClaimRow, Database, HostRow } from './schema.js';
import { claimCreated, claimEvent, slotEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';

/** A host of the same group, as the driver needs it (see HostDriver.setNetworkGroups). */
export type GroupMate = Pick<HostRow, 'id' | 'driver_data' | 'hostname' | 'tags'>;

export interface NewClaim {
  id: string;
  tenantId: string;
  pool: string;
  group: string;
  idempotencyKey: string | null;
  request: Record<string, unknown>;
}

export const LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000] as const;

export class ClaimsRepo {
  /** `events`: claims' changes, and the slots of the hosts they take, are reported there. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly events: EventSink = NO_EVENTS,
  ) {}

  /**
   * Records a new claim and, in the same statement, takes a ready host for it as pickReady does —
   * the claim path's first step in one round trip. `inserted` is false when a claim with this
   * idempotency key exists already (then no host is taken).
   */
  async insertAndPick(claim: NewClaim): Promise<{ inserted: boolean; picked?: { host: HostRow; idleSeconds: number } }> {
    const result = await sql<{ inserted: number; host: (Record<string, unknown> & { idle_s: number }) | null }>`
      with ins as (
        insert into claims (id, tenant_id, pool, group_name, idempotency_key, state, request, timings, error)
        values (${claim.id}, ${claim.tenantId}, ${claim.pool}, ${claim.group}, ${claim.idempotencyKey}, 'pending', ${JSON.stringify(claim.request)}::jsonb, '{}', 'null')
        on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
        returning id
      ), ${pickCtes(claim.tenantId, claim.pool, claim.id, claim.group, sql`and exists (select 1 from ins)`)}
      select (select count(*) from ins)::int as inserted, (select row_to_json(taken) from taken) as host`.execute(this.db);
    const row = result.rows[0];
    if (!row || row.inserted === 0) return { inserted: false };
    this.events.emit(claimCreated(claim));
    if (!row.host) return { inserted: true };
    const { idle_s, ...host } = row.host;
    const picked = reviveDates(host, HOST_DATES) as unknown as HostRow;
    this.events.emit(slotEvent(picked, 'ready'));
    return { inserted: true, picked: { host: picked, idleSeconds: Number(idle_s) } };
  }

  /**
   * Takes the oldest ready host of the pool's current generation whose agent is connected, and
   * moves it to the claim and its group (slot `claiming`). Returns the host, or undefined when the
   * pool has none ready. `idleSeconds` is how long the host waited ready (the cost of readiness).
   */
  async pickReady(tenantId: string, pool: string, claimId: string, group: string): Promise<{ host: HostRow; idleSeconds: number } | undefined> {
    const result = await sql<{ host: (Record<string, unknown> & { idle_s: number }) | null }>`
      with ${pickCtes(tenantId, pool, claimId, group, sql``)}
      select (select row_to_json(taken) from taken) as host`.execute(this.db);
    const taken = result.rows[0]?.host;
    if (!taken) return undefined;
    const { idle_s, ...host } = taken;
    const picked = reviveDates(host, HOST_DATES) as unknown as HostRow;
    this.events.emit(slotEvent(picked, 'ready'));
    return { host: picked, idleSeconds: Number(idle_s) };
  }

  /**
   * Ready hosts of the pool's current generation whose agents are not connected: after a server
   * restart, until they redial. The pick passes them over; a claim may wait for one.
   */
  async reconnecting(tenantId: string, pool: string): Promise<number> {
    const result = await sql<{ n: number }>`
      select count(*)::int as n from hosts h
      join pools p on p.tenant_id = h.tenant_id and p.name = h.pool
      where h.tenant_id = ${tenantId} and h.pool = ${pool} and h.slot = 'ready'
        and h.generation = p.generation and h.state = 'running' and not h.agent_connected`.execute(this.db);
    return Number(result.rows[0]?.n ?? 0);
  }

  /**
   * Completes a claim in one statement: its host goes `claiming` -> `claimed` with the user's tags,
   * the claim `pending` -> `ready`, and the pool counts a hit or a miss — all or nothing. Returns
   * the host and claim as stored, or undefined when either had moved on (the claim lost its host).
   * Also returns the group's other running hosts as the statement found them (a claim ending at the
   * same moment may be missing: NetworkGroups covers that), for the driver to let the host reach.
   */
  async complete(c: { claimId: string; tenantId: string; pool: string; hostId: string; tags: Record<string, string>; hit: boolean; attempts: number; timings: Record<string, number>; durationMs: number }): Promise<{ host: HostRow; claim: ClaimRow; groupMates: GroupMate[] } | undefined> {
    const result = await sql<{ host: Record<string, unknown> | null; claim: Record<string, unknown> | null; mates: GroupMate[] | null }>`
      with h as (
        update hosts set slot = 'claimed', slot_since = now(), updated_at = now(), tags = ${JSON.stringify(c.tags)}::jsonb
        where id = ${c.hostId} and slot = 'claiming' and claim_id = ${c.claimId}
        returning *
      ), cl as (
        update claims set state = 'ready', finished_at = now(), host_id = ${c.hostId}, hit = ${c.hit}, attempts = ${c.attempts},
          timings = ${JSON.stringify(c.timings)}::jsonb, duration_ms = ${c.durationMs}
        where id = ${c.claimId} and state = 'pending' and exists (select 1 from h)
        returning *
      ), counted as (
        update pools set hits = hits + ${c.hit ? 1 : 0}, misses = misses + ${c.hit ? 0 : 1}
        where tenant_id = ${c.tenantId} and name = ${c.pool} and exists (select 1 from cl)
      )
      select (select row_to_json(h) from h) as host, (select row_to_json(cl) from cl) as claim,
        (select json_agg(json_build_object('id', o.id, 'driver_data', o.driver_data, 'hostname', o.hostname, 'tags', o.tags)) from hosts o
          where o.tenant_id = ${c.tenantId} and o.group_name = (select group_name from h) and o.id <> ${c.hostId}
            and o.slot = 'claimed' and o.state = 'running') as mates`.execute(this.db);
    const row = result.rows[0];
    if (!row?.host || !row.claim) return undefined;
    const done = { host: reviveDates(row.host, HOST_DATES) as unknown as HostRow, claim: reviveDates(row.claim, CLAIM_DATES) as unknown as ClaimRow, groupMates: row.mates ?? [] };
    this.events.emit(slotEvent(done.host, 'claiming'));
    this.events.emit(claimEvent(done.claim, 'pending'));
    return done;
  }

  async get(tenantId: string, id: string): Promise<ClaimRow | undefined> {
    return this.db.selectFrom('claims').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  }

  async byIdempotencyKey(tenantId: string, key: string): Promise<ClaimRow | undefined> {
    return this.db.selectFrom('claims').selectAll().where('tenant_id', '=', tenantId).where('idempotency_key', '=', key).executeTakeFirst();
  }

  async list(tenantId: string, filter: { pool?: string; group?: string; limit?: number } = {}): Promise<ClaimRow[]> {
    let q = this.db.selectFrom('claims').selectAll().where('tenant_id', '=', tenantId);
    if (filter.pool) q = q.where('pool', '=', filter.pool);
    if (filter.group) q = q.where('group_name', '=', filter.group);
    return q.orderBy('created_at', 'desc').orderBy('id').limit(filter.limit ?? 100).execute();
  }

  async pending(): Promise<ClaimRow[]> {
    return this.db.selectFrom('claims').selectAll().where('state', '=', 'pending').execute();
  }

  /** Moves a claim from `from` to `to` (compare-and-set); returns the row, or undefined if it was elsewhere. */
  async finish(
    id: string,
    from: ClaimState,
    to: ClaimState,
    fields: { hostId?: string | null; durationMs?: number; error?: Record<string, unknown> | null },
  ): Promise<ClaimRow | undefined> {
    const row = await this.db
      .updateTable('claims')
      .set({
        state: to,
        finished_at: new Date(),
        ...(fields.hostId !== undefined ? { host_id: fields.hostId } : {}),
        ...(fields.durationMs !== undefined ? { duration_ms: fields.durationMs } : {}),
        ...(fields.error !== undefined ? { error: JSON.stringify(fields.error) } : {}),
      })
      .where('id', '=', id)
      .where('state', '=', from)
      .returningAll()
      .executeTakeFirst();
    if (row) this.events.emit(claimEvent(row, from));
    return row;
  }

  /** Frees an idempotency key held by a failed claim, so a retry with it can start afresh. */
  async forgetKey(id: string): Promise<void> {
    await this.db.updateTable('claims').set({ idempotency_key: null }).where('id', '=', id).where('state', '=', 'failed').execute();
  }

  /** When the pool was last claimed from, or null if never: a pool nobody uses shows it. */
  async lastClaimAt(tenantId: string, pool: string): Promise<Date | null> {
    const row = await this.db.selectFrom('claims').select((eb) => eb.fn.max('created_at').as('at')).where('tenant_id', '=', tenantId).where('pool', '=', pool).executeTakeFirst();
    return row?.at ? new Date(row.at) : null;
  }

  /**
   * Demand: the most claims on the pool (whatever their outcome, finished or not) that arrived
   * within any `spanS` seconds of one another during the last `windowS` seconds. Arrival, not end:
   * a rush that met an empty pool ends spread over its cold launches, and would be undercounted
   * by exactly the slowness the pool is to prevent. One statement (a window function).
   */
  async demandPeak(tenantId: string, pool: string, windowS: number, spanS: number): Promise<number> {
    const row = await sql<{ peak: number | null }>`
      select max(n)::int as peak from (
        select count(*) over (order by created_at range between current row and ${`${spanS} seconds`}::interval following) as n
        from claims
        where tenant_id = ${tenantId} and pool = ${pool} and created_at > now() - ${`${windowS} seconds`}::interval
      ) as spans`.execute(this.db);
    return row.rows[0]?.peak ?? 0;
  }

  /** Counts of successful claims' latencies per bucket (upper bounds in ms; the last is +Inf). */
  async latencyHistogram(tenantId: string, pool: string): Promise<{ leMs: number | null; count: number }[]> {
    const rows = await this.db
      .selectFrom('claims')
      .select((eb) => [sql<number>`width_bucket(duration_ms, ${sql.val([...LATENCY_BUCKETS_MS])}::float8[])`.as('bucket'), eb.fn.countAll<number>().as('n')])
      .where('tenant_id', '=', tenantId)
      .where('pool', '=', pool)
      .where('state', 'in', ['ready', 'released'])
      .where('duration_ms', 'is not', null)
      .groupBy('bucket')
      .execute();
    const counts = new Map(rows.map((r) => [Number(r.bucket), Number(r.n)]));
    return [...LATENCY_BUCKETS_MS, null].map((leMs, i) => ({ leMs, count: counts.get(i) ?? 0 }));
  }
}

const HOST_DATES = ['created_at', 'updated_at', 'ready_at', 'terminated_at', 'agent_last_seen', 'slot_since'];
const CLAIM_DATES = ['created_at', 'finished_at'];

/** row_to_json gives timestamps as strings; callers expect what a plain select gives. */
function reviveDates(row: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out = { ...row };
  for (const key of keys) if (typeof out[key] === 'string') out[key] = new Date(out[key]);
  return out;
}

/**
 * The pick as CTEs (`picked`, `idle`, `taken`): lock the oldest ready host of the pool's current
 * generation whose agent is connected (skipping rows other transactions hold), count the time it
 * waited ready as the pool's idle cost, and move it to the claim. `guard` may make the move
 * conditional on an earlier CTE.
 */
function pickCtes(tenantId: string, pool: string, claimId: string, group: string, guard: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`picked as (
        select h.id, h.slot_since from hosts h
        join pools p on p.tenant_id = h.tenant_id and p.name = h.pool
        where h.tenant_id = ${tenantId} and h.pool = ${pool} and h.slot = 'ready'
          and h.generation = p.generation and h.state = 'running' and h.agent_connected
        order by h.ready_at, h.id
        limit 1
        for update of h skip locked
      ), taken as (
        update hosts set slot = 'claiming', slot_since = now(), group_name = ${group}, claim_id = ${claimId}, updated_at = now()
        from picked where hosts.id = picked.id and hosts.slot = 'ready' ${guard}
        returning hosts.*, extract(epoch from now() - picked.slot_since)::float8 as idle_s
      ), idle as (
        -- the time the host waited ready is the pool's cost of readiness
        update pools set idle_host_seconds = idle_host_seconds + (select idle_s from taken)
        where tenant_id = ${tenantId} and name = ${pool} and exists (select 1 from taken)
      )`;
}
