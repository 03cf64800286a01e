/**
 * The control plane on a real PostgreSQL server (CI always has one): hosts and commands work as on
 * the embedded store, two data dirs can use one database in turn, each with its own token, and a
 * second server is refused while one runs on it.
 */
import pg from 'pg';
import { hostname } from 'node:os';
import { openStore, type Store } from '../../src/store/store.js';
import { afterAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { HostView } from '../../src/hosts/views.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { agentBundleDir } from '../../src/cli/paths.js';
import { LocalDriver } from '../../src/drivers/local/index.js';
import { BerthServer } from '../../src/server/berth-server.js';
import { rejection } from '../helpers/errors.js';
import { driverConfig, startServer, tempDataDir, type InProcessServer } from '../helpers/server.js';

const url = process.env['BERTH_TEST_DATABASE_URL'];
const NET = { bridge: 'berthpgs0', subnet: '10.223.0.0/24', cgroupName: 'berthpgs' };
const THIRD = { bridge: 'berthpgs1', subnet: '10.223.1.0/24', cgroupName: 'berthpgs1' };

describe.skipIf(!url && !process.env['CI'])('control plane on PostgreSQL', () => {
  const servers: InProcessServer[] = [];
  afterAll(async () => {
    for (const srv of servers.reverse()) await srv.stop();
  });

  it('launches a host, runs a command, lets a second data dir use the database after it, and refuses a third beside it', async () => {
    if (!url) throw new Error('CI must provide BERTH_TEST_DATABASE_URL');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('drop schema if exists public cascade');
    await client.query('create schema public');
    await client.end();

    const first = await startServer(NET, { databaseUrl: url });
    servers.push(first);
    expect(first.server.store.kind).toBe('postgres');
    const host = (await first.api.post<HostView>('/v1/hosts', { tags: { store: 'pg' } })).body;
    expect(host.state).toBe('running');
    const run = await first.api.post<CommandView>('/v1/commands', { targets: { tags: { store: 'pg' } }, parameters: { commands: ['echo from-pg'] }, wait: 20 });
    expect(run.body.status).toBe('Success');
    expect(run.body.invocations[0]?.stdout).toBe('from-pg\n');
    await first.api.delete(`/v1/hosts/${host.id}`);
    await first.stop();
    servers.pop();

    // Another data dir (another token) on the same database: it starts, and its token works.
    const second = await startServer(NET, { databaseUrl: url });
    servers.push(second);
    expect(second.server.token).not.toBe(first.server.token);
    const listed = await second.api.get<{ commands: CommandView[] }>('/v1/commands');
    expect(listed.status).toBe(200);
    expect(listed.body.commands.map((c) => c.id)).toContain(run.body.id);

    // A server on a database another server is using is refused, naming it, and holds nothing.
    const dataDir = await tempDataDir('pg-third');
    const driver = new LocalDriver(driverConfig(dataDir, THIRD));
    try {
      const refused = await rejection(BerthServer.start({ dataDir, port: 0, agentPort: 0, driver, agentDir: agentBundleDir(), databaseUrl: url, log: () => {}, router: { port: 0 } }));
      expect(refused.code).toBe('conflict');
      expect(refused.message).toMatch(new RegExp(`^another berth server is using this database: berth server pid ${process.pid} on `));
      expect(existsSync(join(dataDir, 'server.pid'))).toBe(false);
    } finally {
      await driver.teardown();
      await rm(dataDir, { recursive: true, force: true });
    }
    expect((await second.api.get('/v1/hosts')).status).toBe(200);
  });

  it('runs a claim storm on PostgreSQL: distinct hosts, counted once, the pool refilled', async () => {
    const srv = servers[servers.length - 1];
    if (!srv) throw new Error('no server');
    expect((await srv.api.post('/v1/pools', { name: 'pg-pool', size: 4, maxLaunching: 4 })).status).toBe(201);
    const full = async () => {
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const pool = (await srv.api.get<PoolStatusView>('/v1/pools/pg-pool')).body;
        if (pool.status.ready === 4 && pool.status.warming === 0) return pool;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('the pool did not fill');
    };
    await full();
    const seen = new Set<string>();
    const problems: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < 60) {
        const n = next++;
        const res = await srv.api.post<ClaimView>('/v1/pools/pg-pool/claims', { group: `pg-${n}`, init: ['true'], idempotencyKey: `pg-${n}` });
        const id = res.body.host?.id;
        if (res.status !== 201 || !id) {
          problems.push(`claim ${n}: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
          continue;
        }
        if (seen.has(id)) problems.push(`host ${id} handed out twice`);
        seen.add(id);
        const again = await srv.api.post<ClaimView>('/v1/pools/pg-pool/claims', { group: `pg-${n}`, init: ['true'], idempotencyKey: `pg-${n}` });
        if (again.body.host?.id !== id) problems.push(`claim ${n}: the same key gave another host`);
        await srv.api.post(`/v1/hosts/${id}/release`, {});
      }
    };
    await Promise.all(Array.from({ length: 12 }, worker));
    expect(problems).toEqual([]);
    expect(seen.size).toBe(60);
    const after = await full();
    expect(after.status.hits + after.status.misses).toBe(60);
    expect(after.status.claimLatency.reduce((sum, b) => sum + b.count, 0)).toBe(60);
  }, 180_000);

  it('stops a server whose database another took while its connection was down', async () => {
    if (!url) throw new Error('CI must provide BERTH_TEST_DATABASE_URL');
    const srv = servers[servers.length - 1];
    if (!srv) throw new Error('no server');
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    let other: Store | undefined;
    try {
      // Its connection holding the database ends (a network break), and another server starts meanwhile.
      await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1', [`berth server pid ${process.pid} on ${hostname()}`]);
      other = await openStore({ databaseUrl: url, poolSize: 1, exclusive: { holder: 'berth server pid 9 on elsewhere', log: () => {} } });
      // When it looks again it finds the other: it stops rather than act beside it.
      const fenced = await Promise.race([srv.server.fenced, new Promise<string>((_, reject) => setTimeout(() => reject(new Error('not stopped within 15 s')), 15_000))]);
      expect(fenced).toMatch(/^berth server pid 9 on elsewhere/);
      await expect(fetch(`${srv.server.url}/v1/health`)).rejects.toThrow();
    } finally {
      await other?.close();
      await admin.end();
    }
    // Once the other lets go, a server started on the data dir adopts what the stopped one left.
    const next = await startServer(NET, { dataDir: srv.dataDir, databaseUrl: url });
    servers[servers.length - 1] = next;
    expect(next.server.recovered.adopted.length).toBeGreaterThan(0);
  }, 30_000);
});
