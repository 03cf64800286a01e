/**
 * A pool's policies on real hosts: an empty pool that fails fast with Retry-After, back-off for an
 * image that keeps failing, hosts that fail their health check, and hosts idle past maxIdleAge.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import type { PoolHostView, PoolStatusView } from '../../src/pools/views.js';
import { useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthpol0', subnet: '10.227.0.0/22', cgroupName: 'berthpol' };

describe('pool policies', () => {
  let srv: InProcessServer;

  const pool = async (name: string) => (await srv.api.get<PoolStatusView>(`/v1/pools/${name}`)).body;
  const readyHosts = async (name: string) => (await srv.api.get<{ hosts: PoolHostView[] }>(`/v1/pools/${name}/hosts`)).body.hosts.filter((h) => h.slot === 'ready');
  const server = useServer(NET);
  beforeAll(() => {
    srv = server.srv;
  });

  it('fails a claim on an empty pool at once with 503 and Retry-After when onEmpty is fail', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'empty', size: 0, onEmpty: 'fail' })).status).toBe(201);
    const started = Date.now();
    const res = await fetch(`${srv.server.url}/v1/pools/empty/claims`, {
      method: 'POST',
      headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ group: 'nobody' }),
    });
    expect(res.status).toBe(503);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await res.json()) as { code: string }).code).toBe('pool_empty');
    expect(Date.now() - started).toBeLessThan(2000);
    expect((await pool('empty')).status.misses).toBe(0);
  });

  it('backs off an image that keeps failing instead of burning launches, and says why', async () => {
    // A pool's image must exist (a missing one is refused at once), so: a directory that is no root
    // filesystem (an empty directory), whose every launch fails.
    const missing = await srv.api.post<{ code: string }>('/v1/pools', { name: 'broken', size: 2, image: '/nonexistent-berth-image' });
    expect([missing.status, missing.body.code]).toEqual([404, 'image_not_found']);
    const notARoot = await mkdtemp(join(tmpdir(), 'berth-not-a-root-'));
    expect((await srv.api.post('/v1/pools', { name: 'broken', size: 2, maxLaunching: 1, image: notARoot })).status).toBe(201);
    await new Promise((r) => setTimeout(r, 4000));
    const status = (await pool('broken')).status;
    expect(status.ready).toBe(0);
    expect(status.consecutiveFailures).toBeGreaterThanOrEqual(2);
    // 1 s, 2 s, 4 s… between attempts: a handful in 4 s, where a tight loop would make dozens.
    expect(status.consecutiveFailures).toBeLessThanOrEqual(5);
    expect(status.lastFailure?.reason).toMatch(/failed to start: host setup exited/);
    expect(status.notFullReason).toMatch(/backing off/);
    const hosts = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?all=true&tag=berth:pool=broken')).body.hosts;
    expect(hosts.every((h) => h.state === 'terminated' || h.state === 'failed')).toBe(true);
    expect((await srv.api.delete('/v1/pools/broken')).status).toBe(200);
  });

  it('quarantines and replaces a ready host that fails its health check', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'health', size: 1, healthCheck: { command: 'test ! -e /tmp/sick', interval: 1 } })).status).toBe(201);
    const [first] = await waitFor('a ready host', async () => {
      const ready = await readyHosts('health');
      return ready.length === 1 ? ready : undefined;
    });
    if (!first) throw new Error('no host');
    const sick = await srv.api.post<{ status: string }>('/v1/commands', { targets: { hostIds: [first.id] }, parameters: { commands: ['touch /tmp/sick'] }, wait: 10 });
    expect(sick.body.status).toBe('Success');
    const replaced = await waitFor('the sick host to be replaced', async () => {
      const ready = await readyHosts('health');
      return ready.length === 1 && ready[0]?.id !== first.id ? ready[0] : undefined;
    });
    expect(replaced.agent.connected).toBe(true);
    expect((await srv.api.get<HostView>(`/v1/hosts/${first.id}`)).body.state).toBe('terminated');
    const status = (await pool('health')).status;
    expect(status.lastFailure?.reason).toMatch(/health check/);
  }, 60_000);

  it('replaces hosts idle longer than maxIdleAge, new one first', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'idle', size: 1, maxIdleAge: 2 })).status).toBe(201);
    const [first] = await waitFor('a ready host', async () => {
      const ready = await readyHosts('idle');
      return ready.length === 1 ? ready : undefined;
    });
    if (!first) throw new Error('no host');
    let emptySamples = 0;
    const next = await waitFor(
      'the idle host to be replaced',
      async () => {
        const hosts = (await srv.api.get<{ hosts: PoolHostView[] }>('/v1/pools/idle/hosts')).body.hosts;
        if (!hosts.some((h) => h.slot === 'ready' || h.slot === 'warming')) emptySamples++;
        const ready = hosts.filter((h) => h.slot === 'ready');
        return ready.length === 1 && ready[0]?.id !== first.id ? ready[0] : undefined;
      },
      { timeoutMs: 20_000 },
    );
    expect(next.id).not.toBe(first.id);
    expect(emptySamples).toBe(0);
    const status = (await pool('idle')).status;
    expect(status.idleHostSeconds).toBeGreaterThanOrEqual(2);
    // Nothing ever claimed from it, and its status says so.
    expect(status.lastClaimAt).toBeNull();
  }, 60_000);
});
