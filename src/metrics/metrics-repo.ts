/**
 * The store queries behind GET /metrics: one aggregate statement per metric family, scoped to one
 * tenant, so a scrape costs the same handful of queries whatever the number of hosts, claims or
 * environments. They read the same rows and apply the same rules as the queries `berth pool show`,
 * `berth claim ls` and `berth env ls` use, so the numbers agree with the CLI and survive restarts.
 *
 * Claims and command invocations are history: their tables only grow. Once finished, a claim or an
 * invocation never changes again (a ready claim may become released: same outcome, same timings),
 * so the collector adds up each finished one once: these queries take a `since` (rows created
 * before it were added up already) and an `upto` horizon (rows created before it have finished:
 * `settled`, to add up for good; the rest are counted afresh at every scrape).
 */
import { sql, type Kysely } from 'kysely';
import type { HistogramRow } from './histogram-history.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import type { Database } from '../store/schema.js';

/** Live pool hosts of one slot of one pool, of the pool's current generation or not. */
export interface PoolHostGroup {
  pool: string;
  slot: string;
  /** The host's generation is the pool's (false for an older one). */
  current: boolean;
  /** The host runs and its agent is connected (a waiting host without: reconnecting). */
  connected: boolean;
  hosts: number;
  /** For slot `ready`: the seconds these hosts have waited ready so far (0 for other slots). */
  readySeconds: number;
}

export interface PoolFacts {
  pool: string;
  size: number;
  /** Seconds hosts waited ready and unclaimed, summed as each left `ready`. */
  idleHostSeconds: number;
  consecutiveFailures: number;
}

/**
 * A point in time with the store's precision (microseconds: a JS Date would drop them and a row
 * could be counted twice), as PostgreSQL writes a timestamptz.
 */
export type StoreTime = string;

/** Claims of one pool, created in [since, upto) (settled) or after (not), by outcome. */
export interface ClaimCounts {
  pool: string;
  settled: boolean;
  /** Ready or released claims served by a waiting host. */
  hits: number;
  /** Ready or released claims served by a host launched for them (the cold path). */
  misses: number;
  failed: number;
  pending: number;
  /** Attempts that failed and were rolled back (host quarantined), in claims that then succeeded or failed. */
  rollbacks: number;
  /** Sum of the hits' total latencies, ms. */
  hitTotalMs: number;
  /** The misses' total latencies, ms, ascending. */
  missMs: number[];
}

/** A histogram of one timing stage of a pool's claims of one outcome. */
export interface ClaimStageHistogram {
  pool: string;
  settled: boolean;
  outcome: 'hit' | 'miss' | 'failed';
  /** `total`, or a stage the claim timed (`pick`, `move`, `launch`, `init`, …): its timings key without `Ms`. */
  stage: string;
  count: number;
  sumMs: number;
  /** Cumulative: how many took at most each bound (same order as the bounds given). */
  buckets: number[];
}

export interface EnvironmentFacts {
  name: string;
  pool: string;
  state: string;
  /** The route's generation: 1 after the create, higher after each deploy; null before the first route. */
  generation: number | null;
  /** What gave it its timings: create, deploy or wake (null: stored before that was recorded). */
  operation: string | null;
  /** The latest create's or deploy's timings, ms (the store keeps the latest only). */
  timings: Record<string, number>;
}

export interface InvocationCount {
  settled: boolean;
  status: string;
  invocations: number;
}

const FINISHED = sql`('ready', 'released')`;
const OPEN_INVOCATIONS = sql`('Pending', 'InProgress', 'Cancelling')`;

/** `created_at >= since` (every row when since is null). */
function createdSince(column: string, since: StoreTime | null) {
  return since === null ? sql`true` : sql`${sql.ref(column)} >= ${since}::timestamptz`;
}

/**
 * Claims created since `since`. The finished_at condition adds nothing (a claim finishes after it
 * is created; an hour of slack covers an application server's clock behind the database's, which
 * sets created_at) but lets the claims_pool_finished index find them: there is no index on
 * created_at, and a scan of every claim ever made would grow with the history.
 */
function claimsSince(alias: string, since: StoreTime | null) {
  if (since === null) return sql`true`;
  const column = (name: string) => sql.ref(`${alias}.${name}`);
  return sql`${column('created_at')} >= ${since}::timestamptz and (${column('finished_at')} is null or ${column('finished_at')} >= ${since}::timestamptz - interval '1 hour')`;
}

export class MetricsRepo {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Live hosts of the tenant's pools by pool, slot and whether they are of the pool's current
   * generation: the rows PoolsRepo.counts reads, for every pool at once. Its `state not in
   * ('terminated', 'failed')` is written as the live states here, which the (tenant_id, state)
   * index serves: terminated hosts stay in the table for good.
   */
  async poolHostGroups(tenantId: string): Promise<PoolHostGroup[]> {
    const current = sql<boolean>`coalesce(h.generation = p.generation, false)`;
    const connected = sql<boolean>`(h.state = 'running' and h.agent_connected)`;
    const rows = await this.db
      .selectFrom('hosts as h')
      .innerJoin('pools as p', (join) => join.onRef('p.tenant_id', '=', 'h.tenant_id').onRef('p.name', '=', 'h.pool'))
      .select([
        'p.name as pool',
        'h.slot',
        current.as('current'),
        connected.as('connected'),
        sql<number>`count(*)::int`.as('hosts'),
        sql<number>`coalesce(sum(extract(epoch from now() - coalesce(h.slot_since, h.created_at))) filter (where h.slot = 'ready'), 0)::float8`.as('ready_s'),
      ])
      .where('h.tenant_id', '=', tenantId)
      .where('h.state', 'in', [...LIVE_HOST_STATES])
      .where('h.slot', 'is not', null)
      .groupBy(['p.name', 'h.slot', current, connected])
      .execute();
    return rows.map((r) => ({ pool: r.pool, slot: r.slot ?? '', current: r.current, connected: r.connected, hosts: Number(r.hosts), readySeconds: Number(r.ready_s) }));
  }

  async pools(tenantId: string): Promise<PoolFacts[]> {
    const rows = await this.db.selectFrom('pools').select(['name', 'size', 'idle_host_seconds', 'consecutive_failures']).where('tenant_id', '=', tenantId).orderBy('name').execute();
    return rows.map((r) => ({ pool: r.name, size: r.size, idleHostSeconds: Number(r.idle_host_seconds), consecutiveFailures: r.consecutive_failures }));
  }

  /**
   * The time before which every claim of the tenant has finished: the oldest running claim's
   * creation, or `settleMs` ago (a claim's insert commits within it), never before `since`.
   */
  async claimsHorizon(tenantId: string, since: StoreTime | null, settleMs: number): Promise<StoreTime> {
    const result = await sql<{ upto: string }>`
      select greatest(
        least((select min(created_at) from claims where tenant_id = ${tenantId} and state = 'pending'), now() - ${settleMs}::float8 * interval '1 millisecond'),
        ${since}::timestamptz
      )::text as upto`.execute(this.db);
    return horizon(result.rows[0]?.upto);
  }

  /** The tenant's claims created since `since`, by pool and outcome, in one pass. */
  async claimCounts(tenantId: string, since: StoreTime | null, upto: StoreTime): Promise<ClaimCounts[]> {
    const result = await sql<{ pool: string; settled: boolean; hits: number; misses: number; failed: number; pending: number; rollbacks: number; hit_ms: number; miss_ms: number[] }>`
      select pool, created_at < ${upto}::timestamptz as settled,
        count(*) filter (where state in ${FINISHED} and hit)::int as hits,
        count(*) filter (where state in ${FINISHED} and not hit)::int as misses,
        count(*) filter (where state = 'failed')::int as failed,
        count(*) filter (where state = 'pending')::int as pending,
        coalesce(sum(case
          when state in ${FINISHED} then greatest(attempts - 1, 0)
          when state = 'failed' and jsonb_typeof(error -> 'attempts') = 'array' then jsonb_array_length(error -> 'attempts')
          else 0 end), 0)::int as rollbacks,
        coalesce(sum(duration_ms) filter (where state in ${FINISHED} and hit), 0)::float8 as hit_ms,
        coalesce(array_agg(duration_ms order by duration_ms) filter (where state in ${FINISHED} and not hit and duration_ms is not null), '{}')::float8[] as miss_ms
      from claims c
      where tenant_id = ${tenantId} and ${claimsSince('c', since)}
      group by 1, 2
      order by 1, 2`.execute(this.db);
    return result.rows.map((r) => ({
      pool: r.pool,
      settled: r.settled,
      hits: Number(r.hits),
      misses: Number(r.misses),
      failed: Number(r.failed),
      pending: Number(r.pending),
      rollbacks: Number(r.rollbacks),
      hitTotalMs: Number(r.hit_ms),
      missMs: r.miss_ms.map(Number),
    }));
  }

  /**
   * Claim latency histograms by pool, outcome and stage, bucketed in the store. `total` is the
   * claim's duration (what `berth pool show` buckets as its claim latency), for failed claims too;
   * the other stages are the `…Ms` timings a successful claim recorded. `boundsMs` ascending.
   */
  async claimHistograms(tenantId: string, since: StoreTime | null, upto: StoreTime, boundsMs: readonly number[]): Promise<ClaimStageHistogram[]> {
    const buckets = boundsMs.length > 0 ? sql`array[${sql.join(boundsMs.map((b) => sql`count(*) filter (where ms <= ${b}::float8)`))}]::int[]` : sql`'{}'::int[]`;
    const result = await sql<{ pool: string; settled: boolean; outcome: ClaimStageHistogram['outcome']; stage: string; n: number; sum_ms: number; buckets: number[] }>`
      with samples as (
        select pool, created_at, case when state = 'failed' then 'failed' when hit then 'hit' else 'miss' end as outcome, 'total' as stage, duration_ms as ms
        from claims c
        where tenant_id = ${tenantId} and ${claimsSince('c', since)} and (state in ${FINISHED} or state = 'failed') and duration_ms is not null
        union all
        select c.pool, c.created_at, case when c.hit then 'hit' else 'miss' end, left(t.key, -2), (t.value)::float8
        from claims c cross join lateral jsonb_each(c.timings) as t(key, value)
        where c.tenant_id = ${tenantId} and ${claimsSince('c', since)} and c.state in ${FINISHED}
          and t.key like '%Ms' and t.key <> 'totalMs' and jsonb_typeof(t.value) = 'number'
      )
      select pool, created_at < ${upto}::timestamptz as settled, outcome, stage, count(*)::int as n, coalesce(sum(ms), 0)::float8 as sum_ms, ${buckets} as buckets
      from samples
      group by 1, 2, 3, 4
      order by 1, 2, 3, 4`.execute(this.db);
    return result.rows.map((r) => ({ pool: r.pool, settled: r.settled, outcome: r.outcome, stage: r.stage, count: Number(r.n), sumMs: Number(r.sum_ms), buckets: r.buckets.map(Number) }));
  }

  /**
   * How long hosts that became ready since `since` took, by kind and pool: created_at to ready_at
   * (`host`) and, for pool hosts, to pool_ready_at (`pool`). Both are set once, so a host is counted
   * once for good when its time is before `upto`. Read through the partial indexes on
   * (tenant_id, ready_at) and (tenant_id, pool_ready_at).
   */
  async readinessHistograms(tenantId: string, since: StoreTime | null, upto: StoreTime, boundsMs: readonly number[]): Promise<HistogramRow[]> {
    const buckets = boundsMs.length > 0 ? sql`array[${sql.join(boundsMs.map((b) => sql`count(*) filter (where ms <= ${b}::float8)`))}]::int[]` : sql`'{}'::int[]`;
    const after = (column: string) => (since === null ? sql`${sql.ref(column)} is not null` : sql`${sql.ref(column)} >= ${since}::timestamptz`);
    const result = await sql<{ kind: 'host' | 'pool'; pool: string; settled: boolean; n: number; sum_ms: number; buckets: number[] }>`
      with samples as (
        select 'host' as kind, coalesce(pool, '') as pool, ready_at as at, extract(epoch from ready_at - created_at)::float8 * 1000 as ms
        from hosts where tenant_id = ${tenantId} and ${after('ready_at')}
        union all
        select 'pool', pool, pool_ready_at, extract(epoch from pool_ready_at - created_at)::float8 * 1000
        from hosts where tenant_id = ${tenantId} and ${after('pool_ready_at')} and pool is not null
      )
      select kind, pool, at < ${upto}::timestamptz as settled, count(*)::int as n, coalesce(sum(ms), 0)::float8 as sum_ms, ${buckets} as buckets
      from samples
      group by 1, 2, 3
      order by 1, 2, 3`.execute(this.db);
    return result.rows.map((r) => ({ labels: { kind: r.kind, pool: r.pool }, settled: r.settled, count: Number(r.n), sumMs: Number(r.sum_ms), buckets: r.buckets.map(Number) }));
  }

  /**
   * Environments' creates and deploys finished since `since`, by pool, operation and stage (`total`
   * is the timings' totalMs), bucketed in the store. Read through (tenant_id, finished_at).
   */
  async environmentTimingHistograms(tenantId: string, since: StoreTime | null, upto: StoreTime, boundsMs: readonly number[]): Promise<HistogramRow[]> {
    const buckets = boundsMs.length > 0 ? sql`array[${sql.join(boundsMs.map((b) => sql`count(*) filter (where ms <= ${b}::float8)`))}]::int[]` : sql`'{}'::int[]`;
    const result = await sql<{ pool: string; operation: string; stage: string; settled: boolean; n: number; sum_ms: number; buckets: number[] }>`
      with samples as (
        select e.pool, e.operation, left(t.key, -2) as stage, (t.value)::float8 as ms, e.finished_at as at
        from environment_timings e cross join lateral jsonb_each(e.timings) as t(key, value)
        where e.tenant_id = ${tenantId} and ${since === null ? sql`true` : sql`e.finished_at >= ${since}::timestamptz`}
          and t.key like '%Ms' and jsonb_typeof(t.value) = 'number'
      )
      select pool, operation, stage, at < ${upto}::timestamptz as settled, count(*)::int as n, coalesce(sum(ms), 0)::float8 as sum_ms, ${buckets} as buckets
      from samples
      group by 1, 2, 3, 4
      order by 1, 2, 3, 4`.execute(this.db);
    return result.rows.map((r) => ({ labels: { pool: r.pool, operation: r.operation, stage: r.stage }, settled: r.settled, count: Number(r.n), sumMs: Number(r.sum_ms), buckets: r.buckets.map(Number) }));
  }

  /** `settleMs` ago (a row's time commits within it), never before `since`. */
  async settleHorizon(since: StoreTime | null, settleMs: number): Promise<StoreTime> {
    const result = await sql<{ upto: string }>`select greatest(now() - ${settleMs}::float8 * interval '1 millisecond', ${since}::timestamptz)::text as upto`.execute(this.db);
    return horizon(result.rows[0]?.upto);
  }

  async environments(tenantId: string): Promise<EnvironmentFacts[]> {
    const rows = await this.db
      .selectFrom('environments')
      .select(['name', 'pool', 'state', 'timings', 'operation', sql<number | null>`(route ->> 'generation')::int`.as('generation')])
      .where('tenant_id', '=', tenantId)
      .orderBy('name')
      .execute();
    return rows.map((r) => ({ name: r.name, pool: r.pool, state: r.state, generation: r.generation === null ? null : Number(r.generation), operation: r.operation, timings: r.timings }));
  }

  /** As claimsHorizon, for command invocations: before it, every one has a final status. */
  async invocationsHorizon(tenantId: string, since: StoreTime | null, settleMs: number): Promise<StoreTime> {
    const result = await sql<{ upto: string }>`
      select greatest(
        least((select min(created_at) from invocations where tenant_id = ${tenantId} and status in ${OPEN_INVOCATIONS}), now() - ${settleMs}::float8 * interval '1 millisecond'),
        ${since}::timestamptz
      )::text as upto`.execute(this.db);
    return horizon(result.rows[0]?.upto);
  }

  /**
   * The tenant's invocations of commands created since `since`, by status. Read through the
   * commands' (tenant_id, created_at) index: an invocation is created with its command.
   */
  async invocationCounts(tenantId: string, since: StoreTime | null, upto: StoreTime): Promise<InvocationCount[]> {
    const result = await sql<{ settled: boolean; status: string; n: number }>`
      select c.created_at < ${upto}::timestamptz as settled, i.status, count(*)::int as n
      from commands c join invocations i on i.command_id = c.id
      where c.tenant_id = ${tenantId} and ${createdSince('c.created_at', since)}
      group by 1, 2
      order by 1, 2`.execute(this.db);
    return result.rows.map((r) => ({ settled: r.settled, status: r.status, invocations: Number(r.n) }));
  }
}

function horizon(upto: string | undefined): StoreTime {
  if (!upto) throw new Error('the store gave no time');
  return upto;
}
