/**
 * Prometheus metrics (text exposition format 0.0.4), read from the store at scrape time: pool hosts
 * by slot, claims by outcome and their latency by stage, environments' timings, command
 * invocations. Counted from the database, not by this process, so they match what the CLI shows
 * and survive restarts. Claims and invocations are history that only grows: each finished one is
 * added up once and the sum kept here (see MetricsRepo), rebuilt from the store after a restart.
 * Only the router's responses are counted in memory: the store has no record of them.
 *
 * The exposition is written here rather than with prom-client: every number is read from the store
 * at scrape time (histograms included, bucketed in SQL), while prom-client's metrics are built to
 * be fed in-process — a histogram takes observe() per value and cannot be given bucket counts, a
 * counter would need reset() and inc() at every scrape. Writing the format is the few lines below.
 */
export { EXPOSITION_CONTENT_TYPE, RouterRequestCounts, formatExposition, histogramSamples } from './exposition.js';
export type { Labels, MetricFamily, MetricType, Sample } from './exposition.js';
import type { Kysely } from 'kysely';
import { LATENCY_BUCKETS_MS } from '../store/claims-repo.js';
import type { Database } from '../store/schema.js';
import { OPEN_STATUSES } from '../core/command-status.js';
import { formatExposition, histogramSamples, type MetricFamily, type MetricType, type RouterRequestCounts, type Sample } from './exposition.js';
import { TenantHistograms } from './readiness.js';
import { hostUsageFamilies } from './host-usage.js';
import { nameServiceFamilies, shellFamilies } from './shell-usage.js';
import type { ShellTotals } from '../shells/shell-broker.js';
import type { ApiRequestCounts } from './api-usage.js';
import type { NameServiceCounts } from '../drivers/types.js';
import type { HostStatsView } from '../hosts/views.js';
import { MetricsRepo, type ClaimCounts, type ClaimStageHistogram, type StoreTime } from './metrics-repo.js';
import { emptyCounts, foldPoolHosts, POOL_SLOTS } from './pool-slots.js';
export { foldPoolHosts } from './pool-slots.js';

/**
 * Claim latency bucket bounds, ms: those `berth pool show` uses (so its counts can be read off the
 * histogram) with finer ones below for the pick, and longer ones above for cold launches.
 */
export const CLAIM_BUCKETS_MS: readonly number[] = [...new Set([0.5, 1, 2.5, ...LATENCY_BUCKETS_MS, 30_000, 60_000])].sort((a, b) => a - b);

// ---------------------------------------------------------------------------------------------
// Claims and invocations: history, each finished row added up once.

/** One stage's histogram of one outcome: count, sum and cumulative buckets (CLAIM_BUCKETS_MS). */
interface StageTally {
  outcome: ClaimStageHistogram['outcome'];
  stage: string;
  count: number;
  sumMs: number;
  buckets: number[];
}

interface PoolClaimTally {
  hits: number;
  misses: number;
  failed: number;
  pending: number;
  rollbacks: number;
  hitTotalMs: number;
  /** Ascending. */
  missMs: number[];
  /** By `outcome\nstage`. */
  stages: Map<string, StageTally>;
}

type ClaimTally = Map<string, PoolClaimTally>;

function poolTally(tally: ClaimTally, pool: string): PoolClaimTally {
  let t = tally.get(pool);
  if (!t) {
    t = { hits: 0, misses: 0, failed: 0, pending: 0, rollbacks: 0, hitTotalMs: 0, missMs: [], stages: new Map() };
    tally.set(pool, t);
  }
  return t;
}

function addCounts(tally: ClaimTally, c: Omit<ClaimCounts, 'settled' | 'pool'> & { pool: string }): void {
  const t = poolTally(tally, c.pool);
  t.hits += c.hits;
  t.misses += c.misses;
  t.failed += c.failed;
  t.pending += c.pending;
  t.rollbacks += c.rollbacks;
  t.hitTotalMs += c.hitTotalMs;
  if (c.missMs.length > 0) t.missMs = t.missMs.length === 0 ? [...c.missMs] : mergeSorted(t.missMs, c.missMs);
}

function addStage(tally: ClaimTally, pool: string, h: StageTally): void {
  const stages = poolTally(tally, pool).stages;
  const key = `${h.outcome}\n${h.stage}`;
  const t = stages.get(key);
  if (!t) stages.set(key, { ...h, buckets: [...h.buckets] });
  else {
    t.count += h.count;
    t.sumMs += h.sumMs;
    t.buckets = t.buckets.map((n, i) => n + (h.buckets[i] ?? 0));
  }
}

/** A new tally: `a` and `b` added up (neither changed). */
function mergedTally(a: ClaimTally, b: ClaimTally): ClaimTally {
  const out: ClaimTally = new Map();
  for (const from of [a, b]) {
    for (const [pool, t] of from) {
      addCounts(out, { ...t, pool });
      for (const stage of t.stages.values()) addStage(out, pool, stage);
    }
  }
  return out;
}

function mergeSorted(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    if (y === undefined || (x !== undefined && x <= y)) {
      out.push(x ?? 0);
      i++;
    } else {
      out.push(y);
      j++;
    }
  }
  return out;
}

/** The median of an ascending list (the mean of the middle two for an even count), as percentile_cont(0.5). */
export function medianOfSorted(sorted: readonly number[]): number | null {
  if (sorted.length === 0) return null;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] ?? null) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** What one tenant's finished claims and invocations add up to, up to a horizon (see MetricsRepo). */
interface TenantHistory {
  claimsSince: StoreTime | null;
  claims: ClaimTally;
  invocationsSince: StoreTime | null;
  invocations: Map<string, number>;
  histograms: TenantHistograms;
  /** Scrapes of one tenant run one at a time: two must not add the same rows up. */
  queue: Promise<unknown>;
}

// ---------------------------------------------------------------------------------------------
// The collector.

export interface MetricsCollectorDeps {
  db: Kysely<Database>;
  /** The router's responses (see RouterRequestCounts); without it the family is left out. */
  routerRequests?: RouterRequestCounts;
  /**
   * A claim or invocation created longer ago than this is taken to be committed (default 60 s):
   * only then is it added up for good. On PGlite, which runs one statement at a time, 0 would do.
   */
  settleMs?: number;
  /** The services agents reported, for the service families; without it they are left out. */
  services?: { reportedServices(tenantId: string): Array<{ hostId: string; service: string; state: string; restarts: number }> };
  /** A pool's current target (the reconciler's last pass: its size, its schedule's, or demand's); undefined: its size. */
  poolTarget?: (tenantId: string, pool: string) => number | undefined;
  /** What the tenant's running hosts use (their drivers' readings); without it the host families are left out. */
  hostStats?: (tenantId: string) => Promise<HostStatsView[]>;
  /** Shell sessions, counted by the server process (shell-usage.ts). */
  shells?: (tenantId: string) => ShellTotals;
  /** The driver's name service for hosts (machine-wide: not a tenant's). */
  nameService?: () => NameServiceCounts | undefined;
  /** The API's responses, counted by the server process (api-usage.ts). */
  apiRequests?: ApiRequestCounts;
  /** The certificates the server serves now, by listener (`api`, `router`); none: plain HTTP. */
  certificates?: () => Array<{ listener: string; notAfter: Date }>;
}

export class MetricsCollector {
  readonly repo: MetricsRepo;
  private readonly history = new Map<string, TenantHistory>();

  constructor(private readonly deps: MetricsCollectorDeps) {
    this.repo = new MetricsRepo(deps.db);
  }

  /** The exposition for one tenant (the scraping token's): every series carries its `tenant` label. */
  async scrape(tenantId: string): Promise<string> {
    return formatExposition(await this.collect(tenantId));
  }

  async collect(tenantId: string): Promise<MetricFamily[]> {
    let history = this.history.get(tenantId);
    if (!history) {
      history = { claimsSince: null, claims: new Map(), invocationsSince: null, invocations: new Map(), histograms: new TenantHistograms(this.repo, tenantId, this.deps.settleMs ?? 60_000), queue: Promise.resolve() };
      this.history.set(tenantId, history);
    }
    const h = history;
    const run = h.queue.then(() => this.collectNow(tenantId, h));
    h.queue = run.catch(() => undefined);
    return run;
  }

  private async collectNow(tenantId: string, history: TenantHistory): Promise<MetricFamily[]> {
    const t0 = performance.now();
    const settleMs = this.deps.settleMs ?? 60_000;
    // One after another: on PGlite they queue anyway; on PostgreSQL a scrape holds one connection.
    const hostGroups = await this.repo.poolHostGroups(tenantId);
    const pools = await this.repo.pools(tenantId);
    const environments = await this.repo.environments(tenantId);
    const claimsUpto = await this.repo.claimsHorizon(tenantId, history.claimsSince, settleMs);
    const claimCounts = await this.repo.claimCounts(tenantId, history.claimsSince, claimsUpto);
    const histograms = await this.repo.claimHistograms(tenantId, history.claimsSince, claimsUpto, CLAIM_BUCKETS_MS);
    const invocationsUpto = await this.repo.invocationsHorizon(tenantId, history.invocationsSince, settleMs);
    const invocationCounts = await this.repo.invocationCounts(tenantId, history.invocationsSince, invocationsUpto);
    const histories = await history.histograms.collect(tenantId);
    const storeSeconds = (performance.now() - t0) / 1000;

    // Rows before the horizons are final: add them up for good, and read from there next time.
    const recentClaims: ClaimTally = new Map();
    for (const c of claimCounts) addCounts(c.settled ? history.claims : recentClaims, c);
    for (const s of histograms) addStage(s.settled ? history.claims : recentClaims, s.pool, s);
    history.claimsSince = claimsUpto;
    const invocations = new Map<string, number>();
    for (const i of invocationCounts) {
      if (i.settled) history.invocations.set(i.status, (history.invocations.get(i.status) ?? 0) + i.invocations);
      else invocations.set(i.status, (invocations.get(i.status) ?? 0) + i.invocations);
    }
    history.invocationsSince = invocationsUpto;
    for (const [status, n] of history.invocations) invocations.set(status, (invocations.get(status) ?? 0) + n);
    const claims = [...mergedTally(history.claims, recentClaims)].sort(([a], [b]) => a.localeCompare(b));

    const tenant = tenantId;
    const families: MetricFamily[] = [];
    const family = (name: string, type: MetricType, help: string, samples: Sample[]) => families.push({ name, type, help, samples });

    // Pools: the same counts and idle time `berth pool show --json` gives.
    const byPool = foldPoolHosts(hostGroups);
    const poolLabels = (pool: string) => ({ tenant, pool });
    family(
      'berth_pool_hosts',
      'gauge',
      "Live hosts of the pool by slot, as `berth pool show` counts them: warming (launching and warming up), ready, claiming, claimed, quarantined, retiring; stale: waiting hosts of an older generation.",
      pools.flatMap((p) => {
        const counts = byPool.get(p.pool)?.counts ?? emptyCounts();
        return POOL_SLOTS.map((slot) => ({ labels: { ...poolLabels(p.pool), slot }, value: counts[slot] }));
      }),
    );
    family('berth_pool_size', 'gauge', 'Ready hosts the pool keeps (its size).', pools.map((p) => ({ labels: poolLabels(p.pool), value: p.size })));
    family(
      'berth_pool_target_ready_hosts',
      'gauge',
      'Ready hosts the pool aims for now: its size or what its schedule gives now, or, sized by demand, the most claims seen within one refill time (up to demand.max).',
      pools.map((p) => ({ labels: poolLabels(p.pool), value: this.deps.poolTarget?.(tenant, p.pool) ?? p.size })),
    );
    family('berth_pool_consecutive_failures', 'gauge', "The pool's launch or warm-up failures in a row (0 once one succeeds).", pools.map((p) => ({ labels: poolLabels(p.pool), value: p.consecutiveFailures })));
    family(
      'berth_pool_idle_host_seconds_total',
      'counter',
      "Seconds the pool's hosts have waited ready and unclaimed (the cost of readiness), those waiting now included: `berth pool show`'s idleHostSeconds.",
      pools.map((p) => ({ labels: poolLabels(p.pool), value: round1(p.idleHostSeconds + (byPool.get(p.pool)?.readySeconds ?? 0)) })),
    );

    // Claims, from the claims rows (every claim ever made, removed pools' included).
    family(
      'berth_claims_total',
      'counter',
      'Finished claims by outcome: hit (a waiting host), miss (a host launched for the claim), failed (nothing was left in the group).',
      claims.flatMap(([pool, c]) => [
        { labels: { ...poolLabels(pool), outcome: 'hit' }, value: c.hits },
        { labels: { ...poolLabels(pool), outcome: 'miss' }, value: c.misses },
        { labels: { ...poolLabels(pool), outcome: 'failed' }, value: c.failed },
      ]),
    );
    family('berth_claims_pending', 'gauge', 'Claims running now.', claims.map(([pool, c]) => ({ labels: poolLabels(pool), value: c.pending })));
    family(
      'berth_claim_rollbacks_total',
      'counter',
      'Claim attempts rolled back (init, health check or move failed: the host was quarantined and the claim tried another), in claims that then succeeded or failed.',
      claims.map(([pool, c]) => ({ labels: poolLabels(pool), value: c.rollbacks })),
    );
    const boundsS = CLAIM_BUCKETS_MS.map((ms) => ms / 1000);
    family(
      'berth_claim_duration_seconds',
      'histogram',
      "Claim latency by outcome and stage: total (the claim's duration; hit+miss is `berth pool show`'s claim latency), and each stage a successful claim timed: pick, move, launch (a miss's cold launch), init.",
      claims.flatMap(([pool, c]) =>
        [...c.stages.values()]
          .sort((a, b) => a.outcome.localeCompare(b.outcome) || a.stage.localeCompare(b.stage))
          .flatMap((s) => histogramSamples({ ...poolLabels(pool), outcome: s.outcome, stage: s.stage }, boundsS, s.buckets, s.sumMs / 1000, s.count)),
      ),
    );
    const cold = claims.flatMap(([pool, c]) => {
      const coldMs = medianOfSorted(c.missMs);
      return coldMs === null ? [] : [{ labels: poolLabels(pool), coldMs, c }];
    });
    family(
      'berth_pool_cold_claim_seconds',
      'gauge',
      "The cold path's latency: the median total of the pool's misses (claims served by a host launched for them). Absent until the pool has had a miss.",
      cold.map(({ labels, coldMs }) => ({ labels, value: coldMs / 1000 })),
    );
    family(
      'berth_pool_seconds_saved',
      'gauge',
      "Seconds warm hosts saved the pool's claimers: the sum over hits of (cold path latency - the hit's latency), the cold path being berth_pool_cold_claim_seconds. Absent until the pool has had a miss (there is no measured cold path to compare with).",
      cold.map(({ labels, coldMs, c }) => ({ labels, value: (coldMs * c.hits - c.hitTotalMs) / 1000 })),
    );

    // Hosts' launch to ready, pools' refills, environments' creates and deploys by stage.
    families.push(...histories);

    if (this.deps.hostStats) families.push(...hostUsageFamilies(tenant, await this.deps.hostStats(tenantId)));
    if (this.deps.shells) families.push(...shellFamilies(tenant, this.deps.shells(tenantId)));
    const names = this.deps.nameService?.();
    if (names) families.push(...nameServiceFamilies(names));
    if (this.deps.apiRequests) families.push(...this.deps.apiRequests.families(tenantId));
    const certificates = this.deps.certificates?.() ?? [];
    if (certificates.length > 0) {
      // Machine-wide, as the name service's. Alert on `… - time() < 14 * 86400`: a renewal that did not happen.
      family('berth_tls_certificate_expiry_timestamp_seconds', 'gauge', 'When the certificate each HTTPS listener serves now (api, router) expires, Unix time; renewed files replace it as they are served.', certificates.map((c) => ({ labels: { listener: c.listener }, value: c.notAfter.getTime() / 1000 })));
    }

    // Supervised services, as their agents last reported them.
    if (this.deps.services) {
      const reported = this.deps.services.reportedServices(tenantId);
      const byState = new Map<string, number>();
      for (const s of reported) byState.set(s.state, (byState.get(s.state) ?? 0) + 1);
      family('berth_services', 'gauge', "Supervised services of the tenant's connected hosts by state, as their agents last reported them.", [...byState].sort(([a], [b]) => a.localeCompare(b)).map(([state, n]) => ({ labels: { tenant, state }, value: n })));
      family(
        'berth_service_restarts_total',
        'counter',
        "Restarts of each supervised service (crashes and failed readiness alike), as its host's agent last reported them; the agent keeps the count across its own restarts, and the series ends with the host.",
        reported.map((s) => ({ labels: { tenant, host: s.hostId, service: s.service }, value: s.restarts })),
      );
    }

    // Environments.
    const envStates = new Map<string, { pool: string; state: string; n: number }>();
    for (const e of environments) {
      const key = `${e.pool}\n${e.state}`;
      const entry = envStates.get(key) ?? { pool: e.pool, state: e.state, n: 0 };
      entry.n++;
      envStates.set(key, entry);
    }
    family('berth_environments', 'gauge', 'Environments by pool and state (creating, ready, deploying, configuring, restarting, sleeping, waking, failed, removing).', [...envStates.values()].map((s) => ({ labels: { tenant, pool: s.pool, state: s.state }, value: s.n })));
    family(
      'berth_environment_timing_seconds',
      'gauge',
      "The environment's latest create, deploy or wake to ready, by stage (total, claim, init, services, ready, route, balance); operation says which (the store keeps the latest only).",
      environments.flatMap((e) =>
        e.generation === null
          ? []
          : Object.entries(e.timings)
              .filter(([key, ms]) => key.endsWith('Ms') && Number.isFinite(ms))
              .map(([key, ms]) => ({ labels: { tenant, environment: e.name, pool: e.pool, operation: e.operation ?? (e.generation === 1 ? 'create' : 'deploy'), stage: key.slice(0, -2) }, value: ms / 1000 })),
      ),
    );

    // Run Command.
    const byStatus = [...invocations].filter(([, n]) => n > 0).sort(([a], [b]) => a.localeCompare(b));
    family('berth_command_invocations_total', 'counter', 'Command invocations (one per command and host) finished, by status.', byStatus.filter(([status]) => !OPEN.has(status)).map(([status, n]) => ({ labels: { tenant, status }, value: n })));
    family('berth_command_invocations_open', 'gauge', 'Command invocations not finished yet, by status (Pending, InProgress, Cancelling).', byStatus.filter(([status]) => OPEN.has(status)).map(([status, n]) => ({ labels: { tenant, status }, value: n })));

    // The router, counted in this process (since the server started).
    if (this.deps.routerRequests) {
      const mine = new Set(environments.map((e) => e.name.toLowerCase()));
      family(
        'berth_router_requests_total',
        'counter',
        'HTTP responses the environment router sent since the server started, by environment and status (WebSocket upgrades not included). environment="" (tenant="") counts requests for names no route has.',
        this.deps.routerRequests
          .snapshot()
          .filter((r) => r.environment === '' || mine.has(r.environment))
          .map((r) => ({ labels: { tenant: r.environment === '' ? '' : tenant, environment: r.environment, status: String(r.status) }, value: r.responses })),
      );
    }

    family('berth_scrape_store_seconds', 'gauge', 'Time this scrape spent reading the store.', [{ labels: { tenant }, value: round6(storeSeconds) }]);
    return families;
  }
}

const OPEN: ReadonlySet<string> = new Set(OPEN_STATUSES);

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

function round6(n: number): number {
  return Math.round(n * 1e6) / 1e6;
}
