/** Health checks, passive failure detection with retry, and route switches under load: no request may fail. */
import http from 'node:http';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { EnvironmentRouter, type RouterOptions } from './router.js';
import { send, sleep, startBackend, waitFor, type TestBackend } from './test-backends.js';

interface Outcome {
  startedAt: number;
  status: number;
  backend: string | undefined;
  error?: string;
}

describe('EnvironmentRouter health and failover', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const startRouter = async (options: RouterOptions = {}) => {
    const lines: string[] = [];
    const router = new EnvironmentRouter({ log: (line) => lines.push(line), ...options });
    const port = await router.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => router.close());
    return { router, port, lines };
  };
  const backends = async (...ids: string[]): Promise<TestBackend[]> => {
    const started = await Promise.all(ids.map((id) => startBackend(id)));
    for (const b of started) cleanups.push(() => b.kill());
    return started;
  };
  const keepAliveAgent = () => {
    const agent = new http.Agent({ keepAlive: true });
    cleanups.push(() => Promise.resolve(agent.destroy()));
    return agent;
  };
  /** `concurrency` clients in a loop until `stop` resolves; every outcome recorded, errors included. */
  const load = async (port: number, concurrency: number, path: string, stop: Promise<void>): Promise<Outcome[]> => {
    const agent = keepAliveAgent();
    const outcomes: Outcome[] = [];
    let stopped = false;
    void stop.then(() => (stopped = true));
    const client = async () => {
      while (!stopped) {
        const startedAt = Date.now();
        try {
          const res = await send(port, 'shop.localhost', path, { agent });
          outcomes.push({ startedAt, status: res.status, backend: res.headers['x-berth-backend'] as string | undefined });
        } catch (err) {
          outcomes.push({ startedAt, status: 0, backend: undefined, error: String(err) });
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, client));
    return outcomes;
  };
  const failuresOf = (outcomes: Outcome[]) => outcomes.filter((o) => o.status !== 200);
  const backendView = (router: EnvironmentRouter, id: string) => router.route('shop')?.backends.find((b) => b.id === id);

  it('takes a dead backend out within one health interval and puts it back when it returns', async () => {
    const intervalMs = 200;
    const { router, lines } = await startRouter();
    const [b1, b2, b3] = await backends('h-1', 'h-2', 'h-3');
    if (!b1 || !b2 || !b3) throw new Error('backends');
    router.setRoute('shop', { backends: [b1, b2, b3].map((b) => ({ id: b.id, url: b.url, label: 'web' })), healthIntervalMs: intervalMs, healthPath: '/status/204' });
    await waitFor(() => backendView(router, 'h-2')?.lastCheckedAt != null, 2000, 'a first check');

    await b2.kill();
    const downAfter = await waitFor(() => backendView(router, 'h-2')?.healthy === false, 2000, 'h-2 to leave rotation');
    expect(downAfter).toBeLessThanOrEqual(intervalMs + 100);
    expect(backendView(router, 'h-2')?.lastError).toBe('connection refused');
    expect(router.route('shop')?.healthyBackends).toBe(2);

    await b2.restart();
    const upAfter = await waitFor(() => backendView(router, 'h-2')?.healthy === true, 2000, 'h-2 to return');
    expect(upAfter).toBeLessThanOrEqual(intervalMs + 100);
    expect(lines).toEqual([
      'router: environment shop: web on h-2 (' + b2.url.slice(7) + ') out of rotation (health check): connection refused',
      'router: environment shop: web on h-2 (' + b2.url.slice(7) + ') back in rotation',
    ]);
    // The health check sends the environment's name as Host, like real traffic.
    expect(b1.seen.at(-1)?.headers.host).toBe('shop.localhost');
  });

  it('loses no request while a backend dies and comes back under steady load', async () => {
    const { router, port } = await startRouter();
    const [b1, b2, b3] = await backends('h-1', 'h-2', 'h-3');
    if (!b1 || !b2 || !b3) throw new Error('backends');
    router.setRoute('shop', { backends: [b1, b2, b3].map((b) => ({ id: b.id, url: b.url })), healthIntervalMs: 100 });
    let finish = () => {};
    const outcomes = load(port, 6, '/', new Promise<void>((resolve) => (finish = resolve)));
    await sleep(300);
    await b2.kill();
    await sleep(400);
    const restartedAt = Date.now();
    await b2.restart();
    await sleep(500);
    finish();
    const results = await outcomes;
    expect(failuresOf(results)).toEqual([]);
    expect(results.length).toBeGreaterThan(100);
    expect(results.filter((o) => o.startedAt > restartedAt + 250 && o.backend === 'h-2').length).toBeGreaterThan(0);
  });

  it('retries a request on another backend when its backend just died (passive), so none fails', async () => {
    const { router, port } = await startRouter();
    const [b1, b2, b3] = await backends('h-1', 'h-2', 'h-3');
    if (!b1 || !b2 || !b3) throw new Error('backends');
    // No active check within the test: only requests can notice.
    router.setRoute('shop', { backends: [b1, b2, b3].map((b) => ({ id: b.id, url: b.url })), healthIntervalMs: 60_000 });
    const agent = keepAliveAgent();
    // Warm the router's keep-alive pool to every backend, so some retries start on a reset pooled connection.
    await Promise.all(Array.from({ length: 30 }, () => send(port, 'shop.localhost', '/', { agent })));
    await b1.kill();
    const results = await Promise.all(Array.from({ length: 60 }, () => send(port, 'shop.localhost', '/', { agent })));
    expect(results.filter((r) => r.status !== 200).map((r) => r.body)).toEqual([]);
    expect(results.every((r) => r.headers['x-berth-backend'] !== 'h-1')).toBe(true);
    expect(backendView(router, 'h-1')).toMatchObject({ healthy: false, active: 0 });
    expect(backendView(router, 'h-1')?.lastError).toMatch(/^connection (refused|reset)$/);
    // Also for an empty-bodied POST; and two dead backends out of three still cost nothing.
    await b2.kill();
    const more = await Promise.all(Array.from({ length: 20 }, () => send(port, 'shop.localhost', '/', { agent, method: 'POST' })));
    expect(more.map((r) => r.status)).toEqual(Array<number>(20).fill(200));
    expect(router.route('shop')?.backends.map((b) => b.active)).toEqual([0, 0, 0]);
  });

  it('switches a route under steady load without losing a request; in-flight ones finish on the old backends', async () => {
    const { router, port } = await startRouter();
    const [old1, old2, new1, new2] = await backends('old-1', 'old-2', 'new-1', 'new-2');
    if (!old1 || !old2 || !new1 || !new2) throw new Error('backends');
    router.setRoute('shop', { backends: [old1, old2].map((b) => ({ id: b.id, url: b.url })), healthIntervalMs: 100 });
    let finish = () => {};
    const outcomes = load(port, 8, '/slow?ms=10', new Promise<void>((resolve) => (finish = resolve)));
    await sleep(300);
    const longRequest = send(port, 'shop.localhost', '/slow?ms=400');
    await sleep(50);
    router.setRoute('shop', { backends: [new1, new2].map((b) => ({ id: b.id, url: b.url })), healthIntervalMs: 100 });
    const switchedAt = Date.now();
    const drained = Promise.all([old1.drain(), old2.drain()]);
    const long = await longRequest;
    await drained;
    // The router let go of its pooled connections to the old backends instead of keeping them ~4 s.
    expect(Date.now() - switchedAt).toBeLessThan(2000);
    await sleep(300);
    finish();
    const results = await outcomes;
    expect(failuresOf(results)).toEqual([]);
    expect(long.status).toBe(200);
    expect(long.headers['x-berth-backend']).toMatch(/^old-/);
    const after = results.filter((o) => o.startedAt > switchedAt);
    expect(after.length).toBeGreaterThan(50);
    expect(after.every((o) => o.backend?.startsWith('new-'))).toBe(true);
    expect(results.some((o) => o.backend?.startsWith('old-'))).toBe(true);
  });

  it('gives up on a backend that does not accept the connection within the connect timeout, and retries', async () => {
    const { router, port } = await startRouter({ connectTimeoutMs: 100 });
    const [b1] = await backends('h-1');
    if (!b1) throw new Error('backends');
    // TEST-NET-1: nothing answers there (the connection hangs, or the network says unreachable).
    router.setRoute('shop', { backends: [{ id: 'h-void', url: 'http://192.0.2.1:8080' }, { id: b1.id, url: b1.url }], healthIntervalMs: 60_000 });
    const started = Date.now();
    const res = await send(port, 'shop.localhost');
    expect(res.status).toBe(200);
    expect(res.headers['x-berth-backend']).toBe('h-1');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(backendView(router, 'h-void')?.healthy).toBe(false);
    expect(backendView(router, 'h-void')?.lastError).toMatch(/connection not established within 100 ms|unreachable|refused/);
  });

  it('serves 503 while every backend is down and recovers by itself', async () => {
    const { router, port } = await startRouter();
    const [b1] = await backends('h-1');
    if (!b1) throw new Error('backends');
    router.setRoute('shop', { backends: [{ id: b1.id, url: b1.url, label: 'web' }], healthIntervalMs: 50 });
    await b1.kill();
    await waitFor(() => router.route('shop')?.healthyBackends === 0, 2000, 'h-1 to leave rotation');
    expect((await send(port, 'shop.localhost')).status).toBe(503);
    await b1.restart();
    await waitFor(() => router.route('shop')?.healthyBackends === 1, 2000, 'h-1 to return');
    expect((await send(port, 'shop.localhost')).status).toBe(200);
  });

  it('treats a health answer of 500 or more as down and below 500 as up', async () => {
    let status = 200;
    const { router } = await startRouter();
    const b = await startBackend('h-1', (_req, res) => {
      res.statusCode = status;
      res.end();
    });
    cleanups.push(() => b.kill());
    router.setRoute('shop', { backends: [{ id: b.id, url: b.url }], healthIntervalMs: 30, healthPath: '/healthz' });
    status = 503;
    await waitFor(() => backendView(router, 'h-1')?.healthy === false, 2000, 'down on 503');
    expect(backendView(router, 'h-1')?.lastError).toBe('health check GET /healthz answered 503');
    status = 404;
    await waitFor(() => backendView(router, 'h-1')?.healthy === true, 2000, 'up on 404');
    expect(b.seen.at(-1)?.url).toBe('/healthz');
  });

  it('fails a health check that gets no answer within the timeout', async () => {
    const { router } = await startRouter({ healthTimeoutMs: 50 });
    const b = await startBackend('h-1', () => {}); // accepts, never answers
    cleanups.push(() => b.kill());
    router.setRoute('shop', { backends: [{ id: b.id, url: b.url }], healthIntervalMs: 30 });
    await waitFor(() => backendView(router, 'h-1')?.healthy === false, 2000, 'down on timeout');
    expect(backendView(router, 'h-1')?.lastError).toBe('health check GET / got no answer within 50 ms');
  });

  it('does not send a POST again once its backend may have acted on it; a GET it does', async () => {
    const { router, port } = await startRouter();
    let orders = 0;
    // Takes the order, then dies before answering (a replica killed mid-request).
    const crashing = await startBackend('h-crash', (req, res) => {
      if (req.url === '/order') orders++;
      req.resume();
      res.socket?.destroy();
    });
    cleanups.push(() => crashing.kill());
    const [steady] = await backends('h-steady');
    if (!steady) throw new Error('backends');
    router.setRoute('shop', { backends: [{ id: crashing.id, url: crashing.url }, { id: steady.id, url: steady.url }], healthIntervalMs: 60_000 });
    const post = await send(port, 'shop.localhost', '/order', { method: 'POST', headers: { 'content-length': '0' } });
    expect(post.status).toBe(502);
    expect(orders + steady.seen.filter((r) => r.url === '/order').length).toBe(1);
    // Back in rotation (as its health check would put it), a GET that meets the same end is retried.
    router.setRoute('shop', { backends: [{ id: crashing.id, url: crashing.url }, { id: steady.id, url: steady.url }], healthIntervalMs: 60_000 });
    const get = await send(port, 'shop.localhost', '/order');
    expect(get.status).toBe(200);
    expect(get.headers['x-berth-backend']).toBe('h-steady');
  });

  it('forwards a chunked DELETE body as a body, never as a request of its own', async () => {
    const { router, port } = await startRouter();
    const [b1] = await backends('h-1');
    if (!b1) throw new Error('backends');
    router.setRoute('shop', { backends: [{ id: b1.id, url: b1.url }], healthIntervalMs: 60_000 });
    const agent = keepAliveAgent();
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: shop.localhost\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n';
    const body = new PassThrough();
    const deleted = send(port, 'shop.localhost', '/echo', { method: 'DELETE', body, agent, headers: { 'transfer-encoding': 'chunked' } });
    body.end(smuggled);
    expect((await deleted).body).toBe(smuggled);
    expect((await send(port, 'shop.localhost', '/next', { agent })).status).toBe(200);
    expect(b1.seen.map((r) => `${r.method} ${r.url}`)).toEqual(['DELETE /echo', 'GET /next']);
  });
});
