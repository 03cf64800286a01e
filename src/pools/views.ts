import { toHostView, type HostView } from '../hosts/views.js';
import type { PoolCounts } from '../store/pools-repo.js';
import type { ClaimRow, HostRow, PoolRow } from '../store/schema.js';
import type { PoolProgress } from './reconciler.js';
import { readSchedule } from './schedule.js';

export interface PoolHostFields {
  pool: string | null;
  generation: number | null;
  slot: string | null;
  group: string | null;
  claimId: string | null;
}

export type PoolHostView = HostView & PoolHostFields;

export interface ClaimView {
  id: string;
  state: string;
  pool: string;
  group: string;
  hit: boolean | null;
  attempts: number;
  idempotencyKey: string | null;
  timings: Record<string, number>;
  error: Record<string, unknown> | null;
  createdAt: string;
  finishedAt: string | null;
  host: PoolHostView | null;
}

export interface PoolView {
  name: string;
  image: string;
  generation: number;
  size: number;
  maxSize: number;
  maxLaunching: number;
  maxIdleAge: number | null;
  warmup: string[];
  healthCheck: { command: string; interval: number; timeout: number } | null;
  onEmpty: string;
  onRelease: string;
  /** Sized by demand between `size` and `max` ready hosts (see `status.targetSize`); null: fixed. */
  demand: { max: number; window: number; leadTime: number | null } | null;
  /** Sized by the clock: the first rule whose cron holds gives the size (see `status.schedule`); null: fixed. */
  schedule: { timezone: string; rules: { cron: string; size: number }[] } | null;
  template: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

export interface PoolStatusView extends PoolView {
  status: {
    /** Waiting hosts a claim can take now (their agents are connected). */
    ready: number;
    /** Waiting hosts whose agents have not redialled yet (after a server restart): claims wait for them. */
    reconnecting: number;
    warming: number;
    claiming: number;
    claimed: number;
    quarantined: number;
    retiring: number;
    /** Waiting hosts of an older generation (or idle too long) not yet replaced. */
    stale: number;
    /** Ready hosts the pool keeps now: `size` or what its schedule gives, or what demand asks for (up to demand.max). */
    targetSize: number;
    /** What the schedule gives now (rule: the one that holds, null: none, so `size`) and next; null without a schedule. */
    schedule: { size: number; rule: number | null; next: { at: string; size: number; rule: number | null } | null } | null;
    /** What set the target: the most claims within one lead time during the window; null without demand. */
    demand: { peak: number; leadTimeS: number } | null;
    full: boolean;
    /** True while hosts of an older generation remain in the pool. */
    rolling: boolean;
    notFullReason: string;
    hits: number;
    misses: number;
    idleHostSeconds: number;
    consecutiveFailures: number;
    lastFailure: { reason: string; at: string } | null;
    claimLatency: { leMs: number | null; count: number }[];
    /** Null when nothing ever claimed from the pool: its ready hosts are pure cost. */
    lastClaimAt: string | null;
  };
}

export function toPoolHostView(row: HostRow, connected: boolean): PoolHostView {
  return { ...toHostView(row, connected), pool: row.pool, generation: row.generation, slot: row.slot, group: row.group_name, claimId: row.claim_id };
}

export function toClaimView(row: ClaimRow, host: HostRow | undefined, connected: boolean): ClaimView {
  return {
    id: row.id,
    state: row.state,
    pool: row.pool,
    group: row.group_name,
    hit: row.hit,
    attempts: row.attempts,
    idempotencyKey: row.idempotency_key,
    timings: row.timings,
    error: row.error,
    createdAt: new Date(row.created_at).toISOString(),
    finishedAt: row.finished_at ? new Date(row.finished_at).toISOString() : null,
    host: host ? toPoolHostView(host, connected) : null,
  };
}

export function toPoolView(row: PoolRow): PoolView {
  return {
    name: row.name,
    image: row.image,
    generation: row.generation,
    size: row.size,
    maxSize: row.max_size,
    maxLaunching: row.max_launching,
    maxIdleAge: row.max_idle_age_s,
    warmup: row.warmup,
    healthCheck: row.health_check ? { command: row.health_check.command, interval: row.health_check.intervalS, timeout: row.health_check.timeoutS } : null,
    onEmpty: row.on_empty,
    onRelease: row.on_release,
    demand: row.demand ? { max: row.demand.max, window: row.demand.windowS, leadTime: row.demand.leadTimeS } : null,
    schedule: row.schedule,
    template: row.template as unknown as Record<string, unknown>,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

export function toPoolStatusView(
  row: PoolRow,
  counts: PoolCounts,
  progress: PoolProgress,
  extra: { currentIdleSeconds: number; claimLatency: { leMs: number | null; count: number }[]; lastClaimAt: Date | null; scheduleAt: Date },
): PoolStatusView {
  const reading = row.demand ? progress.demand : undefined;
  const scheduled = row.schedule ? readSchedule(`${row.tenant_id}/${row.name}`, row.size, row.schedule, extra.scheduleAt) : undefined;
  const target = reading?.target ?? scheduled?.size ?? row.size;
  return {
    ...toPoolView(row),
    status: {
      ready: counts.ready,
      reconnecting: counts.reconnecting,
      warming: counts.warming,
      claiming: counts.claiming,
      claimed: counts.claimed,
      quarantined: counts.quarantined,
      retiring: counts.retiring,
      stale: counts.stale,
      targetSize: target,
      schedule: scheduled ? { size: scheduled.size, rule: scheduled.rule, next: scheduled.next ? { ...scheduled.next, at: scheduled.next.at.toISOString() } : null } : null,
      demand: reading ? { peak: reading.peak, leadTimeS: reading.leadTimeS } : null,
      full: counts.ready >= target,
      rolling: counts.stale > 0,
      notFullReason: counts.ready >= target ? '' : notFullReason(counts, target, progress),
      hits: row.hits,
      misses: row.misses,
      idleHostSeconds: Math.round((row.idle_host_seconds + extra.currentIdleSeconds) * 10) / 10,
      consecutiveFailures: row.consecutive_failures,
      lastFailure: row.last_failure ? { reason: row.last_failure, at: new Date(row.last_failure_at ?? row.updated_at).toISOString() } : null,
      claimLatency: extra.claimLatency,
      lastClaimAt: extra.lastClaimAt ? extra.lastClaimAt.toISOString() : null,
    },
  };
}

function notFullReason(counts: PoolCounts, target: number, progress: PoolProgress): string {
  // The reconciler counts these hosts as ready (it must not replace them): say what is missing.
  if (counts.reconnecting > 0 && counts.ready + counts.reconnecting >= target) return `${counts.reconnecting} ready host(s) waiting for their agents to reconnect`;
  return progress.notFullReason;
}
