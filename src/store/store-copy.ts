/**
 * Copies one store into another: how an installation that outgrew the embedded PGlite moves its
 * state (pools, groups, claims, hosts, commands, images, stacks, environments, tokens, audit log)
 * into PostgreSQL, which several servers can share (`berth store copy --to postgres://…`). Both
 * stores are migrated to the same schema first; the target must hold no berth data yet. Every row
 * goes over in one transaction on the target, so a copy that fails leaves the target as it was.
 */
import { sql, type Kysely } from 'kysely';
import { BerthError } from '../core/errors.js';
import { DEFAULT_TENANT } from './migrations.js';
import type { Database } from './schema.js';
import type { Store } from './store.js';

/** Every table of the schema, parents before the tables that reference them. */
export const COPY_ORDER = [
  'tenants',
  'api_tokens',
  'hosts',
  'commands',
  'invocations',
  'pools',
  'groups',
  'claims',
  'images',
  'stacks',
  'environments',
  'environment_timings',
  'audit_log',
] as const;

/** Rows per INSERT: well under PostgreSQL's 65 535 parameters for the widest table. */
const BATCH = 500;

export interface CopiedTable {
  table: string;
  rows: number;
}

type AnyDb = Kysely<Record<string, Record<string, unknown>>>;

/** Each table's primary key columns, in key order: pages of rows read in that order never overlap. */
async function primaryKeys(db: Kysely<Database>): Promise<Map<string, string[]>> {
  const { rows } = await sql<{ table_name: string; column_name: string }>`
    select k.table_name, k.column_name
    from information_schema.table_constraints c
    join information_schema.key_column_usage k on k.constraint_name = c.constraint_name and k.table_schema = c.table_schema and k.table_name = c.table_name
    where c.constraint_type = 'PRIMARY KEY' and c.table_schema = 'public'
    order by k.table_name, k.ordinal_position`.execute(db);
  const keys = new Map<string, string[]>();
  for (const row of rows) keys.set(row.table_name, [...(keys.get(row.table_name) ?? []), row.column_name]);
  return keys;
}

/** The schema's own tables (not the migrator's), with the columns each holds and their types. */
async function tablesOf(db: Kysely<Database>): Promise<Map<string, { name: string; type: string }[]>> {
  const { rows } = await sql<{ table_name: string; column_name: string; data_type: string }>`
    select c.table_name, c.column_name, c.data_type
    from information_schema.columns c join information_schema.tables t on t.table_name = c.table_name and t.table_schema = c.table_schema
    where c.table_schema = 'public' and t.table_type = 'BASE TABLE' and c.table_name not like 'kysely_%'
    order by c.table_name, c.ordinal_position`.execute(db);
  const tables = new Map<string, { name: string; type: string }[]>();
  for (const row of rows) {
    const columns = tables.get(row.table_name) ?? [];
    columns.push({ name: row.column_name, type: row.data_type });
    tables.set(row.table_name, columns);
  }
  return tables;
}

/** Rows in each table, without the default tenant every migrated store starts with. */
export async function rowCounts(db: Kysely<Database>): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const table of COPY_ORDER) {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} ${table === 'tenants' ? sql`where id <> ${DEFAULT_TENANT}` : sql``}`.execute(db);
    counts.set(table, Number(rows[0]?.n ?? 0));
  }
  return counts;
}

/** `progress`: rows of `table` copied so far, after each batch and (`done`) once the table is. */
export async function copyStore(source: Store, target: Store, progress: (table: string, rows: number, done: boolean) => void = () => {}): Promise<CopiedTable[]> {
  const tables = await tablesOf(source.db);
  const known = new Set<string>(COPY_ORDER);
  const unknown = [...tables.keys()].filter((t) => !known.has(t));
  // A table added to the schema must be added to COPY_ORDER, or it would be left behind.
  if (unknown.length > 0) throw new BerthError('internal', `the store has tables this copy does not know: ${unknown.join(', ')}`, 'This is a bug in berth: please report it.');
  const held = [...(await rowCounts(target.db))].filter(([, n]) => n > 0);
  if (held.length > 0) {
    throw new BerthError('conflict', `the target store holds berth data already (${held.map(([t, n]) => `${t}: ${n}`).join(', ')})`, 'Copy into an empty database (createdb), or drop this one\'s tables first.');
  }
  const keys = await primaryKeys(source.db);
  const copied: CopiedTable[] = [];
  await target.db.transaction().execute(async (tx) => {
    for (const table of COPY_ORDER) {
      const columns = tables.get(table) ?? [];
      const order = keys.get(table) ?? columns.map((c) => c.name);
      let rows = 0;
      for (let offset = 0; ; offset += BATCH) {
        const query = order.reduce((q, column) => q.orderBy(column), (source.db as unknown as AnyDb).selectFrom(table).selectAll());
        const batch = (await query.offset(offset).limit(BATCH).execute()) as Record<string, unknown>[];
        if (batch.length === 0) break;
        await insertRows(tx, table, columns, batch);
        rows += batch.length;
        if (batch.length < BATCH) break;
        progress(table, rows, false);
      }
      // Identity columns go on from the highest id copied.
      for (const column of columns.filter((c) => c.name === 'id' && c.type === 'bigint')) {
        await sql`select setval(pg_get_serial_sequence(${table}, ${column.name}), coalesce((select max(id) from ${sql.table(table)}), 0) + 1, false)`.execute(tx);
      }
      copied.push({ table, rows });
      progress(table, rows, true);
    }
  });
  return copied;
}

async function insertRows(tx: Kysely<Database>, table: string, columns: readonly { name: string; type: string }[], rows: readonly Record<string, unknown>[]): Promise<void> {
  const value = (v: unknown, type: string): unknown => {
    if (v === null || v === undefined) return null;
    if (type === 'jsonb' || type === 'json') return JSON.stringify(v);
    return typeof v === 'bigint' ? v.toString() : v;
  };
  const tuples = rows.map((row) => sql`(${sql.join(columns.map((c) => sql`${value(row[c.name], c.type)}`))})`);
  // The default tenant is there already (every migrated store starts with it), with a config hash
  // key of its own: it takes the source's, or every stack host's config hash would change.
  const conflict = table === 'tenants' ? sql`on conflict (id) do update set ${sql.join(columns.filter((c) => c.name !== 'id').map((c) => sql`${sql.ref(c.name)} = excluded.${sql.ref(c.name)}`))}` : sql``;
  await sql`insert into ${sql.table(table)} (${sql.join(columns.map((c) => sql.ref(c.name)))}) overriding system value values ${sql.join(tuples)} ${conflict}`.execute(tx);
}
