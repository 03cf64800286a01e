/**
 * A standby control plane on AWS (moto) and PostgreSQL: a second server started with `standby`
 * waits while the first holds the database, saying which server it waits for (and answering 503
 * `standby` on its API address, for readiness probes); when the first
 * stops, it starts on the same agent address, adopts the pool's instances (their agents dial it
 * again), and serves claims on them. The machines are real agents standing in for moto's
 * instances (test/helpers/emulated-fleet.ts).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsDriver } from '../../src/drivers/aws/aws-driver.js';
import { agentBundleDir } from '../../src/cli/paths.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { BerthServer } from '../../src/server/berth-server.js';
import { motoDriverConfig } from '../drivers/aws-fixtures.js';
import { startFleetServer, type FleetServer } from '../helpers/aws-fleet-server.js';
import { motoAvailable } from '../helpers/moto.js';
import { freePort } from '../helpers/ports.js';
import { Api } from '../helpers/server.js';
import { resetDatabase } from '../helpers/stores.js';
import { waitFor } from '../helpers/wait.js';

const NAME = 'bstandby';
const url = process.env['BERTH_TEST_DATABASE_URL'];

describe.skipIf(!motoAvailable('AWS standby server') || (!url && !process.env['CI']))('a standby server on AWS and PostgreSQL', () => {
  let h: FleetServer;
  let standbyDriver: AwsDriver | undefined;
  let standby: BerthServer | undefined;

  beforeAll(async () => {
    if (!url) throw new Error('CI must provide BERTH_TEST_DATABASE_URL');
    await resetDatabase(url);
    h = await startFleetServer(NAME, { databaseUrl: url });
  }, 60_000);

  afterAll(async () => {
    await standby?.stop();
    standbyDriver?.close();
    await h?.stop();
  }, 60_000);

  it('waits for the database, then takes over the pool: its instances reconnect and are claimed through it', async () => {
    expect((await h.api.post<PoolStatusView>('/v1/pools', { name: 'web', size: 2, onEmpty: 'fail' })).status).toBe(201);
    await waitFor('the pool full', async () => ((await h.api.get<PoolStatusView>('/v1/pools/web')).body.status.ready >= 2 ? true : undefined), { timeoutMs: 60_000 });
    const before = (await h.api.get<{ hosts: Array<{ id: string }> }>('/v1/pools/web/hosts')).body.hosts.map((x) => x.id).sort();

    // The standby: another data dir, the same database, the same agent address (as a moved IP or DNS name would be).
    const steps: string[] = [];
    standbyDriver = new AwsDriver(motoDriverConfig(h.moto.endpoint, h.net, NAME, { agentListenHost: '127.0.0.1' }));
    let started = false;
    const apiPort = await freePort();
    const starting = BerthServer.start({
      dataDir: join(h.dir, 'standby'),
      port: apiPort,
      agentPort: Number(new URL(h.server.agentUrl).port),
      driver: standbyDriver,
      agentDir: agentBundleDir(),
      databaseUrl: url,
      standby: true,
      progress: (step) => steps.push(step),
      log: () => {},
      monitorIntervalMs: 500,
      router: { port: 0 },
    }).then((server) => {
      started = true;
      standby = server;
      return server;
    });
    await waitFor('the standby to say whom it waits for', () => Promise.resolve(steps.some((s) => s.startsWith('standing by: another server holds the database (berth server pid')) ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    expect(started).toBe(false);
    // Meanwhile its API address answers, 503: a readiness probe sees it is not the active server.
    const probe = await fetch(`http://127.0.0.1:${apiPort}/v1/health`);
    expect(probe.status).toBe(503);
    expect(probe.headers.get('retry-after')).toBe('5');
    const body = (await probe.json()) as { code: string; status: string; message: string };
    expect(body.code).toBe('standby');
    expect(body.status).toBe('standby');
    expect(body.message).toMatch(/^this berth server is a standby: another server holds the database \(berth server pid \d+ on /);

    // The first server stops (its machines keep running): the standby starts and adopts them.
    await h.server.stop();
    const server = await starting;
    expect(server.url).toBe(`http://127.0.0.1:${apiPort}`);
    expect((await fetch(`${server.url}/v1/health`)).status).toBe(200); // the server's own API, at the same address
    const api = new Api(server.url, server.token);
    // The same instances, their agents connected to the standby now.
    const after = (await api.get<{ hosts: Array<{ id: string }> }>('/v1/pools/web/hosts')).body.hosts.map((x) => x.id).sort();
    expect(after).toEqual(before);
    const connected = async (id: string) => (await api.get<{ agent: { connected: boolean } }>(`/v1/hosts/${id}`)).body.agent.connected;
    await waitFor('the agents to dial the standby', async () => ((await Promise.all(before.map(connected))).every(Boolean) ? true : undefined), { timeoutMs: 30_000 });
    const claim = await api.post<ClaimView>('/v1/pools/web/claims', { group: 'alice', init: ['echo "served by the standby"'] });
    expect(claim.status, JSON.stringify(claim.body)).toBe(201);
    expect(before).toContain(claim.body.host?.id);
  }, 120_000);
});
