/**
 * Environments that sleep when idle, on real hosts through the real CLI and router: asleep, an
 * environment holds no host; its next request is held while it wakes and then answered with its
 * own page; requests that come together share one wake; a wake that cannot get hosts answers a
 * page that says why and leaves nothing claimed; changes made while asleep are what it wakes with;
 * and a sleeping environment still wakes after a server restart.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import type { EnvironmentView } from '../../src/environments/views.js';
import type { BerthEvent } from '../../src/events/types.js';
import { berth, type InProcessServer } from '../helpers/server.js';
import { routerGet, useStackServer } from '../helpers/stack-server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthslp0', subnet: '10.250.0.0/22', cgroupName: 'berthslp' };

const berthYaml = `stacks:
  nap:
    services:
      web:
        cmd: mkdir -p /tmp/www && printf 'hello %s from %s at %s\\n' "$GREETING" "$BERTH_ENVIRONMENT" "\${BERTH_REF:-none}" > /tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www
        env: {GREETING: "world"}
        ports: [8080]
        ready: {http: 8080}
        stopTimeout: 1s
pools:
  - name: nap
    size: 2
    template: {tags: {berth.stack: nap, berth.mode: review}}
  - name: scarce
    size: 1
    onEmpty: fail
    template: {tags: {berth.stack: nap, berth.mode: review}}
`;

async function viaRouter(port: number, name: string, accept = 'text/html'): Promise<{ status: number; body: string }> {
  const { status, body } = await routerGet(port, name, { headers: { accept } });
  return { status, body };
}

describe('environments that sleep when idle', () => {
  const stack = useStackServer(NET, berthYaml, { nap: 2, scarce: 1 });
  const routerPort = () => stack.routerPort();
  let srv: InProcessServer;
  let env: Record<string, string>;
  beforeEach(() => {
    srv = stack.srv;
    env = stack.env;
  });
  const show = async (name: string) => (await srv.api.get<EnvironmentView>(`/v1/environments/${name}`)).body;
  const claimed = async (pool: string) => (await srv.api.get<{ hosts: { id: string; slot: string | null }[] }>(`/v1/pools/${pool}/hosts`)).body.hosts.filter((h) => h.slot === 'claimed').map((h) => h.id);
  const events = async (name: string) => (await srv.api.get<BerthEvent[]>('/v1/events?kind=environment')).body.filter((e) => e.id === name);

  it('goes to sleep when idle, holding no host, and wakes at its next request with its own page', async () => {
    const created = await berth(['env', 'create', 'sleepy', '--stack', 'nap', '--set', 'GREETING=zz', '--sleep-after', '1s', '--json'], env, { timeoutMs: 60_000 });
    expect(created.code, created.stderr).toBe(0);
    const first = JSON.parse(created.stdout) as EnvironmentView;
    expect(first).toMatchObject({ state: 'ready', sleepAfterMs: 1000, operation: 'create' });
    expect((await viaRouter(routerPort(), 'sleepy')).body).toBe('hello zz from sleepy at none\n');

    const asleep = await waitFor('sleepy asleep', async () => {
      const view = await show('sleepy');
      return view.state === 'sleeping' && view.hosts.length === 0 ? view : undefined;
    }, { timeoutMs: 15_000 });
    expect(asleep.stateReason).toMatch(/^no request for \d+s$/);
    expect(asleep.lastRequestAt).not.toBeNull();
    // Its host went back: terminated (the pool's release), no longer claimed by anyone.
    expect(await claimed('nap')).toEqual([]);
    const host = (await srv.api.get<{ state: string }>(`/v1/hosts/${first.hosts[0]?.hostId ?? ''}`)).body;
    expect(host.state).toBe('terminated');
    expect((await berth(['env', 'ls'], env)).stdout).toMatch(/sleepy\s+nap\s+review\s+-\s+sleeping\s+0\s.*\s1s idle\s+public\n/);

    // The next request is held while it wakes, then answered by the app itself.
    const t0 = performance.now();
    const page = await viaRouter(routerPort(), 'sleepy');
    const waitedMs = performance.now() - t0;
    expect(page).toEqual({ status: 200, body: 'hello zz from sleepy at none\n' });
    const awake = await show('sleepy');
    expect(awake).toMatchObject({ state: 'ready', operation: 'wake', stateReason: 'woken by a request' });
    expect(awake.hosts).toHaveLength(1);
    expect(awake.hosts[0]?.hostId).not.toBe(first.hosts[0]?.hostId);
    expect(awake.timings['totalMs']).toBeGreaterThan(0);
    expect(awake.timings['totalMs']).toBeLessThan(waitedMs);
    const states = (await events('sleepy')).map((e) => e.state);
    expect(states).toEqual(['creating', 'ready', 'sleeping', 'waking', 'ready']);
  });

  it('shares one wake among requests that come together, and stays awake while it is used', async () => {
    const slept = await berth(['env', 'sleep', 'sleepy'], env);
    expect(slept.code, slept.stderr).toBe(0);
    expect(slept.stdout).toMatch(/^sleepy asleep: its hosts went back to pool nap; its next request wakes it/);
    expect(await show('sleepy')).toMatchObject({ state: 'sleeping', hosts: [] });
    const before = (await events('sleepy')).filter((e) => e.state === 'waking').length;
    const pages = await Promise.all(Array.from({ length: 12 }, () => viaRouter(routerPort(), 'sleepy')));
    expect(pages.map((p) => p.status)).toEqual(Array(12).fill(200));
    expect((await events('sleepy')).filter((e) => e.state === 'waking').length).toBe(before + 1);
    expect((await show('sleepy')).hosts).toHaveLength(1);
    // Requests every 300 ms keep it awake past its 1 s sleep-after.
    for (let i = 0; i < 10; i++) {
      expect((await viaRouter(routerPort(), 'sleepy')).status).toBe(200);
      await new Promise((r) => setTimeout(r, 300));
    }
    expect((await show('sleepy')).state).toBe('ready');
  });

  it('wakes with the ref and settings it was given while asleep; a restart of nothing is refused', async () => {
    expect((await berth(['env', 'sleep', 'sleepy'], env)).code).toBe(0);
    const set = await berth(['env', 'set', 'sleepy', 'GREETING=later', '--json'], env);
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ state: 'sleeping', settings: ['GREETING'], stateReason: 'settings changed for its next wake' });
    const deployed = await berth(['env', 'deploy', 'sleepy', '--ref', 'v2', '--json'], env);
    expect(deployed.code, deployed.stderr).toBe(0);
    expect(JSON.parse(deployed.stdout)).toMatchObject({ state: 'sleeping', ref: 'v2', hosts: [] });
    const restart = await berth(['env', 'restart', 'sleepy'], env);
    expect([restart.code, restart.stderr]).toEqual([2, expect.stringContaining('environment sleepy is asleep: nothing of it runs')]);
    expect(await claimed('nap')).toEqual([]);

    const woken = await berth(['env', 'wake', 'sleepy'], env, { timeoutMs: 60_000 });
    expect(woken.code, woken.stderr).toBe(0);
    expect(woken.stderr).toMatch(/^waking sleepy…\n/);
    expect(woken.stderr).toMatch(/awake in [\d.]+ ms \(claim [\d.]+ ms/);
    expect(woken.stdout.trim()).toBe(`http://sleepy.localhost:${routerPort()}/`);
    expect((await viaRouter(routerPort(), 'sleepy')).body).toBe('hello later from sleepy at v2\n');
    // Waking an awake environment changes nothing.
    const again = JSON.parse((await berth(['env', 'wake', 'sleepy', '--json'], env)).stdout) as EnvironmentView;
    expect(again.hosts).toEqual((await show('sleepy')).hosts);
    expect((await berth(['env', 'wake', 'sleepy'], env)).stderr).toBe('sleepy is ready, not asleep\n');
  });

  it('answers why when a wake cannot get hosts, claims nothing, and wakes once it can', async () => {
    const created = await berth(['env', 'create', 'frail', '--stack', 'nap', '--pool', 'scarce', '--json'], env, { timeoutMs: 60_000 });
    expect(created.code, created.stderr).toBe(0);
    expect((await berth(['env', 'sleep', 'frail'], env)).code).toBe(0);
    // The pool keeps no spare host now and may not launch one at a claim.
    expect((await srv.api.patch('/v1/pools/scarce', { size: 0 })).status).toBe(200);
    await waitFor('scarce empty', async () => ((await srv.api.get<{ status: { ready: number; launching: number } }>('/v1/pools/scarce')).body.status.ready === 0 ? true : undefined), { timeoutMs: 20_000 });

    const page = await viaRouter(routerPort(), 'frail');
    expect(page.status).toBe(503);
    expect(page.body).toContain('environment frail is asleep and could not be woken');
    expect(page.body).toContain('environment_asleep');
    const json = JSON.parse((await viaRouter(routerPort(), 'frail', 'application/json')).body) as { error: { code: string; message: string } };
    expect(json.error.code).toBe('environment_asleep');
    const view = await show('frail');
    expect(view).toMatchObject({ state: 'sleeping', hosts: [] });
    expect(view.stateReason).toMatch(/^could not wake: /);
    expect(await claimed('scarce')).toEqual([]);

    expect((await srv.api.patch('/v1/pools/scarce', { size: 1 })).status).toBe(200);
    await waitFor('scarce refilled', async () => ((await srv.api.get<{ status: { ready: number } }>('/v1/pools/scarce')).body.status.ready === 1 ? true : undefined), { timeoutMs: 30_000 });
    // A person's wake tries at once (requests wait a few seconds after a failure).
    const woken = await berth(['env', 'wake', 'frail', '--json'], env, { timeoutMs: 60_000 });
    expect(woken.code, woken.stderr).toBe(0);
    expect((await viaRouter(routerPort(), 'frail')).status).toBe(200);

    // A create that gets one of its hosts and not the others gives back the one it got, even when
    // that claim ends after the others failed.
    await waitFor('scarce refilled again', async () => ((await srv.api.get<{ status: { ready: number } }>('/v1/pools/scarce')).body.status.ready === 1 ? true : undefined), { timeoutMs: 30_000 });
    const greedy = await berth(['env', 'create', 'greedy', '--stack', 'nap', '--pool', 'scarce', '--replicas', '3'], env, { timeoutMs: 60_000 });
    expect(greedy.code).toBe(1);
    expect(greedy.stderr).toContain('pool scarce');
    expect(await claimed('scarce')).toEqual((JSON.parse(woken.stdout) as EnvironmentView).hosts.map((h) => h.hostId));
    expect((await srv.api.get('/v1/environments/greedy')).status).toBe(404);
  });

  it('takes sleep-after changes and refuses bad ones, changing nothing', async () => {
    const never = await berth(['env', 'sleep-after', 'sleepy', 'never', '--json'], env);
    expect(JSON.parse(never.stdout)).toMatchObject({ name: 'sleepy', sleepAfterMs: null });
    expect((await berth(['env', 'sleep-after', 'sleepy', '1.1h', '--json'], env)).stdout).toContain('"sleepAfterMs": 3960000');
    expect((await berth(['env', 'sleep-after', 'sleepy', '2h'], env)).stdout).toBe('sleepy sleeps after 2h without a request\n');
    for (const bad of ['soon', '0.5s', '8d']) {
      const res = await berth(['env', 'sleep-after', 'sleepy', bad], env);
      expect([bad, res.code]).toEqual([bad, 2]);
    }
    expect((await show('sleepy')).sleepAfterMs).toBe(7_200_000);
    const refused = await berth(['env', 'create', 'never-made', '--stack', 'nap', '--sleep-after', 'soon'], env);
    expect(refused.code).toBe(2);
    expect((await srv.api.get('/v1/environments/never-made')).status).toBe(404);
    expect((await srv.api.patch('/v1/environments/sleepy', {})).status).toBe(400);
  });

  it('removes a sleeping environment when its TTL passes', async () => {
    const created = await berth(['env', 'create', 'brief', '--stack', 'nap', '--ttl', '4s', '--sleep-after', '1s'], env, { timeoutMs: 60_000 });
    expect(created.code, created.stderr).toBe(0);
    await waitFor('brief asleep', async () => ((await show('brief')).state === 'sleeping' ? true : undefined), { timeoutMs: 15_000 });
    await waitFor('brief removed', async () => ((await srv.api.get('/v1/environments/brief')).status === 404 ? true : undefined), { timeoutMs: 15_000 });
    expect((await viaRouter(routerPort(), 'brief')).status).toBe(404);
  });

  it('wakes a sleeping environment after a server restart, and removes one asleep', async () => {
    expect((await berth(['env', 'sleep', 'sleepy'], env)).code).toBe(0);
    await stack.restart();
    srv = stack.srv;
    env = stack.env;
    expect(await show('sleepy')).toMatchObject({ state: 'sleeping', hosts: [] });
    const page = await viaRouter(routerPort(), 'sleepy');
    expect(page).toEqual({ status: 200, body: 'hello later from sleepy at v2\n' });

    expect((await berth(['env', 'sleep', 'sleepy'], env)).code).toBe(0);
    const removed = await berth(['env', 'rm', 'sleepy', 'frail'], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect((await viaRouter(routerPort(), 'sleepy')).status).toBe(404);
    expect(await claimed('nap')).toEqual([]);
    expect(await claimed('scarce')).toEqual([]);
  });
});
