/** The shape of commands and invocations as the API and the CLI show them. */
import { aggregateStatus, isTerminal, type InvocationStatus } from '../core/command-status.js';
import type { CommandRow, InvocationRow } from '../store/schema.js';
import type { LiveOutput } from './live-output.js';
import { ERROR_STATUSES } from './rate-control.js';

/** The longest executionTimeout the API takes (48 h, as SSM's AWS-RunShellScript allows). */
export const MAX_EXECUTION_TIMEOUT_SECONDS = 172_800;
/** The longest grace between TERM and KILL a command may ask for (10 min). */
export const MAX_KILL_GRACE_SECONDS = 600;

export interface InvocationView {
  hostId: string;
  status: string;
  statusDetail: string;
  exitCodes: number[];
  stdout: string;
  stderr: string;
  /** True when either stream was cut to its head and tail. */
  truncated: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  stdoutBytes: number;
  stderrBytes: number;
  sentAt: string | null;
  deliveredAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface CommandView {
  id: string;
  status: string;
  document: string;
  parameters: Record<string, unknown>;
  targets: Record<string, unknown>;
  deliveryTimeoutSeconds: number;
  /** Rate control as the user gave it ("2", "25%"); null: none. */
  maxConcurrency: string | null;
  maxErrors: string | null;
  counts: { targets: number; sent: number; completed: number; errors: number };
  /** The token that sent it (its id and name); null: berth itself (a claim's init, a warm-up). */
  createdBy: { tokenId: string; name: string } | null;
  createdAt: string;
  completedAt: string | null;
  invocations: InvocationView[];
}

const iso = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);

export function toCommandView(command: CommandRow, invocations: InvocationRow[], live?: LiveOutput): CommandView {
  const status = aggregateStatus(invocations.map((i) => i.status as InvocationStatus));
  const finished = invocations.map((i) => (i.finished_at ? new Date(i.finished_at).getTime() : 0));
  return {
    id: command.id,
    status,
    document: command.document,
    parameters: command.parameters,
    targets: command.targets,
    deliveryTimeoutSeconds: command.delivery_timeout_s,
    maxConcurrency: command.rate_control?.maxConcurrency?.spec ?? null,
    maxErrors: command.rate_control?.maxErrors?.spec ?? null,
    counts: {
      targets: invocations.length,
      sent: invocations.filter((i) => i.sent_at !== null).length,
      completed: invocations.filter((i) => isTerminal(i.status as InvocationStatus)).length,
      errors: invocations.filter((i) => ERROR_STATUSES.includes(i.status as InvocationStatus)).length,
    },
    createdBy: command.created_by_token ? { tokenId: command.created_by_token, name: command.created_by ?? '' } : null,
    createdAt: new Date(command.created_at).toISOString(),
    completedAt: isTerminal(status) && finished.length > 0 ? new Date(Math.max(...finished)).toISOString() : null,
    invocations: invocations.map((inv) => toInvocationView(inv, live)),
  };
}

function toInvocationView(inv: InvocationRow, live?: LiveOutput): InvocationView {
  // While an invocation is open its output so far lives in memory; once settled, in the store.
  const snapshot = isTerminal(inv.status as InvocationStatus) ? undefined : live?.snapshot(inv.command_id, inv.host_id);
  const stdout = snapshot?.stdout ?? { text: inv.stdout, truncated: inv.stdout_truncated, bytes: inv.stdout_bytes };
  const stderr = snapshot?.stderr ?? { text: inv.stderr, truncated: inv.stderr_truncated, bytes: inv.stderr_bytes };
  return {
    hostId: inv.host_id,
    status: inv.status,
    statusDetail: inv.status_detail,
    exitCodes: inv.exit_codes,
    stdout: stdout.text,
    stderr: stderr.text,
    truncated: stdout.truncated || stderr.truncated,
    stdoutTruncated: stdout.truncated,
    stderrTruncated: stderr.truncated,
    stdoutBytes: stdout.bytes,
    stderrBytes: stderr.bytes,
    sentAt: iso(inv.sent_at),
    deliveredAt: iso(inv.delivered_at),
    startedAt: iso(inv.started_at),
    finishedAt: iso(inv.finished_at),
  };
}
