/**
 * Opens the store: embedded PGlite in the data dir by default, PostgreSQL when a URL is given.
 * Both run the same migrations and the same queries.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Kysely, Migrator, PostgresDialect } from 'kysely';
import { BerthError, errorMessage } from '../core/errors.js';
import { PGliteDialect } from './pglite-dialect.js';
import { DatabaseLock, type DatabaseLockOptions } from './database-lock.js';
import { migrationProvider } from './migrations.js';
import type { Database } from './schema.js';

export type StoreKind = 'pglite' | 'postgres';

export interface StoreConfig {
  /** PostgreSQL connection string; when absent the embedded store under `dataDir` is used. */
  databaseUrl?: string | undefined;
  /** Directory for the embedded store (`<dataDir>/db`); `memory://` keeps it in memory (tests). */
  dataDir?: string | undefined;
  /** Connections in the PostgreSQL pool. */
  poolSize?: number;
  /**
   * A server's store: on PostgreSQL, the database is held for this process (DatabaseLock) and a
   * second server is refused. `holder` names this server to that one.
   */
  exclusive?: DatabaseLockOptions;
}

export interface Store {
  readonly kind: StoreKind;
  readonly db: Kysely<Database>;
  close(): Promise<void>;
}

export async function openStore(config: StoreConfig): Promise<Store> {
  const store = config.databaseUrl ? await openPostgres(config.databaseUrl, config.poolSize ?? 8, config.exclusive) : await openPGlite(config.dataDir);
  try {
    await migrate(store.db);
  } catch (err) {
    await store.close();
    throw new BerthError('internal', `store migration failed: ${errorMessage(err)}`, 'Check the database is reachable and not used by an incompatible berth version.', undefined, { cause: err });
  }
  return store;
}

async function openPGlite(dataDir: string | undefined): Promise<Store> {
  const { PGlite } = await import('@electric-sql/pglite');
  let location: string | undefined;
  if (dataDir && dataDir !== 'memory://') {
    location = join(dataDir, 'db');
    await mkdir(location, { recursive: true });
  }
  const pg = location ? await PGlite.create(location) : await PGlite.create();
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pg) });
  return {
    kind: 'pglite',
    db,
    async close() {
      await db.destroy();
      await pg.close();
    },
  };
}

async function openPostgres(url: string, poolSize: number, exclusive: StoreConfig['exclusive']): Promise<Store> {
  const pg = await import('pg');
  const pool = new pg.default.Pool({ connectionString: url, max: poolSize });
  let lock: DatabaseLock | undefined;
  try {
    const client = await pool.connect();
    client.release();
    if (exclusive) lock = await DatabaseLock.take(pg.default.Client, url, exclusive);
  } catch (err) {
    await pool.end();
    if (err instanceof BerthError) throw err;
    throw new BerthError('internal', `cannot connect to PostgreSQL: ${errorMessage(err)}`, 'Check BERTH_DATABASE_URL (postgres://user:pass@host:5432/db) and that the server is running.', undefined, { cause: err });
  }
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    kind: 'postgres',
    db,
    async close() {
      await db.destroy();
      await lock?.release();
    },
  };
}

async function migrate(db: Kysely<Database>): Promise<void> {
  const migrator = new Migrator({ db, provider: migrationProvider });
  const { error } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error('migration failed', { cause: error });
}
