/**
 * Copying a store: a busy embedded store (1 000 hosts, claims and invocations over batch edges,
 * environments, tokens, stacks, images, audit entries) into an empty store of each backend —
 * PGlite, and PostgreSQL when the suite has one — row for row, identities going on from there, and
 * a target that holds data already refused with nothing changed.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedLarge } from '../../test/helpers/metrics-seed.js';
import { storeBackends } from '../../test/helpers/stores.js';
import { rejection } from '../../test/helpers/errors.js';
import { DEFAULT_TENANT } from './migrations.js';
import { copyStore, COPY_ORDER, rowCounts } from './store-copy.js';
import { openStore, type Store } from './store.js';

const T = DEFAULT_TENANT;

/** Every row of a table, each value as text (backends differ in how they return bigints and floats). */
async function dump(store: Store, table: string): Promise<string[]> {
  const { rows } = await sql<Record<string, unknown>>`select * from ${sql.table(table)} order by 1`.execute(store.db);
  const text = (v: unknown): unknown => {
    if (v === null || v === undefined) return null;
    if (v instanceof Date) return v.toISOString();
    if (typeof v === 'object') return JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a.localeCompare(b))) : x));
    if (typeof v === 'bigint') return v.toString();
    return typeof v === 'string' ? v : JSON.stringify(v);
  };
  return rows.map((row) => JSON.stringify(Object.entries(row).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, text(v)]))).sort();
}

describe('store copy', () => {
  let source: Store;

  beforeAll(async () => {
    source = await openStore({ dataDir: 'memory://' });
    await seedLarge(source, 700, 1200);
    const db = source.db;
    await db.insertInto('tenants').values({ id: 'acme', name: 'Acme' }).execute();
    await db.insertInto('api_tokens').values([
      { id: 'tok-1', tenant_id: T, name: 'ci', token_hash: 'h1', role: 'use' },
      { id: 'tok-2', tenant_id: 'acme', name: 'ops', token_hash: 'h2', role: 'admin' },
    ]).execute();
    await db.insertInto('groups').values({ tenant_id: T, name: 'alice', labels: JSON.stringify({ team: 'web' }) }).execute();
    await db.insertInto('stacks').values({ tenant_id: T, name: 'shop', spec: JSON.stringify({ name: 'shop', services: { web: { cmd: 'true', env: { A: '1' } } } }), config: JSON.stringify({ common: { GREETING: 'hi' } }) }).execute();
    await db.insertInto('images').values({ tenant_id: T, name: 'web', id: 'a'.repeat(64), current: true, parent: '/', parent_id: null, base: '/', layers: JSON.stringify(['l1', 'l2']), manifest: JSON.stringify({ steps: [{ run: 'x' }] }), size_bytes: 12345.5 }).execute();
    for (let i = 0; i < 3; i++) {
      await db.insertInto('environment_timings').values({ tenant_id: T, environment: `e${i}`, pool: 'pool0', operation: 'create', timings: JSON.stringify({ totalMs: 10 + i }) }).execute();
    }
    for (let i = 0; i < 520; i++) {
      await db.insertInto('audit_log').values({ tenant_id: T, at: new Date(Date.now() - i * 1000), token_id: 'tok-1', token_name: 'ci', method: 'POST', route: '/v1/pools', path: '/v1/pools', status: 201, duration_ms: 1.25, ip: '127.0.0.1' }).execute();
    }
  }, 120_000);
  afterAll(async () => {
    await source.close();
  });

  for (const backend of storeBackends()) {
    it(`copies every row of every table into an empty ${backend.name} store, and refuses one that holds data`, async () => {
      const target = await backend.open();
      try {
        const seen: string[] = [];
        const copied = await copyStore(source, target, (table, _rows, done) => done && seen.push(table));
        expect(seen).toEqual([...COPY_ORDER]);
        const counts = await rowCounts(source.db);
        expect(copied.map((c) => c.table)).toEqual([...COPY_ORDER]);
        expect(Object.fromEntries(await rowCounts(target.db))).toEqual(Object.fromEntries(counts));
        expect(counts.get('hosts')).toBe(1000);
        expect(counts.get('audit_log')).toBe(520);
        for (const table of COPY_ORDER) expect(await dump(target, table), table).toEqual(await dump(source, table));

        // Identities go on after the ids copied.
        const next = await target.db.insertInto('audit_log').values({ tenant_id: T, at: new Date(), method: 'GET', route: '/x', path: '/x', status: 200, duration_ms: 1 }).returning('id').executeTakeFirstOrThrow();
        expect(Number(next.id)).toBeGreaterThan(520);

        // A second copy finds data there: refused, and nothing is added.
        const err = await rejection(copyStore(source, target));
        expect([err.code, err.message]).toEqual(['conflict', expect.stringContaining('the target store holds berth data already (tenants: 1, api_tokens: 2, hosts: 1000')]);
        expect((await rowCounts(target.db)).get('audit_log')).toBe(521);
      } finally {
        await target.close();
      }
    }, 180_000);
  }
});
