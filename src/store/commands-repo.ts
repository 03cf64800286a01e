/** Commands and their per-host invocations. */
import type { Kysely, Transaction } from 'kysely';
import type { CommandStatus, InvocationStatus } from '../core/command-status.js';
import { OPEN_STATUSES } from '../core/command-status.js';
import type { CommandRow, Database, InvocationRow } from './schema.js';

export interface NewCommand {
  id: string;
  tenantId: string;
  document: string;
  parameters: Record<string, unknown>;
  targets: Record<string, unknown>;
  deliveryTimeoutS: number;
  invocations: { hostId: string; status: InvocationStatus; statusDetail: string }[];
}

export interface InvocationOutcome {
  status: InvocationStatus;
  statusDetail: string;
  exitCodes?: number[];
  stdout?: { text: string; truncated: boolean; bytes: number };
  stderr?: { text: string; truncated: boolean; bytes: number };
  startedAt?: Date;
  finishedAt?: Date;
}

export class CommandsRepo {
  constructor(private readonly db: Kysely<Database>) {}

  async create(cmd: NewCommand, status: CommandStatus): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx
        .insertInto('commands')
        .values({
          id: cmd.id,
          tenant_id: cmd.tenantId,
          document: cmd.document,
          parameters: JSON.stringify(cmd.parameters),
          targets: JSON.stringify(cmd.targets),
          status,
          delivery_timeout_s: cmd.deliveryTimeoutS,
          ...(isTerminalNow(status) ? { completed_at: new Date() } : {}),
        })
        .execute();
      await tx
        .insertInto('invocations')
        .values(
          cmd.invocations.map((inv) => ({
            command_id: cmd.id,
            host_id: inv.hostId,
            tenant_id: cmd.tenantId,
            status: inv.status,
            status_detail: inv.statusDetail,
            exit_codes: '[]',
            ...(isTerminalNow(inv.status) ? { finished_at: new Date() } : {}),
          })),
        )
        .execute();
    });
  }

  async get(tenantId: string, id: string): Promise<{ command: CommandRow; invocations: InvocationRow[] } | undefined> {
    const command = await this.db.selectFrom('commands').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    if (!command) return undefined;
    const invocations = await this.db.selectFrom('invocations').selectAll().where('command_id', '=', id).orderBy('host_id').execute();
    return { command, invocations };
  }

  async list(tenantId: string, limit: number): Promise<CommandRow[]> {
    return this.db.selectFrom('commands').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at', 'desc').limit(limit).execute();
  }

  async getInvocation(commandId: string, hostId: string): Promise<InvocationRow | undefined> {
    return this.db.selectFrom('invocations').selectAll().where('command_id', '=', commandId).where('host_id', '=', hostId).executeTakeFirst();
  }

  async openInvocations(filter: { hostId?: string } = {}): Promise<OpenInvocation[]> {
    return listOpenInvocations(this.db, filter);
  }

  /**
   * Moves one invocation from one of `from` to a new status (compare-and-set), then recomputes the
   * command's aggregate status in the same transaction. Returns the command's new status, or undefined
   * when the invocation had already moved on (nothing changed).
   */
  async updateInvocation(
    commandId: string,
    hostId: string,
    from: readonly InvocationStatus[],
    outcome: InvocationOutcome,
    aggregate: (statuses: InvocationStatus[]) => CommandStatus,
  ): Promise<CommandStatus | undefined> {
    return this.db.transaction().execute(async (tx) => {
      const updated = await tx
        .updateTable('invocations')
        .set({
          status: outcome.status,
          status_detail: outcome.statusDetail,
          ...(outcome.exitCodes ? { exit_codes: JSON.stringify(outcome.exitCodes) } : {}),
          ...(outcome.stdout ? { stdout: outcome.stdout.text, stdout_truncated: outcome.stdout.truncated, stdout_bytes: clampInt(outcome.stdout.bytes) } : {}),
          ...(outcome.stderr ? { stderr: outcome.stderr.text, stderr_truncated: outcome.stderr.truncated, stderr_bytes: clampInt(outcome.stderr.bytes) } : {}),
          ...(outcome.startedAt ? { started_at: outcome.startedAt } : {}),
          ...(outcome.finishedAt ? { finished_at: outcome.finishedAt } : {}),
          ...(outcome.status === 'InProgress' ? { delivered_at: new Date() } : {}),
        })
        .where('command_id', '=', commandId)
        .where('host_id', '=', hostId)
        .where('status', 'in', [...from])
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) === 0) return undefined;
      return refreshCommandStatus(tx, commandId, aggregate);
    });
  }
}

async function refreshCommandStatus(
  tx: Transaction<Database>,
  commandId: string,
  aggregate: (statuses: InvocationStatus[]) => CommandStatus,
): Promise<CommandStatus> {
  const rows = await tx.selectFrom('invocations').select('status').where('command_id', '=', commandId).execute();
  const status = aggregate(rows.map((r) => r.status as InvocationStatus));
  await tx
    .updateTable('commands')
    .set({ status, completed_at: isTerminalNow(status) ? new Date() : null })
    .where('id', '=', commandId)
    .execute();
  return status;
}

function isTerminalNow(status: string): boolean {
  return !(OPEN_STATUSES as readonly string[]).includes(status);
}

function clampInt(n: number): number {
  return Math.min(n, 2_147_483_647);
}

export interface OpenInvocation {
  commandId: string;
  hostId: string;
  status: InvocationStatus;
  createdAt: Date;
  startedAt: Date | null;
  deliveryTimeoutS: number;
  parameters: Record<string, unknown>;
}

/** Open invocations with what their deadlines need, for the timeout sweep and reconnect reconciliation. */
export async function listOpenInvocations(db: Kysely<Database>, filter: { hostId?: string } = {}): Promise<OpenInvocation[]> {
  let q = db
    .selectFrom('invocations as i')
    .innerJoin('commands as c', 'c.id', 'i.command_id')
    .select(['i.command_id', 'i.host_id', 'i.status', 'i.created_at', 'i.started_at', 'c.delivery_timeout_s', 'c.parameters'])
    .where('i.status', 'in', [...OPEN_STATUSES]);
  if (filter.hostId) q = q.where('i.host_id', '=', filter.hostId);
  const rows = await q.execute();
  return rows.map((r) => ({
    commandId: r.command_id,
    hostId: r.host_id,
    status: r.status as InvocationStatus,
    createdAt: new Date(r.created_at),
    startedAt: r.started_at ? new Date(r.started_at) : null,
    deliveryTimeoutS: r.delivery_timeout_s,
    parameters: r.parameters,
  }));
}
