/**
 * One server per PostgreSQL database (DatabaseLock): a second server's store is refused while the
 * first holds the database, saying which server holds it; tools that open the store without
 * holding it still can; the database is free again when the first closes, or when its session
 * ends as a killed process's would — and a server whose lock went that way takes it back, or says
 * loudly that another took it.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejection } from '../../test/helpers/errors.js';
import { resetDatabase } from '../../test/helpers/stores.js';
import { waitFor } from '../../test/helpers/wait.js';
import { openStore, type Store } from './store.js';

const url = process.env['BERTH_TEST_DATABASE_URL'];

describe.skipIf(!url && !process.env['CI'])('one server per PostgreSQL database', () => {
  const open: Store[] = [];
  const logs: string[] = [];
  const server = (holder: string) => openStore({ databaseUrl: url, poolSize: 1, exclusive: { holder, log: (line) => logs.push(`${holder}: ${line}`), retakeMs: 100 } });
  beforeAll(async () => {
    if (!url) throw new Error('CI must provide BERTH_TEST_DATABASE_URL');
    await resetDatabase(url);
  });
  afterAll(async () => {
    for (const store of open) await store.close();
  });

  it('refuses a second server while the first holds the database, naming the first', async () => {
    const first = await server('berth server pid 1 on alpha');
    open.push(first);
    const refused = await rejection(server('berth server pid 2 on beta'));
    expect(refused.code).toBe('conflict');
    expect(refused.message).toMatch(/^another berth server is using this database: berth server pid 1 on alpha( from [\d.:a-f]+)?, connected since \d{4}-/);
    expect(refused.hint).toContain('Stop it first');
    // Opening the store without holding it (berth store copy, tools) is not a server: allowed.
    const tool = await openStore({ databaseUrl: url, poolSize: 1 });
    await tool.close();
    await first.close();
    open.pop();
    const next = await server('berth server pid 3 on gamma');
    open.push(next);
  });

  it('frees the database when its holder\'s session ends (a kill), and the holder takes it back or says it was taken', async () => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const kill = (holder: string) => admin.query('select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1', [holder]);
    try {
      // The session ends (the server's process died, or the network did) and nobody else came: taken back.
      await kill('berth server pid 3 on gamma');
      await waitFor('gamma to take it back', () => Promise.resolve(logs.includes('berth server pid 3 on gamma: database lock: taken again') ? true : undefined));
      await open.pop()?.close();
      // A holder that would look again only after a second; another server starts in between: it
      // gets the database (its holder's session is gone), and the first says so, loudly.
      const taken: string[] = [];
      const slow = await openStore({ databaseUrl: url, poolSize: 1, exclusive: { holder: 'berth server pid 5 on epsilon', log: (line) => logs.push(`epsilon: ${line}`), retakeMs: 1_000, onTaken: (by) => taken.push(by) } });
      open.push(slow);
      await kill('berth server pid 5 on epsilon');
      open.push(await server('berth server pid 4 on delta'));
      await waitFor('epsilon to say the database was taken', () => Promise.resolve(logs.some((l) => l.startsWith('epsilon: database lock: ANOTHER SERVER TOOK THIS DATABASE (berth server pid 4 on delta')) ? true : undefined));
      // ...and is told once, to stop acting on it (a server stops: see BerthServer.fenced).
      await waitFor('another attempt', () => Promise.resolve(logs.filter((l) => l.startsWith('epsilon: database lock: ANOTHER')).length >= 2 ? true : undefined));
      expect(taken).toEqual([expect.stringMatching(/^berth server pid 4 on delta/)]);
    } finally {
      await admin.end();
    }
  });

  it('lets a standby wait while another server holds the database, and take it when that one lets go', async () => {
    for (const store of open.splice(0)) await store.close();
    const first = await server('berth server pid 6 on zeta');
    const waiting: string[] = [];
    let started = false;
    const standby = openStore({ databaseUrl: url, poolSize: 1, exclusive: { holder: 'berth server pid 7 on eta', log: () => {}, standby: { onWaiting: (by) => waiting.push(by), pollMs: 50 } } }).then((store) => {
      started = true;
      return store;
    });
    await waitFor('the standby to say who holds the database', () => Promise.resolve(waiting.length > 0 ? true : undefined));
    expect(waiting[0]).toMatch(/^berth server pid 6 on zeta/);
    await new Promise((r) => setTimeout(r, 300));
    expect(started).toBe(false);
    expect(waiting).toHaveLength(1); // said once, not at every look
    await first.close();
    open.push(await standby);
    expect(started).toBe(true);
    const refused = await rejection(server('berth server pid 8 on theta'));
    expect(refused.message).toContain('berth server pid 7 on eta');
  });
});
