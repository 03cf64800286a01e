/**
 * What the dashboard shows, at one moment, as one JSON document: the pools (their counts as `berth
 * pool show --json` gives them, their claims, savings and level over time), the spin-up latency
 * histogram, the hosts, the environments and the recent commands. Pool counts come from the pool
 * service, claim outcomes, savings and the histogram from the metrics collector: the very numbers
 * the CLI and /metrics report. Nothing from config that may be secret is copied in: environment
 * settings and command env are left out (names only, or nothing).
 */
import type { CommandView } from '../commands/views.js';
import type { EnvironmentView } from '../environments/views.js';
import type { HostSummary } from '../hosts/views.js';
import type { MetricFamily } from '../metrics/exposition.js';
import type { PoolStatusView } from '../pools/views.js';
import type { LevelSample, PoolLevels } from './pool-levels.js';

export interface DashboardSources {
  pools: { list(tenantId: string, opts: { withClaimHistory: false }): Promise<PoolStatusView[]> };
  hosts: { summaries(tenantId: string): Promise<HostSummary[]> };
  environments: { list(tenantId: string): Promise<EnvironmentView[]> };
  commands: { list(tenantId: string, limit?: number): Promise<CommandView[]> };
  metrics: { collect(tenantId: string): Promise<MetricFamily[]> };
  levels: PoolLevels;
  /** What one host costs an hour (for idle cost); unset: cost is shown in host-hours only. */
  hostHourPrice?: { amount: number; currency: string } | undefined;
  /** Recent commands shown (default 25). */
  commandLimit?: number;
}

/** A pool as `berth pool show --json` gives it (without the claim history the metrics give), and what the dashboard adds. */
export interface PoolPanel extends Pick<PoolStatusView, 'name' | 'image' | 'generation' | 'size' | 'maxSize'>, Omit<PoolStatusView['status'], 'claimLatency' | 'lastClaimAt'> {
  failed: number;
  rollbacks: number;
  /** hits / (hits + misses); null before the first claim. */
  hitRate: number | null;
  /** Idle host-seconds priced at hostHourPrice; null without a price. */
  idleCost: number | null;
  coldClaimSeconds: number | null;
  secondsSaved: number | null;
  /** Refills: hosts launched for the pool and how long, on average, until ready in it (boot, warm-up, health check). */
  refills: number;
  refillMeanMs: number | null;
  levels: LevelSample[];
}

export interface LatencyHistogram {
  /** Upper bounds, ms, of every bucket but the last (which is +Inf). */
  boundsMs: number[];
  /** Claims per bucket (not cumulative), boundsMs.length + 1 of them. */
  counts: number[];
  count: number;
  sumMs: number;
}

/** A row of the hosts table: the host service's summary. */
export type HostRowView = HostSummary;

export interface EnvironmentRowView {
  name: string;
  stack: string;
  pool: string;
  mode: string;
  user: string | null;
  state: string;
  stateReason: string;
  url: string | null;
  settingNames: string[];
  hosts: number;
  /** The latest create, deploy or wake's timings; `operation` says which. */
  timings: Record<string, number>;
  operation: string | null;
  private: boolean;
  createdAt: string;
}

export interface CommandRowView {
  id: string;
  status: string;
  summary: string;
  createdAt: string;
  completedAt: string | null;
  invocations: Record<string, number>;
}

export interface DashboardSnapshot {
  at: string;
  buildMs: number;
  price: { amount: number; currency: string } | null;
  totals: {
    hosts: number;
    poolReady: number;
    environments: number;
    claims: { hit: number; miss: number; failed: number };
    invocations: Record<string, number>;
    routerRequests: number;
    serviceRestarts: number;
  };
  pools: PoolPanel[];
  latency: LatencyHistogram;
  hosts: HostRowView[];
  environments: EnvironmentRowView[];
  commands: CommandRowView[];
}

export async function buildSnapshot(src: DashboardSources, tenantId: string): Promise<DashboardSnapshot> {
  const t0 = performance.now();
  // One after another: on PGlite they queue anyway, on PostgreSQL a snapshot holds one connection.
  const families = await src.metrics.collect(tenantId);
  const pools = await src.pools.list(tenantId, { withClaimHistory: false });
  const hosts = await src.hosts.summaries(tenantId);
  const environments = await src.environments.list(tenantId);
  const commands = await src.commands.list(tenantId, src.commandLimit ?? 25);
  const at = Date.now();
  src.levels.record(tenantId, pools.map((p) => ({ pool: p.name, ready: p.status.ready, warming: p.status.warming, claimed: p.status.claimed })), at);

  const metric = (name: string) => families.find((f) => f.name === name)?.samples ?? [];
  const byPool = (name: string, extra: Record<string, string> = {}) => {
    const out = new Map<string, number>();
    for (const s of metric(name)) {
      if (Object.entries(extra).every(([k, v]) => s.labels[k] === v)) out.set(s.labels['pool'] ?? '', (out.get(s.labels['pool'] ?? '') ?? 0) + s.value);
    }
    return out;
  };
  const failed = byPool('berth_claims_total', { outcome: 'failed' });
  const rollbacks = byPool('berth_claim_rollbacks_total');
  const cold = byPool('berth_pool_cold_claim_seconds');
  const saved = byPool('berth_pool_seconds_saved');
  const refillSum = new Map<string, number>();
  const refillCount = new Map<string, number>();
  for (const x of metric('berth_pool_refill_seconds')) {
    const into = x.suffix === '_sum' ? refillSum : x.suffix === '_count' ? refillCount : undefined;
    into?.set(x.labels['pool'] ?? '', x.value);
  }
  const price = src.hostHourPrice ?? null;

  const poolPanels: PoolPanel[] = pools.map((p) => {
    const { claimLatency: _latency, lastClaimAt: _last, ...status } = p.status;
    const claims = status.hits + status.misses;
    const refills = refillCount.get(p.name) ?? 0;
    return {
      name: p.name,
      image: p.image,
      generation: p.generation,
      size: p.size,
      maxSize: p.maxSize,
      ...status,
      failed: failed.get(p.name) ?? 0,
      rollbacks: rollbacks.get(p.name) ?? 0,
      hitRate: claims === 0 ? null : status.hits / claims,
      idleCost: price === null ? null : round2((status.idleHostSeconds / 3600) * price.amount),
      coldClaimSeconds: cold.get(p.name) ?? null,
      secondsSaved: saved.get(p.name) ?? null,
      refills,
      refillMeanMs: refills === 0 ? null : Math.round(((refillSum.get(p.name) ?? 0) / refills) * 10_000) / 10,
      levels: src.levels.history(tenantId, p.name),
    };
  });

  const claimTotals = (outcome: string) => [...byPool('berth_claims_total', { outcome }).values()].reduce((a, b) => a + b, 0);
  const invocations: Record<string, number> = {};
  for (const name of ['berth_command_invocations_total', 'berth_command_invocations_open']) {
    for (const s of metric(name)) invocations[s.labels['status'] ?? ''] = (invocations[s.labels['status'] ?? ''] ?? 0) + s.value;
  }
  return {
    at: new Date(at).toISOString(),
    buildMs: Math.round((performance.now() - t0) * 10) / 10,
    price,
    totals: {
      hosts: hosts.length,
      poolReady: pools.reduce((n, p) => n + p.status.ready, 0),
      environments: environments.length,
      claims: { hit: claimTotals('hit'), miss: claimTotals('miss'), failed: claimTotals('failed') },
      invocations,
      routerRequests: metric('berth_router_requests_total').reduce((n, s) => n + s.value, 0),
      serviceRestarts: metric('berth_service_restarts_total').reduce((n, s) => n + s.value, 0),
    },
    pools: poolPanels,
    latency: claimLatency(metric('berth_claim_duration_seconds')),
    hosts,
    environments: environments.map(environmentRow),
    commands: commands.map(commandRow),
  };
}

/**
 * The spin-up histogram: the claims' `total` stage, hits and misses of every pool added up, from
 * the cumulative Prometheus buckets into counts per bucket.
 */
export function claimLatency(samples: MetricFamily['samples']): LatencyHistogram {
  const cumulative = new Map<string, number>();
  let count = 0;
  let sumS = 0;
  for (const s of samples) {
    if (s.labels['stage'] !== 'total' || (s.labels['outcome'] !== 'hit' && s.labels['outcome'] !== 'miss')) continue;
    if (s.suffix === '_bucket') cumulative.set(s.labels['le'] ?? '', (cumulative.get(s.labels['le'] ?? '') ?? 0) + s.value);
    else if (s.suffix === '_count') count += s.value;
    else if (s.suffix === '_sum') sumS += s.value;
  }
  const bounds = [...cumulative.entries()].filter(([le]) => le !== '+Inf').sort(([a], [b]) => Number(a) - Number(b));
  const counts: number[] = [];
  let below = 0;
  for (const upTo of [...bounds.map(([, n]) => n), count]) {
    counts.push(upTo - below);
    below = upTo;
  }
  return { boundsMs: bounds.map(([le]) => Math.round(Number(le) * 1e6) / 1e3), counts, count, sumMs: Math.round(sumS * 1e6) / 1e3 };
}

function environmentRow(e: EnvironmentView): EnvironmentRowView {
  return {
    name: e.name,
    stack: e.stack,
    pool: e.pool,
    mode: e.mode,
    user: e.user,
    state: e.state,
    stateReason: e.stateReason,
    url: e.url,
    settingNames: e.settings,
    hosts: e.hosts.length,
    timings: e.timings,
    operation: e.operation,
    private: e.private,
    createdAt: e.createdAt,
  };
}

function commandRow(c: CommandView): CommandRowView {
  const lines = Array.isArray(c.parameters['commands']) ? (c.parameters['commands'] as unknown[]).filter((l): l is string => typeof l === 'string') : [];
  const first = lines[0] ?? '';
  const summary = (first.length > 120 ? `${first.slice(0, 117)}…` : first) + (lines.length > 1 ? ` (+${lines.length - 1} more)` : '');
  const invocations: Record<string, number> = {};
  for (const inv of c.invocations) invocations[inv.status] = (invocations[inv.status] ?? 0) + 1;
  return { id: c.id, status: c.status, summary, createdAt: c.createdAt, completedAt: c.completedAt, invocations };
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
