/**
 * `berth store copy` end to end: a server on the embedded store with a pool, a token and a
 * command; stopped with its hosts running; its store copied into PostgreSQL by the CLI; then a
 * server on the same data dir and that database adopts the hosts and knows all of it, while a
 * server started without the database refuses the stale embedded copy.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { berth, startServer, tempDataDir, type InProcessServer } from '../helpers/server.js';
import { resetDatabase } from '../helpers/stores.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';

const url = process.env['BERTH_TEST_DATABASE_URL'];
const NET = { bridge: 'berthsto0', subnet: '10.249.0.0/24', cgroupName: 'berthsto' };

describe.skipIf(!url && !process.env['CI'])('berth store copy', () => {
  it('moves a live installation from the embedded store into PostgreSQL: the next server adopts its hosts and knows its pools, tokens and commands', async () => {
    if (!url) throw new Error('CI must provide BERTH_TEST_DATABASE_URL');
    await resetDatabase(url);
    const dataDir = await tempDataDir('store-copy');
    // A fixed agent port: after the move, the agents dial the same address again.
    const agentPort = await freePort();
    let srv: InProcessServer | undefined = await startServer(NET, { dataDir, agentPort });
    try {
      expect((await srv.api.post('/v1/pools', { name: 'keep', size: 1, healthCheck: { command: 'true' } })).status).toBe(201);
      const ready = await waitFor('the pool full', async () => {
        const pool = (await srv?.api.get<PoolStatusView>('/v1/pools/keep'))?.body;
        return pool?.status.ready === 1 ? pool : undefined;
      }, { timeoutMs: 30_000 });
      expect(ready.status.ready).toBe(1);
      const token = await srv.api.post<{ token: string }>('/v1/tokens', { name: 'ci', role: 'use' });
      expect(token.status).toBe(201);
      const poolHosts = (await srv.api.get<{ hosts: { id: string }[] }>('/v1/pools/keep/hosts')).body.hosts.map((h) => h.id);
      const run = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: poolHosts }, parameters: { commands: ['echo before-the-move'] }, wait: 20 });
      expect(run.body.status, JSON.stringify(run.body)).toBe('Success');
      await srv.stop({ removeHosts: false });
      srv = undefined;

      const env = { BERTH_DATA_DIR: dataDir };
      const copied = await berth(['store', 'copy', '--to', url], env, { timeoutMs: 120_000 });
      expect(copied.code, copied.stderr).toBe(0);
      expect(copied.stdout).toMatch(/^copied \d+ rows in [\d.]+ s to postgres:\/\/berth:\*\*\*@/);
      expect(copied.stderr).toMatch(/ {2}hosts +1 rows\n/);
      expect(copied.stderr).not.toContain(':berth@');
      expect(existsSync(join(dataDir, 'store-moved.json'))).toBe(true);
      // Again: the data dir's store has moved, so there is nothing to copy.
      const again = await berth(['store', 'copy', '--to', url], env);
      expect([again.code, again.stderr]).toEqual([2, expect.stringContaining('was copied to postgres://berth:***@')]);
      const notPg = await berth(['store', 'copy', '--to', '/tmp/x.db'], env);
      expect([notPg.code, notPg.stderr]).toEqual([2, expect.stringContaining('give a PostgreSQL URL')]);

      // Without the database, the stale embedded copy is refused.
      await expect(startServer(NET, { dataDir, agentPort })).rejects.toThrow(/was copied to postgres/);

      srv = await startServer(NET, { dataDir, databaseUrl: url, agentPort });
      expect(srv.server.store.kind).toBe('postgres');
      const pool = await waitFor('the pool host adopted', async () => {
        const p = (await srv?.api.get<PoolStatusView>('/v1/pools/keep'))?.body;
        return p?.status.ready === 1 ? p : undefined;
      }, { timeoutMs: 30_000 });
      expect(pool.status).toMatchObject({ ready: 1, warming: 0 });
      const hosts = (await srv.api.get<{ hosts: { id: string; agent: { connected: boolean } }[] }>('/v1/hosts')).body.hosts;
      const all = (await srv.api.get<{ hosts: { id: string; state: string; stateReason: string }[] }>('/v1/hosts?all=true')).body.hosts;
      expect(hosts.map((h) => h.id), JSON.stringify(all)).toEqual([run.body.invocations[0]?.hostId]);
      await waitFor('its agent back', async () => ((await srv?.api.get<{ agent: { connected: boolean } }>(`/v1/hosts/${hosts[0]?.id ?? ''}`))?.body.agent.connected ? true : undefined));
      const old = await srv.api.get<CommandView>(`/v1/commands/${run.body.id}`);
      expect(old.body.invocations[0]?.stdout).toBe('before-the-move\n');
      const tokens = (await srv.api.get<{ tokens: { name: string }[] }>('/v1/tokens')).body.tokens.map((t) => t.name);
      expect(tokens).toContain('ci');
      const asCi = await fetch(`${srv.server.url}/v1/pools`, { headers: { authorization: `Bearer ${token.body.token}` } });
      expect(asCi.status).toBe(200);
      const claim = await srv.api.post<ClaimView>('/v1/pools/keep/claims', { group: 'after', init: ['echo claimed'] });
      expect([claim.status, claim.body.hit]).toEqual([201, true]);
    } finally {
      await srv?.stop();
      if (url) await resetDatabase(url);
    }
  }, 180_000);
});
