/**
 * A pool's policies on real hosts: an empty pool that fails fast with Retry-After, back-off for an
 * image that keeps failing, hosts that fail their health check, hosts idle past maxIdleAge, and
 * sizes that follow demand or the clock (the schedules' clock is the test's to move).
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { BerthEvent } from '../../src/events/types.js';
import type { HostView } from '../../src/hosts/views.js';
import type { PoolHostView, PoolStatusView } from '../../src/pools/views.js';
import { useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthpol0', subnet: '10.227.0.0/22', cgroupName: 'berthpol' };

describe('pool policies', () => {
  let srv: InProcessServer;

  const pool = async (name: string) => (await srv.api.get<PoolStatusView>(`/v1/pools/${name}`)).body;
  const readyHosts = async (name: string) => (await srv.api.get<{ hosts: PoolHostView[] }>(`/v1/pools/${name}/hosts`)).body.hosts.filter((h) => h.slot === 'ready');
  /** What time the pools' schedules read; unset: now. */
  let scheduleAt: Date | undefined;
  const server = useServer(NET, { scheduleClock: () => scheduleAt ?? new Date() });
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

  it('stops a claim whose caller went away during its init: no other host is claimed for nobody', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'patient', size: 2 })).status).toBe(201);
    await waitFor('patient full', async () => ((await readyHosts('patient')).length === 2 ? true : undefined), { timeoutMs: 30_000 });
    const caller = new AbortController();
    const claiming = fetch(`${srv.server.url}/v1/pools/patient/claims`, {
      method: 'POST',
      headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ group: 'walked-away', init: ['sleep 2'] }),
      signal: caller.signal,
    }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    caller.abort();
    await claiming;
    const claim = await waitFor('the claim to end', async () => {
      const mine = (await srv.api.get<{ claims: Array<{ state: string }> }>('/v1/claims?group=walked-away')).body.claims[0];
      return mine && mine.state !== 'pending' ? mine : undefined;
    }, { timeoutMs: 10_000 });
    expect(claim.state).toBe('failed');
    await new Promise((r) => setTimeout(r, 2500)); // as long as another host's init would have taken
    const hosts = (await srv.api.get<{ hosts: PoolHostView[] }>('/v1/pools/patient/hosts')).body.hosts;
    expect(hosts.filter((h) => h.slot === 'claimed')).toEqual([]);
    expect((await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?tag=berth:group=walked-away')).body.hosts).toEqual([]);
  });

  it('leaves no host running of a pool removed while it was filling', async () => {
    for (let round = 0; round < 4; round++) {
      expect((await srv.api.post('/v1/pools', { name: 'fleeting', size: 4, maxLaunching: 4 })).status).toBe(201);
      await new Promise((r) => setTimeout(r, 8 * round));
      expect((await srv.api.delete('/v1/pools/fleeting')).status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 4000)); // the launches under way end
    const left = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?all=true&tag=berth:pool=fleeting')).body.hosts.filter((h) => h.state !== 'terminated');
    expect(left.map((h) => `${h.id} ${h.state}`)).toEqual([]);
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

  it("counts a claim's failed cold launches as the pool's, and then fails claims at once instead of launching more", async () => {
    // size 0: no refill launches, so every host here is a claim's. An empty directory is no root filesystem.
    const notARoot = await mkdtemp(join(tmpdir(), 'berth-not-a-root-'));
    expect((await srv.api.post('/v1/pools', { name: 'doomed', size: 0, image: notARoot })).status).toBe(201);
    const launched = async () => (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?all=true&tag=berth:pool=doomed')).body.hosts.length;
    const first = await srv.api.post<{ code: string }>('/v1/pools/doomed/claims', { group: 'g1', maxAttempts: 3 });
    expect([first.status, first.body.code]).toEqual([422, 'claim_failed']);
    expect(await launched()).toBe(3);
    const failing = (await pool('doomed')).status;
    expect(failing.consecutiveFailures).toBe(3);
    expect(failing.lastFailure?.reason).toMatch(/a claim's cold launch/);
    // Backing off (4 s after a third failure): the next claim launches nothing and says why.
    const started = Date.now();
    const res = await fetch(`${srv.server.url}/v1/pools/doomed/claims`, {
      method: 'POST',
      headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ group: 'g2' }),
    });
    const body = (await res.json()) as { code: string; message: string; hint: string };
    expect(res.status).toBe(503);
    expect(body.code).toBe('pool_failing');
    expect(body.message).toMatch(/failed to become ready 3 times in a row \(last: host h-\w+ \(a claim's cold launch\)/);
    expect(body.hint).toMatch(/berth pool show doomed/);
    const retryAfter = Number(res.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(4);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await launched()).toBe(3);
    const claims = (await srv.api.get<{ claims: Array<{ group: string; state: string }> }>('/v1/claims?pool=doomed')).body.claims;
    expect(claims.find((c) => c.group === 'g2')?.state).toBe('failed');
    expect((await srv.api.delete('/v1/pools/doomed')).status).toBe(200);
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

  it('grows with demand up to demand.max, and shrinks back to its size once the burst leaves the window', async () => {
    const created = await srv.api.post<PoolStatusView>('/v1/pools', { name: 'demand', size: 1, maxLaunching: 3, demand: { max: 3, window: 10, leadTime: 5 } });
    expect(created.status).toBe(201);
    expect(created.body.demand).toEqual({ max: 3, window: 10, leadTime: 5 });
    expect(created.body.maxSize).toBe(6); // demand.max + maxLaunching
    await waitFor('the pool at its size', async () => ((await pool('demand')).status.ready === 1 ? true : undefined));
    expect((await pool('demand')).status).toMatchObject({ targetSize: 1, demand: { peak: 0, leadTimeS: 5 }, full: true });

    // Three users within one lead time: a burst the pool now keeps stock for.
    const claims = await Promise.all([1, 2, 3].map((i) => srv.api.post<{ host: PoolHostView }>('/v1/pools/demand/claims', { group: `rush-${i}` })));
    expect(claims.map((c) => c.status)).toEqual([201, 201, 201]);
    const grown = await waitFor(
      'three ready hosts',
      async () => {
        const s = (await pool('demand')).status;
        return s.targetSize === 3 && s.ready === 3 ? s : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(grown.demand).toEqual({ peak: 3, leadTimeS: 5 });
    const metrics = await (await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } })).text();
    expect(metrics).toMatch(/berth_pool_target_ready_hosts\{tenant="default",pool="demand"\} 3/);

    // Ten seconds on the burst has left the window: back to one ready host, the longest idle retired.
    const shrunk = await waitFor(
      'the pool back at its size',
      async () => {
        const s = (await pool('demand')).status;
        return s.targetSize === 1 && s.ready === 1 && s.retiring === 0 ? s : undefined;
      },
      { timeoutMs: 40_000 },
    );
    expect(shrunk.demand).toEqual({ peak: 0, leadTimeS: 5 });
    // The claimed hosts stayed with their users.
    expect(shrunk.claimed).toBe(3);
    for (const c of claims) expect((await srv.api.post(`/v1/hosts/${c.body.host.id}/release`, {})).status).toBe(200);
    expect((await srv.api.delete('/v1/pools/demand')).status).toBe(200);
  }, 120_000);

  it('keeps the ready hosts its schedule gives as the clock moves, and says when that changes next', async () => {
    scheduleAt = new Date('2026-11-23T09:00:00Z'); // a Monday, 10:00 in Berlin
    const schedule = { timezone: 'Europe/Berlin', rules: [{ cron: '* 8-18 * * 1-5', size: 3 }] };
    const created = await srv.api.post<PoolStatusView>('/v1/pools', { name: 'office', size: 1, maxLaunching: 3, schedule });
    expect(created.status).toBe(201);
    expect(created.body.schedule).toEqual(schedule);
    expect(created.body.maxSize).toBe(6); // the largest size it may keep + maxLaunching
    expect(created.body.status).toMatchObject({ targetSize: 3, schedule: { size: 3, rule: 0, next: { at: '2026-11-23T18:00:00.000Z', size: 1, rule: null } } });
    await waitFor('three ready hosts in office hours', async () => ((await pool('office')).status.ready === 3 ? true : undefined), { timeoutMs: 30_000 });
    const metrics = async () => (await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } })).text();
    expect(await metrics()).toMatch(/berth_pool_target_ready_hosts\{tenant="default",pool="office"\} 3/);
    const claimed = await srv.api.post<{ host: PoolHostView }>('/v1/pools/office/claims', { group: 'late-worker' });
    expect(claimed.status).toBe(201);
    await waitFor('the claimed host replaced', async () => ((await pool('office')).status.ready === 3 ? true : undefined), { timeoutMs: 30_000 });

    // 19:00: nothing calls the API; the reconciler's own passes read the clock and shrink the pool.
    scheduleAt = new Date('2026-11-23T18:00:00Z');
    const evening = await waitFor(
      'one ready host after hours',
      async () => {
        const s = (await pool('office')).status;
        return s.ready === 1 && s.retiring === 0 ? s : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(evening).toMatchObject({ targetSize: 1, claimed: 1, schedule: { size: 1, rule: null, next: { at: '2026-11-24T07:00:00.000Z', size: 3, rule: 0 } } });
    expect(await metrics()).toMatch(/berth_pool_target_ready_hosts\{tenant="default",pool="office"\} 1/);
    const retired = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?all=true')).body.hosts.filter((h) => (h.stateReason ?? '').includes('the schedule keeps 1 ready hosts now'));
    expect(retired).toHaveLength(2);
    const resized = (await srv.api.get<BerthEvent[]>('/v1/events?kind=pool&pool=office')).body.filter((e) => e.state === 'resized');
    expect(resized.map((e) => [e.reason, e.actor])).toEqual([['keeps 1 ready host (was 3): no schedule rule holds (Europe/Berlin)', undefined]]);

    // Saturday morning: the rule names weekdays only.
    scheduleAt = new Date('2026-11-28T09:00:00Z');
    expect((await pool('office')).status).toMatchObject({ targetSize: 1, schedule: { rule: null, next: { at: '2026-11-30T07:00:00.000Z' } } });
    // Monday again: back to three without a call.
    scheduleAt = new Date('2026-11-30T07:00:00Z');
    await waitFor('three ready hosts on Monday', async () => ((await pool('office')).status.ready === 3 ? true : undefined), { timeoutMs: 30_000 });
    const again = (await srv.api.get<BerthEvent[]>('/v1/events?kind=pool&pool=office')).body.filter((e) => e.state === 'resized');
    expect(again.map((e) => e.reason)).toEqual([expect.stringContaining('(was 3)'), 'keeps 3 ready hosts (was 1): schedule rule 1 ("* 8-18 * * 1-5", Europe/Berlin) holds']);
    scheduleAt = undefined;
    expect((await srv.api.post(`/v1/hosts/${claimed.body.host.id}/release`, {})).status).toBe(200);
    expect((await srv.api.delete('/v1/pools/office')).status).toBe(200);
  }, 120_000);

  it('refuses a schedule that would not do what it says, and changes nothing', async () => {
    const minute = await srv.api.post<{ code: string; message: string; hint: string }>('/v1/pools', { name: 'bad-schedule', size: 1, schedule: { rules: [{ cron: '0 8 * * 1-5', size: 2 }] } });
    expect([minute.status, minute.body.code]).toEqual([400, 'validation_failed']);
    expect(minute.body.message).toMatch(/schedule.rules\[0\]: the minute field of "0 8 \* \* 1-5" is not \*/);
    const zone = await srv.api.post<{ code: string; message: string }>('/v1/pools', { name: 'bad-schedule', size: 1, schedule: { timezone: 'Europe/Atlantis', rules: [{ cron: '* 8 * * *', size: 2 }] } });
    expect([zone.status, zone.body.message]).toEqual([400, expect.stringContaining('"Europe/Atlantis" is not a time zone')]);
    const above = await srv.api.post<{ code: string; message: string }>('/v1/pools', { name: 'bad-schedule', size: 1, maxSize: 2, schedule: { rules: [{ cron: '* 8 * * *', size: 5 }] } });
    expect([above.status, above.body.message]).toEqual([400, expect.stringContaining('keeps 5 ready hosts, above maxSize 2')]);
    expect((await srv.api.get('/v1/pools/bad-schedule')).status).toBe(404);
  });

  it('refuses a demand.max below the size or above maxSize, and changes nothing', async () => {
    const below = await srv.api.post<{ code: string; message: string }>('/v1/pools', { name: 'bad-demand', size: 3, demand: { max: 2 } });
    expect([below.status, below.body.code]).toEqual([400, 'validation_failed']);
    expect(below.body.message).toMatch(/demand.max 2 is below size 3/);
    const above = await srv.api.post<{ code: string; message: string }>('/v1/pools', { name: 'bad-demand', size: 1, maxSize: 4, demand: { max: 5 } });
    expect([above.status, above.body.code]).toEqual([400, 'validation_failed']);
    expect(above.body.message).toMatch(/demand.max 5 is above maxSize 4/);
    expect((await srv.api.get('/v1/pools/bad-demand')).status).toBe(404);
  });
});
