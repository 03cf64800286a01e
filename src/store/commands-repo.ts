/**
 * Commands and their per-host invocations. A command's status is not stored: it is derived from its
 * invocations' statuses whenever it is read, so it can never disagree with them, and recording an
 * invocation's outcome is a single-row write with no transaction (the hot path of Run Command).
 */
import { sql, type Kysely } from 'kysely';
import { aggregateStatus, canTransition, OPEN_STATUSES, type InvocationStatus } from '../core/command-status.js';
import { BerthError } from '../core/errors.js';
import type { CommandRow, Database, InvocationRow } from './schema.js';
import { commandEvent, invocationEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';

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

export interface OpenInvocation {
  commandId: string;
  hostId: string;
  status: InvocationStatus;
  createdAt: Date;
  startedAt: Date | null;
  deliveryTimeoutS: number;
  parameters: Record<string, unknown>;
}

const isOpen = (status: string): boolean => (OPEN_STATUSES as readonly string[]).includes(status);

export class CommandsRepo {
  /** `events`: commands as they are created and every invocation's status change are reported there. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly events: EventSink = NO_EVENTS,
  ) {}

  /**
   * One statement (a data-modifying CTE): the command and all its invocations, or nothing. Returns
   * the rows as stored.
   */
  async create(cmd: NewCommand): Promise<{ command: CommandRow; invocations: InvocationRow[] }> {
    const now = new Date();
    const rows = cmd.invocations.map((inv) => ({
      command_id: cmd.id,
      host_id: inv.hostId,
      tenant_id: cmd.tenantId,
      status: inv.status,
      status_detail: inv.statusDetail,
      exit_codes: '[]',
      finished_at: isOpen(inv.status) ? null : now,
    }));
    const inserted = await this.db
      .with('command', (db) =>
        db
          .insertInto('commands')
          .values({
            id: cmd.id,
            tenant_id: cmd.tenantId,
            document: cmd.document,
            parameters: JSON.stringify(cmd.parameters),
            targets: JSON.stringify(cmd.targets),
            delivery_timeout_s: cmd.deliveryTimeoutS,
            created_at: now,
          })
          .returning('id'),
      )
      .insertInto('invocations')
      .values(rows.map((r) => ({ ...r, created_at: now })))
      .returningAll()
      .execute();
    const command: CommandRow = {
      id: cmd.id,
      tenant_id: cmd.tenantId,
      document: cmd.document,
      parameters: cmd.parameters,
      targets: cmd.targets,
      delivery_timeout_s: cmd.deliveryTimeoutS,
      created_at: now,
    };
    this.events.emit(commandEvent(cmd.tenantId, cmd.id, aggregateStatus(cmd.invocations.map((i) => i.status)), cmd.invocations.map((i) => i.hostId)));
    for (const inv of inserted) this.events.emit(invocationEvent(inv));
    return { command, invocations: inserted };
  }

  /** A command and its invocations in one query (it is read at the end of every Run Command). */
  async get(tenantId: string, id: string): Promise<{ command: CommandRow; invocations: InvocationRow[] } | undefined> {
    const row = await this.db
      .selectFrom('commands as c')
      .selectAll('c')
      .select((eb) =>
        eb
          .selectFrom('invocations as i')
          .select(sql<InvocationRow[]>`coalesce(json_agg(i order by i.host_id), '[]'::json)`.as('list'))
          .whereRef('i.command_id', '=', 'c.id')
          .as('invocations'),
      )
      .where('c.tenant_id', '=', tenantId)
      .where('c.id', '=', id)
      .executeTakeFirst();
    if (!row) return undefined;
    const { invocations, ...command } = row;
    return { command, invocations: (invocations ?? []).map(reviveInvocation) };
  }

  /** The newest commands with their invocations, two queries whatever the count. */
  async list(tenantId: string, limit: number): Promise<{ command: CommandRow; invocations: InvocationRow[] }[]> {
    const commands = await this.db.selectFrom('commands').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at', 'desc').orderBy('id').limit(limit).execute();
    const invocations = await this.invocationsOf(commands.map((c) => c.id));
    return commands.map((command) => ({ command, invocations: invocations.filter((i) => i.command_id === command.id) }));
  }

  async statusesOf(commandId: string): Promise<InvocationStatus[]> {
    const rows = await this.db.selectFrom('invocations').select('status').where('command_id', '=', commandId).execute();
    return rows.map((r) => r.status as InvocationStatus);
  }

  async openInvocations(filter: { hostId?: string } = {}): Promise<OpenInvocation[]> {
    let q = this.db
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

  /**
   * Moves one invocation from one of `from` to a new status: a compare-and-set, so of two racing
   * reports (a result and a timeout, say) exactly one wins. Returns the updated row, or undefined
   * when nothing changed.
   */
  async updateInvocation(commandId: string, hostId: string, from: readonly InvocationStatus[], outcome: InvocationOutcome): Promise<InvocationRow | undefined> {
    for (const status of from) {
      if (!canTransition(status, outcome.status)) {
        throw new BerthError('invalid_state', `invocation ${commandId}/${hostId} cannot go from ${status} to ${outcome.status}`, 'This is a bug in berth; please report it.');
      }
    }
    const row = await this.db
      .updateTable('invocations')
      .set({
        status: outcome.status,
        status_detail: outcome.statusDetail,
        ...(outcome.exitCodes ? { exit_codes: JSON.stringify(outcome.exitCodes) } : {}),
        ...(outcome.stdout ? { stdout: outcome.stdout.text, stdout_truncated: outcome.stdout.truncated, stdout_bytes: clampInt(outcome.stdout.bytes) } : {}),
        ...(outcome.stderr ? { stderr: outcome.stderr.text, stderr_truncated: outcome.stderr.truncated, stderr_bytes: clampInt(outcome.stderr.bytes) } : {}),
        ...(outcome.startedAt ? { started_at: outcome.startedAt, delivered_at: sql<Date>`coalesce(delivered_at, ${outcome.startedAt})` } : {}),
        ...(outcome.finishedAt ? { finished_at: outcome.finishedAt } : {}),
      })
      .where('command_id', '=', commandId)
      .where('host_id', '=', hostId)
      .where('status', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
    if (row) this.events.emit(invocationEvent(row, from));
    return row;
  }

  private async invocationsOf(commandIds: string[]): Promise<InvocationRow[]> {
    if (commandIds.length === 0) return [];
    return this.db.selectFrom('invocations').selectAll().where('command_id', 'in', commandIds).orderBy('command_id').orderBy('host_id').execute();
  }
}

/** json_agg gives timestamps as strings; the rest of the code expects what a plain select gives. */
function reviveInvocation(row: InvocationRow): InvocationRow {
  const date = (v: Date | string | null) => (v === null ? null : new Date(v));
  return {
    ...row,
    created_at: new Date(row.created_at),
    delivered_at: date(row.delivered_at),
    started_at: date(row.started_at),
    finished_at: date(row.finished_at),
  };
}

function clampInt(n: number): number {
  return Math.min(n, 2_147_483_647);
}
