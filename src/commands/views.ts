/** The shape of commands and invocations as the API and the CLI show them. */
import type { CommandRow, InvocationRow } from '../store/schema.js';
import type { LiveOutput } from './live-output.js';

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
  createdAt: string;
  completedAt: string | null;
  invocations: InvocationView[];
}

const iso = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);

export function toCommandView(command: CommandRow, invocations: InvocationRow[], live?: LiveOutput): CommandView {
  return {
    id: command.id,
    status: command.status,
    document: command.document,
    parameters: command.parameters,
    targets: command.targets,
    deliveryTimeoutSeconds: command.delivery_timeout_s,
    createdAt: new Date(command.created_at).toISOString(),
    completedAt: iso(command.completed_at),
    invocations: invocations.map((inv) => toInvocationView(inv, live)),
  };
}

function toInvocationView(inv: InvocationRow, live?: LiveOutput): InvocationView {
  const running = inv.status === 'InProgress' || inv.status === 'Cancelling';
  const snapshot = running ? live?.snapshot(inv.command_id, inv.host_id) : undefined;
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
    deliveredAt: iso(inv.delivered_at),
    startedAt: iso(inv.started_at),
    finishedAt: iso(inv.finished_at),
  };
}
