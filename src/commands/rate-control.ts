/**
 * Run Command's rate control across many targets, as SSM's SendCommand has it:
 *   - maxConcurrency: at most this many invocations sent and not yet finished at once; the others
 *     wait, Pending, and are sent one by one as earlier ones finish (their delivery timeout counts
 *     from when they are sent, not while they wait their turn);
 *   - maxErrors: once more invocations than this have failed, no further one is sent; those still
 *     waiting end Cancelled with a detail that says why, and those already running finish.
 * Each is a count or a percentage of the command's targets ("10" or "10%"). As in SSM, Undeliverable
 * invocations (no agent connected when the command was sent) do not count as errors; Failed,
 * TimedOut and DeliveryTimedOut do.
 *
 * This file decides; the store applies the decision under a lock on the command (commands-repo.ts),
 * so two invocations finishing at once never send more than the limit allows.
 */
import { BerthError } from '../core/errors.js';
import type { InvocationStatus } from '../core/command-status.js';
import type { RateControl } from '../store/schema.js';

export type { RateControl, RateLimit } from '../store/schema.js';

/** Statuses that count against maxErrors. */
export const ERROR_STATUSES: readonly InvocationStatus[] = ['Failed', 'TimedOut', 'DeliveryTimedOut'];
const OPEN: readonly InvocationStatus[] = ['Pending', 'InProgress', 'Cancelling'];

const SPEC_RE = /^(\d{1,9})(%?)$/;

/**
 * Resolves the request's limits against the number of targets; undefined when there are none.
 * Percentages: maxConcurrency rounds up (never below 1), maxErrors rounds down (10% of 5 targets
 * allows no error), so neither ever lets more through than the user asked for.
 */
export function resolveRateControl(req: { maxConcurrency?: number | string | undefined; maxErrors?: number | string | undefined }, targets: number): RateControl | undefined {
  if (req.maxConcurrency === undefined && req.maxErrors === undefined) return undefined;
  const rc: RateControl = { targets };
  if (req.maxConcurrency !== undefined) {
    const { value, percent, spec } = parseSpec('maxConcurrency', req.maxConcurrency, 1);
    rc.maxConcurrency = { spec, limit: percent ? Math.max(1, Math.ceil((targets * value) / 100)) : value };
  }
  if (req.maxErrors !== undefined) {
    const { value, percent, spec } = parseSpec('maxErrors', req.maxErrors, 0);
    rc.maxErrors = { spec, limit: percent ? Math.floor((targets * value) / 100) : value };
  }
  return rc;
}

function parseSpec(name: string, raw: number | string, min: number): { value: number; percent: boolean; spec: string } {
  const spec = String(raw).trim();
  const match = SPEC_RE.exec(spec);
  const value = match ? Number(match[1]) : NaN;
  const percent = match?.[2] === '%';
  if (!match || value < min || (percent && value > 100)) {
    throw new BerthError(
      'validation_failed',
      `${name} ${JSON.stringify(raw)} is not ${min === 1 ? 'a positive' : 'a non-negative'} whole number or a percentage of the targets`,
      `Give a count such as ${min === 1 ? '2' : '0'} or a percentage such as 10% (at most 100%).`,
      { field: name },
    );
  }
  return { value, percent, spec };
}

export interface RateInvocation {
  hostId: string;
  status: InvocationStatus;
  /** When the server sent it to its agent; null while it waits its turn (or was never sendable). */
  sentAt: Date | null;
}

export interface RateDecision {
  /** Waiting invocations to send now, in host id order. */
  send: string[];
  /** Waiting invocations that will never be sent: the error threshold was passed. */
  cancel: string[];
  /** Why they are cancelled (their status detail). */
  cancelDetail: string;
}

/** A waiting invocation: Pending and never sent (an Undeliverable one is already terminal). */
export function isWaiting(inv: { status: string; sentAt: Date | null }): boolean {
  return inv.status === 'Pending' && inv.sentAt === null;
}

/** What to do with a rate-controlled command's waiting invocations now. */
export function decide(rc: RateControl, invocations: readonly RateInvocation[]): RateDecision {
  const waiting = invocations.filter(isWaiting).map((i) => i.hostId).sort();
  const errors = invocations.filter((i) => ERROR_STATUSES.includes(i.status)).length;
  if (rc.maxErrors && errors > rc.maxErrors.limit) {
    return { send: [], cancel: waiting, cancelDetail: `not sent: ${errors} invocation${errors === 1 ? '' : 's'} failed, more than maxErrors ${rc.maxErrors.spec} allows` };
  }
  const running = invocations.filter((i) => i.sentAt !== null && OPEN.includes(i.status)).length;
  const room = rc.maxConcurrency ? Math.max(0, rc.maxConcurrency.limit - running) : waiting.length;
  return { send: waiting.slice(0, room), cancel: [], cancelDetail: '' };
}

/** A step that cancels every waiting invocation (a user's cancel), with `detail`. */
export function cancelWaiting(detail: string): (rc: RateControl, invocations: readonly RateInvocation[]) => RateDecision {
  return (_rc, invocations) => ({ send: [], cancel: invocations.filter(isWaiting).map((i) => i.hostId), cancelDetail: detail });
}

/** The detail a waiting invocation shows. */
export function waitingDetail(rc: RateControl): string {
  return rc.maxConcurrency ? `waiting its turn: maxConcurrency ${rc.maxConcurrency.spec} (${rc.maxConcurrency.limit} at a time)` : 'waiting to be sent';
}
