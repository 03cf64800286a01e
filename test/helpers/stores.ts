/**
 * The store backends every store test runs against: embedded PGlite always, and PostgreSQL when
 * BERTH_TEST_DATABASE_URL is set (CI always sets it: there a missing URL is an error, not a skip).
 */
import pg from 'pg';
import { openStore, type Store } from '../../src/store/store.js';

export interface StoreBackend {
  name: 'pglite' | 'postgres';
  /** Opens a store on an empty database. */
  open(): Promise<Store>;
}

export function storeBackends(env: NodeJS.ProcessEnv = process.env): StoreBackend[] {
  const backends: StoreBackend[] = [{ name: 'pglite', open: () => openStore({ dataDir: 'memory://' }) }];
  const url = env['BERTH_TEST_DATABASE_URL'];
  if (url) {
    backends.push({
      name: 'postgres',
      open: async () => {
        await resetDatabase(url);
        return openStore({ databaseUrl: url });
      },
    });
  } else if (env['CI']) {
    throw new Error('CI must run the store suite against PostgreSQL: set BERTH_TEST_DATABASE_URL (see scripts/test-postgres.sh)');
  }
  return backends;
}

/** Drops every table of the database at `url` (the test database). */
export async function resetDatabase(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('drop schema if exists public cascade');
    await client.query('create schema public');
  } finally {
    await client.end();
  }
}
