/** Prepared statements give the same rows as PGlite's own query, and survive what a session meets. */
import { PGlite } from '@electric-sql/pglite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PGliteStatements } from './pglite-statements.js';

let pg: PGlite;

beforeAll(async () => {
  pg = await PGlite.create();
  await pg.exec(`create table t (id text primary key, n int, big bigint, ok boolean, at timestamptz, doc jsonb, tags text[])`);
});
afterAll(async () => {
  await pg.close();
});

describe('PGlite prepared statements', () => {
  it('serializes values and parses rows exactly as PGlite.query does', async () => {
    const statements = new PGliteStatements(pg);
    const at = new Date('2026-11-22T10:00:00.123Z');
    const insert = 'insert into t (id, n, big, ok, at, doc, tags) values ($1, $2, $3, $4, $5, $6, $7) returning *';
    const viaStatements = await statements.query<Record<string, unknown>>(insert, ['a', 7, 9007199254740993n, true, at, JSON.stringify({ k: [1, 'x'] }), ['x', 'y']]);
    const viaQuery = await pg.query(insert, ['b', 7, 9007199254740993n, true, at, JSON.stringify({ k: [1, 'x'] }), ['x', 'y']]);
    expect({ ...viaStatements.rows[0], id: 'b' }).toEqual(viaQuery.rows[0]);
    expect(viaStatements.rows[0]).toMatchObject({ n: 7, ok: true, at, doc: { k: [1, 'x'] }, tags: ['x', 'y'] });
    expect(viaStatements.fields.map((f) => f.name)).toEqual(['id', 'n', 'big', 'ok', 'at', 'doc', 'tags']);
    // Same text again: the kept statement, with new values (and nulls).
    const again = await statements.query<{ id: string; n: number | null }>(insert, ['c', null, null, null, null, null, null]);
    expect(again.rows).toEqual([{ id: 'c', n: null, big: null, ok: null, at: null, doc: null, tags: null }]);
    const updated = await statements.query('update t set n = n + 1 where id = any($1)', [['a', 'b', 'zz']]);
    expect(updated.affectedRows).toBe(2);
    expect(updated.rows).toEqual([]);
  });

  it('closes the least recently used statement when full, and keeps working', async () => {
    const statements = new PGliteStatements(pg, 2);
    const count = async () => (await pg.query<{ n: number }>(`select count(*)::int as n from pg_prepared_statements where name like 'berth_%'`)).rows[0]?.n ?? 0;
    const before = await count();
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 5; i++) {
        const r = await statements.query<{ v: number }>(`select $1::int + ${i} as v`, [round]);
        expect(r.rows).toEqual([{ v: round + i }]);
      }
    }
    expect((await count()) - before).toBe(2);
  });

  it('plans a statement again when its table changed shape', async () => {
    const statements = new PGliteStatements(pg);
    await pg.exec(`create table shape (a int)`);
    await pg.exec(`insert into shape values (1)`);
    expect((await statements.query('select * from shape', [])).rows).toEqual([{ a: 1 }]);
    await pg.exec(`alter table shape add column b int default 2`);
    // PostgreSQL refuses the old plan once (0A000); the next call prepares it afresh.
    const first = await statements.query('select * from shape', []).then(
      (r) => r.rows,
      (err: unknown) => (err as { code?: string }).code,
    );
    expect([[{ a: 1, b: 2 }], '0A000']).toContainEqual(first);
    expect((await statements.query('select * from shape', [])).rows).toEqual([{ a: 1, b: 2 }]);
  });

  it('reports errors with their code and leaves the session usable, in and out of transactions', async () => {
    const statements = new PGliteStatements(pg);
    await expect(statements.query('select * from nowhere', [])).rejects.toMatchObject({ code: '42P01' });
    await expect(statements.query('insert into t (id) values ($1)', ['a'])).rejects.toMatchObject({ code: '23505' });
    await statements.query('begin', []);
    await expect(statements.query('insert into t (id) values ($1)', ['a'])).rejects.toMatchObject({ code: '23505' });
    await expect(statements.query('select 1 as one', [])).rejects.toMatchObject({ code: '25P02' });
    await statements.query('rollback', []);
    expect((await statements.query('select 1 as one', [])).rows).toEqual([{ one: 1 }]);
  });
});
