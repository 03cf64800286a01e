/**
 * Sleeping routes: requests and WebSocket upgrades held until one wake puts backends back, a wake
 * that fails answered with a page that says why, and how long a route has gone without a request.
 */
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { EnvironmentRouter } from './router.js';
import { routerAndBackend, send, sleep, startBackend, type TestBackend } from './test-backends.js';

describe('EnvironmentRouter sleeping routes', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const setUp = () => routerAndBackend(cleanups, 'h-woken');
  /** A wake that routes to `backend` after `delayMs`, counting its calls. */
  const waker = (router: EnvironmentRouter, name: string, backend: TestBackend, delayMs: number) => {
    const calls = { n: 0 };
    const wake = async () => {
      calls.n++;
      await sleep(delayMs);
      router.setRoute(name, { backends: [{ id: backend.id, url: backend.url }], healthIntervalMs: 60_000 });
    };
    return { calls, wake };
  };

  it('holds requests while one wake runs, then sends every one of them on, bodies included', async () => {
    const { router, port, backend } = await setUp();
    const { calls, wake } = waker(router, 'nap', backend, 150);
    router.setRoute('nap', { backends: [], wake });
    expect(router.route('nap')).toMatchObject({ asleep: true, lastRequestAt: null, backends: [] });

    const t0 = Date.now();
    const answers = await Promise.all([
      ...Array.from({ length: 8 }, (_, i) => send(port, `nap.localhost:${port}`, `/page/${i}`)),
      send(port, `nap.localhost:${port}`, '/echo', { method: 'POST', body: 'x'.repeat(100_000), headers: { 'content-type': 'text/plain' } }),
    ]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(answers.map((a) => a.status)).toEqual(Array(9).fill(200));
    expect(calls.n).toBe(1);
    expect(backend.seen.map((r) => r.url).sort()).toEqual(['/echo', '/page/0', '/page/1', '/page/2', '/page/3', '/page/4', '/page/5', '/page/6', '/page/7']);
    expect(answers[8]?.body).toBe('x'.repeat(100_000));
    const view = router.route('nap');
    expect(view).toMatchObject({ asleep: false, requests: 9, unavailable: 0 });
    expect(view?.lastRequestAt).not.toBeNull();
  });

  it('sends held requests on as soon as the route has backends, while the wake still finishes', async () => {
    const { router, port, backend } = await setUp();
    let finished = false;
    router.setRoute('quick', {
      backends: [],
      wake: async () => {
        await sleep(20);
        router.setRoute('quick', { backends: [{ id: backend.id, url: backend.url }], healthIntervalMs: 60_000 });
        // Recording the wake in the store, say: held requests need not wait for it.
        await sleep(400);
        finished = true;
      },
    });
    const t0 = Date.now();
    expect((await send(port, `quick.localhost:${port}`)).status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(300);
    expect(finished).toBe(false);
  });

  it('answers a failed wake with a page naming the environment and the reason, and tries again at the next request', async () => {
    const { router, port, backend } = await setUp();
    let fail = true;
    let calls = 0;
    router.setRoute('frail', {
      backends: [],
      wake: async () => {
        calls++;
        await sleep(20);
        if (fail) throw new Error('pool frail has no ready host');
        router.setRoute('frail', { backends: [{ id: backend.id, url: backend.url }] });
      },
    });
    const [html, json] = await Promise.all([send(port, `frail.localhost:${port}`), send(port, `frail.localhost:${port}`, '/', { headers: { accept: 'application/json' } })]);
    expect(html.status).toBe(503);
    expect(html.headers['x-berth-environment']).toBe('frail');
    expect(html.body).toContain('environment frail is asleep and could not be woken: pool frail has no ready host');
    expect(JSON.parse(json.body)).toEqual({ error: { code: 'environment_asleep', message: 'environment frail is asleep and could not be woken: pool frail has no ready host' } });
    expect(calls).toBe(1);
    expect(router.route('frail')).toMatchObject({ asleep: true, unavailable: 2 });
    fail = false;
    expect((await send(port, `frail.localhost:${port}`)).status).toBe(200);
    expect(calls).toBe(2);
  });

  it('wakes for a WebSocket upgrade and passes it through', async () => {
    const { router, port, backend } = await setUp();
    const wss = new WebSocketServer({ server: backend.server });
    cleanups.push(() => wss.close());
    wss.on('connection', (socket) => socket.on('message', (data) => socket.send(`echo: ${(data as Buffer).toString()}`)));
    const { calls, wake } = waker(router, 'chat', backend, 50);
    router.setRoute('chat', { backends: [], wake });
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { host: `chat.localhost:${port}` } });
    ws.on('error', () => {});
    cleanups.push(() => ws.terminate());
    await once(ws, 'open');
    ws.send('hi');
    const [reply] = (await once(ws, 'message')) as [Buffer];
    expect(reply.toString()).toBe('echo: hi');
    expect(calls.n).toBe(1);
    // An open WebSocket is use: the route is not idle while it lasts.
    await sleep(30);
    expect(router.idleMs('chat')).toBe(0);
  });

  it('counts idle time from the last request, not while one is in flight, and not for health checks', async () => {
    const { router, port } = await setUp();
    let release = () => {};
    const slow = await startBackend('h-slow', (_req, res) => {
      release = () => res.end('done');
    });
    cleanups.push(() => slow.kill());
    router.setRoute('busy', { backends: [{ id: slow.id, url: slow.url }], healthIntervalMs: 10 });
    expect(router.idleMs('nope')).toBeUndefined();
    await sleep(60);
    // Health checks ran meanwhile; they are the router's own.
    expect(router.idleMs('busy')).toBeGreaterThanOrEqual(50);
    const pending = send(port, `busy.localhost:${port}`);
    await sleep(80);
    expect(router.idleMs('busy')).toBe(0);
    release();
    expect((await pending).body).toBe('done');
    await sleep(40);
    const idle = router.idleMs('busy') ?? -1;
    expect(idle).toBeGreaterThanOrEqual(30);
    expect(idle).toBeLessThan(80);
  });

  it('refuses a sleeping route with backends', async () => {
    const { router, backend } = await setUp();
    expect(() => router.setRoute('odd', { backends: [{ id: backend.id, url: backend.url }], wake: () => Promise.resolve() })).toThrow(/cannot be asleep/);
  });
});
