/**
 * Named prepared statements for embedded PGlite. `PGlite.query` sends Parse, Describe, Bind,
 * Describe, Execute and Sync as six separate passes through the WASM backend, and parses and plans
 * the SQL every time; on the hot paths (a Run Command's two writes, a claim's pick) that is half of
 * each statement's cost. Kysely emits the same SQL text for the same query shape, so each text is
 * parsed once into a named statement and every later call is one pass: Bind, Describe, Execute, Sync.
 *
 * Values are serialized exactly as `PGlite.query` does (by the parameter types PostgreSQL inferred
 * when the statement was parsed), and rows are parsed by PGlite's own result parser, so results are
 * the same as through `query`.
 */
import { parse, protocol, type PGlite, type Results } from '@electric-sql/pglite';

interface Prepared {
  name: string;
  serializers: (((value: unknown) => string) | undefined)[];
  /**
   * The statement's RowDescription, from its Describe at prepare time (NoData: none). Every
   * execution's rows have this shape (a table change that alters it fails with PLAN_CHANGED), so it
   * is not asked for again: one message fewer to build in the backend and to parse, per statement.
   */
  rowDescription: BackendMessage | undefined;
}

type BackendMessage = Awaited<ReturnType<PGlite['execProtocol']>>['messages'][number];


/** Statements that are planned once and kept; anything else (DDL, BEGIN, SET) goes through `query`. */
const CACHEABLE = /^\s*(select|insert|update|delete|with)\b/i;
/** PostgreSQL's "cached plan must not change result type": a table changed under a kept statement. */
const PLAN_CHANGED = '0A000';

/** Statement names are unique in the process, so two caches on one database never collide. */
let statementSeq = 0;
/** One cache per database: statement names are per session, and PGlite has one session. */
const byDatabase = new WeakMap<PGlite, PGliteStatements>();

export class PGliteStatements {
  static of(pg: PGlite): PGliteStatements {
    let statements = byDatabase.get(pg);
    if (!statements) byDatabase.set(pg, (statements = new PGliteStatements(pg)));
    return statements;
  }

  private readonly prepared = new Map<string, Prepared>();

  /** `capacity`: statements kept; the least recently used one is closed when another is needed. */
  constructor(
    private readonly pg: PGlite,
    private readonly capacity = 256,
  ) {}

  async query<R>(sqlText: string, params: readonly unknown[]): Promise<Results<R>> {
    if (!CACHEABLE.test(sqlText)) return this.pg.query<R>(sqlText, params as unknown[]);
    const stmt = await this.statement(sqlText);
    const values = params.map((value, i) => {
      if (value === null || value === undefined) return null;
      if (value instanceof Uint8Array) return value;
      const serialize = stmt.serializers[i];
      return serialize ? serialize(value) : asText(value);
    });
    try {
      const { messages } = await this.pg.execProtocol(
        concat([protocol.serialize.bind({ statement: stmt.name, values: values }), protocol.serialize.execute({}), protocol.serialize.sync()]),
      );
      const result = parse.parseResults(stmt.rowDescription ? [stmt.rowDescription, ...messages] : messages, this.pg.parsers)[0];
      return (result ?? { rows: [], fields: [] }) as Results<R>;
    } catch (err) {
      // The statement was planned against an older shape of a table: plan it again next time.
      if ((err as { code?: unknown }).code === PLAN_CHANGED) await this.close(sqlText).catch(() => undefined);
      throw err;
    }
  }

  private async statement(sqlText: string): Promise<Prepared> {
    const kept = this.prepared.get(sqlText);
    if (kept) {
      // Most recently used goes last, so the first entry is always the one to close.
      this.prepared.delete(sqlText);
      this.prepared.set(sqlText, kept);
      return kept;
    }
    if (this.prepared.size >= this.capacity) {
      const oldest = this.prepared.keys().next().value;
      if (oldest !== undefined) await this.close(oldest);
    }
    const name = `berth_${++statementSeq}`;
    const { messages } = await this.pg.execProtocol(concat([protocol.serialize.parse({ name, text: sqlText }), protocol.serialize.describe({ type: 'S', name }), protocol.serialize.sync()]));
    const described = messages.find((m) => m.name === 'parameterDescription') as { dataTypeIDs?: number[] } | undefined;
    // The database's own serializers: PGlite adds one for every array type at start.
    const serializers = this.pg.serializers as Record<number, ((value: unknown) => string) | undefined>;
    const stmt = { name, serializers: (described?.dataTypeIDs ?? []).map((oid) => serializers[oid]), rowDescription: messages.find((m) => m.name === 'rowDescription') };
    this.prepared.set(sqlText, stmt);
    return stmt;
  }

  private async close(sqlText: string): Promise<void> {
    const stmt = this.prepared.get(sqlText);
    if (!stmt) return;
    this.prepared.delete(sqlText);
    await this.pg.execProtocol(concat([protocol.serialize.close({ type: 'S', name: stmt.name }), protocol.serialize.sync()]));
  }
}

/** A value of a type PGlite has no serializer for, as text (JSON for objects). */
function asText(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
    case 'bigint':
    case 'boolean':
      return value.toString();
    default:
      return JSON.stringify(value) ?? '';
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
