/**
 * Commands and their per-host invocations. A command's status is not stored: it is derived from its
 * invocations' statuses whenever it is read, so it can never disagree with them, and recording an
 * invocation's outcome is a single-row write with no transaction (the hot path of Run Command).
 *
 * HOT_PATH_SQL: those two writes (create, then the result) are SQL text rather than built with
 * Kysely: building and compiling the query tree cost ~0.3 ms of server CPU per round trip, about as
 * much as PGlite's own work on the statement. Everything else uses the query builder.
 */
import { CompiledQuery, sql, type Kysely } from 'kysely';
import { aggregateStatus, canTransition, OPEN_STATUSES, type InvocationStatus } from '../core/command-status.js';
import { BerthError } from '../core/errors.js';
import type { CommandRow, Database, InvocationRow, RateControl } from './schema.js';
import type { RateDecision, RateInvocation } from '../commands/rate-control.js';
import { commandEvent, invocationEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';

export interface NewCommand {
  id: string;
  tenantId: string;
  document: string;
  parameters: Record<string, unknown>;
  targets: Record<string, unknown>;
  deliveryTimeoutS: number;
  rateControl?: RateControl | undefined;
  /** The token that sent it; absent: berth itself. */
  createdBy?: { tokenId: string; name: string } | undefined;
  /** `sent` (default: whether it is open): false for one that waits its turn under rate control. */
  invocations: { hostId: string; status: InvocationStatus; statusDetail: string; sent?: boolean }[];
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
  /** Null while it waits its turn under rate control. */
  sentAt: Date | null;
  deliveryTimeoutS: number;
  parameters: Record<string, unknown>;
}

/** What a rate-control step changed: the invocations it sent and those it cancelled. */
export interface RateStep {
  command: CommandRow;
  sent: InvocationRow[];
  cancelled: InvocationRow[];
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
    const rateControl = cmd.rateControl ?? null;
    const params: unknown[] = [cmd.id, cmd.tenantId, cmd.document, JSON.stringify(cmd.parameters), JSON.stringify(cmd.targets), cmd.deliveryTimeoutS, now, rateControl && JSON.stringify(rateControl), cmd.createdBy?.tokenId ?? null, cmd.createdBy?.name ?? null];
    const values = cmd.invocations.map((inv) => {
      params.push(inv.hostId, inv.status, inv.statusDetail, isOpen(inv.status) ? null : now, (inv.sent ?? isOpen(inv.status)) ? now : null);
      const n = params.length;
      return `($1, $${n - 4}, $2, $${n - 3}, $${n - 2}, '[]', $${n - 1}, $7, $${n})`;
    });
    // Hand-written (see HOT_PATH_SQL at the top); the same text for the same number of hosts.
    const { rows: inserted } = await this.db.executeQuery<InvocationRow>(
      CompiledQuery.raw(
        'with "command" as (insert into "commands" ("id", "tenant_id", "document", "parameters", "targets", "delivery_timeout_s", "created_at", "rate_control", "created_by_token", "created_by") values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning "id") ' +
          `insert into "invocations" ("command_id", "host_id", "tenant_id", "status", "status_detail", "exit_codes", "finished_at", "created_at", "sent_at") values ${values.join(', ')} returning *`,
        params,
      ),
    );
    const command: CommandRow = {
      id: cmd.id,
      tenant_id: cmd.tenantId,
      document: cmd.document,
      parameters: cmd.parameters,
      targets: cmd.targets,
      delivery_timeout_s: cmd.deliveryTimeoutS,
      rate_control: rateControl,
      created_by_token: cmd.createdBy?.tokenId ?? null,
      created_by: cmd.createdBy?.name ?? null,
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
      .select(['i.command_id', 'i.host_id', 'i.status', 'i.created_at', 'i.started_at', 'i.sent_at', 'c.delivery_timeout_s', 'c.parameters'])
      .where('i.status', 'in', [...OPEN_STATUSES]);
    if (filter.hostId) q = q.where('i.host_id', '=', filter.hostId);
    const rows = await q.execute();
    return rows.map((r) => ({
      commandId: r.command_id,
      hostId: r.host_id,
      status: r.status as InvocationStatus,
      createdAt: new Date(r.created_at),
      startedAt: r.started_at ? new Date(r.started_at) : null,
      sentAt: r.sent_at ? new Date(r.sent_at) : null,
      deliveryTimeoutS: r.delivery_timeout_s,
      parameters: r.parameters,
    }));
  }

  /**
   * One rate-control step for a command, under a lock on its row (so concurrent steps, here or in
   * another server, never send past the limit): `decide` sees every invocation and names those of
   * the waiting ones to send and to cancel. Each change is a compare-and-set on a still-waiting
   * invocation, so a cancel that got there first wins. Undefined when the command has no rate control.
   */
  async rateStep(commandId: string, decide: (rc: RateControl, invocations: RateInvocation[]) => RateDecision): Promise<RateStep | undefined> {
    const step = await this.db.transaction().execute(async (tx) => {
      const command = await tx.selectFrom('commands').selectAll().where('id', '=', commandId).forUpdate().executeTakeFirst();
      if (!command?.rate_control) return undefined;
      const rows = await tx.selectFrom('invocations').select(['host_id', 'status', 'sent_at']).where('command_id', '=', commandId).execute();
      const decision = decide(
        command.rate_control,
        rows.map((r) => ({ hostId: r.host_id, status: r.status as InvocationStatus, sentAt: r.sent_at ? new Date(r.sent_at) : null })),
      );
      const now = new Date();
      const update = (hostIds: string[], set: { sent_at: Date; status_detail: string } | { status: 'Cancelled'; status_detail: string; finished_at: Date }) =>
        hostIds.length === 0
          ? []
          : tx.updateTable('invocations').set(set).where('command_id', '=', commandId).where('host_id', 'in', hostIds).where('status', '=', 'Pending').where('sent_at', 'is', null).returningAll().execute();
      const sent = await update(decision.send, { sent_at: now, status_detail: '' });
      const cancelled = await update(decision.cancel, { status: 'Cancelled', status_detail: decision.cancelDetail, finished_at: now });
      return { command, sent, cancelled };
    });
    for (const row of step?.cancelled ?? []) this.events.emit(invocationEvent(row, ['Pending']));
    return step;
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
    if (from.length === 0) return undefined;
    const params: unknown[] = [];
    const set: string[] = [];
    const assign = (column: string, value: unknown, wrap = (p: string) => p) => {
      params.push(value);
      set.push(`"${column}" = ${wrap(`$${params.length}`)}`);
    };
    assign('status', outcome.status);
    assign('status_detail', outcome.statusDetail);
    if (outcome.exitCodes) assign('exit_codes', JSON.stringify(outcome.exitCodes));
    for (const [name, stream] of [['stdout', outcome.stdout], ['stderr', outcome.stderr]] as const) {
      if (!stream) continue;
      assign(name, stream.text);
      assign(`${name}_truncated`, stream.truncated);
      assign(`${name}_bytes`, clampInt(stream.bytes));
    }
    if (outcome.startedAt) {
      assign('started_at', outcome.startedAt);
      assign('delivered_at', outcome.startedAt, (p) => `coalesce("delivered_at", ${p})`);
    }
    if (outcome.finishedAt) assign('finished_at', outcome.finishedAt);
    params.push(commandId, hostId, ...from);
    const n = params.length;
    const statuses = from.map((_, i) => `$${n - from.length + 1 + i}`).join(', ');
    // Hand-written (see HOT_PATH_SQL at the top); the same text for the same set of fields.
    const { rows } = await this.db.executeQuery<InvocationRow>(
      CompiledQuery.raw(`update "invocations" set ${set.join(', ')} where "command_id" = $${n - from.length - 1} and "host_id" = $${n - from.length} and "status" in (${statuses}) returning *`, params),
    );
    const row = rows[0];
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
    sent_at: date(row.sent_at),
    delivered_at: date(row.delivered_at),
    started_at: date(row.started_at),
    finished_at: date(row.finished_at),
  };
}

function clampInt(n: number): number {
  return Math.min(n, 2_147_483_647);
}
