/** Routing, headers, bodies and error pages, through a real router and real backends on 127.0.0.1. */
import { PassThrough } from 'node:stream';
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import { EnvironmentRouter, type RouterOptions } from './router.js';
import { closedPort, send, startBackend, waitFor, type TestBackend } from './test-backends.js';

describe('EnvironmentRouter', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const startRouter = async (options: RouterOptions = {}) => {
    const router = new EnvironmentRouter(options);
    const port = await router.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => router.close());
    return { router, port };
  };
  const backend = async (id: string, handler?: http.RequestListener): Promise<TestBackend> => {
    const b = await startBackend(id, handler);
    cleanups.push(() => b.kill());
    return b;
  };
  const json = (body: string) => JSON.parse(body) as { backend: string; headers: Record<string, string> };

  it('routes by the Host header, case-insensitively and whatever the port', async () => {
    const { router, port } = await startRouter();
    const [alpha, beta] = await Promise.all([backend('h-alpha'), backend('h-beta')]);
    router.setRoute('alpha-env', { backends: [{ id: alpha.id, url: alpha.url }] });
    router.setRoute('Beta-Env', { backends: [{ id: beta.id, url: beta.url }] });

    const a = await send(port, `alpha-env.localhost:${port}`, '/some/path?q=1');
    expect(a.status).toBe(200);
    expect(json(a.body).backend).toBe('h-alpha');
    expect(a.headers['x-berth-environment']).toBe('alpha-env');
    expect(a.headers['x-berth-backend']).toBe('h-alpha');
    expect(alpha.seen.at(-1)?.url).toBe('/some/path?q=1');

    const b = await send(port, 'BETA-ENV.LocalHost:1234');
    expect(json(b.body).backend).toBe('h-beta');
    expect(b.headers['x-berth-environment']).toBe('beta-env');
    expect(router.urlFor('alpha-env')).toBe(`http://alpha-env.localhost:${port}/`);
  });

  it('serves a configurable domain', async () => {
    const { router, port } = await startRouter({ domain: 'Envs.Example.Test' });
    const web = await backend('h-1');
    router.setRoute('shop', { backends: [{ id: web.id, url: web.url }] });
    expect((await send(port, 'shop.envs.example.test')).status).toBe(200);
    expect((await send(port, 'shop.localhost')).status).toBe(404);
  });

  it('answers an unknown name with a 404 that names it and nothing else', async () => {
    const { router, port } = await startRouter();
    const web = await backend('h-secret');
    router.setRoute('secret-env', { backends: [{ id: web.id, url: web.url, label: 'web' }] });
    const res = await send(port, `nope.localhost:${port}`);
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.body).toContain('no environment named nope');
    expect(res.body).not.toContain('secret');
    expect(res.body).not.toContain('h-secret');
    expect(res.headers['x-berth-backend']).toBeUndefined();
  });

  it('tells requests to the bare domain or an IP to use NAME.<domain>', async () => {
    const { port } = await startRouter();
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`]) {
      const res = await send(port, host);
      expect(res.status).toBe(404);
      expect(res.body).toContain(`NAME.localhost:${port}`);
    }
  });

  it('answers JSON errors to clients that prefer JSON', async () => {
    const { port } = await startRouter();
    const res = await send(port, 'nope.localhost', '/', { headers: { accept: 'application/json' } });
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(res.body)).toEqual({ error: { code: 'environment_not_found', message: 'no environment named nope' } });
  });

  it('goes round robin across three backends', async () => {
    const { router, port } = await startRouter();
    const backends = await Promise.all(['h-1', 'h-2', 'h-3'].map((id) => backend(id)));
    router.setRoute('shop', { backends: backends.map((b) => ({ id: b.id, url: b.url })) });
    const agent = new http.Agent({ keepAlive: true });
    cleanups.push(() => Promise.resolve(agent.destroy()));
    const order: string[] = [];
    for (let i = 0; i < 30; i++) order.push(json((await send(port, 'shop.localhost', '/', { agent })).body).backend);
    expect(order.slice(0, 6)).toEqual(['h-1', 'h-2', 'h-3', 'h-1', 'h-2', 'h-3']);
    expect(backends.map((b) => b.seen.filter((r) => r.headers['user-agent'] !== 'berth-router-health').length)).toEqual([10, 10, 10]);
    expect(router.route('shop')?.backends.map((b) => b.requests)).toEqual([10, 10, 10]);
  });

  it('adds X-Forwarded-* and keeps the original Host', async () => {
    const { router, port } = await startRouter();
    const web = await backend('h-1');
    router.setRoute('shop', { backends: [{ id: web.id, url: web.url }] });
    const seen = json((await send(port, `shop.localhost:${port}`, '/', { headers: { 'x-forwarded-proto': 'https' } })).body).headers;
    expect(seen['host']).toBe(`shop.localhost:${port}`);
    expect(seen['x-forwarded-host']).toBe(`shop.localhost:${port}`);
    expect(seen['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('http');
    const chained = json((await send(port, 'shop.localhost', '/', { headers: { 'x-forwarded-for': '203.0.113.7' } })).body).headers;
    expect(chained['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
  });

  it('streams request and response bodies', async () => {
    const { router, port } = await startRouter();
    const web = await backend('h-1');
    router.setRoute('shop', { backends: [{ id: web.id, url: web.url }] });
    const upload = new PassThrough();
    const echoed = send(port, 'shop.localhost', '/echo', { method: 'POST', body: upload, headers: { 'content-type': 'text/plain' } });
    for (let i = 0; i < 5; i++) {
      upload.write(`part ${i};`);
      await new Promise((r) => setTimeout(r, 20));
    }
    upload.end('x'.repeat(1_000_000));
    const res = await echoed;
    expect(res.status).toBe(200);
    expect(res.body).toBe(`part 0;part 1;part 2;part 3;part 4;${'x'.repeat(1_000_000)}`);

    // The first chunk arrives while the backend is still writing: nothing buffers the whole response.
    const firstChunkAt = await new Promise<{ first: number; end: number }>((resolve, reject) => {
      const start = Date.now();
      let first = -1;
      http.get({ host: '127.0.0.1', port, path: '/stream?chunks=6', headers: { host: 'shop.localhost' } }, (r) => {
        r.on('data', () => (first = first === -1 ? Date.now() - start : first));
        r.on('end', () => resolve({ first, end: Date.now() - start }));
      }).on('error', reject);
    });
    expect(firstChunkAt.end - firstChunkAt.first).toBeGreaterThanOrEqual(200);
  });

  it('passes statuses and headers through, HEAD included', async () => {
    const { router, port } = await startRouter();
    const web = await backend('h-1', (_req, res) => {
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.statusCode = 418;
      res.end('teapot');
    });
    router.setRoute('shop', { backends: [{ id: web.id, url: web.url }] });
    const res = await send(port, 'shop.localhost');
    expect(res).toMatchObject({ status: 418, body: 'teapot' });
    expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect((await send(port, 'shop.localhost', '/', { method: 'HEAD' })).body).toBe('');
  });

  it('answers 503 naming the environment and each backend with its error when none is healthy', async () => {
    const { router, port } = await startRouter();
    const dead = await closedPort();
    router.setRoute('shop', { backends: [{ id: 'h-123', url: `http://127.0.0.1:${dead}`, label: 'web' }], healthIntervalMs: 20 });
    await waitFor(() => router.route('shop')?.healthyBackends === 0, 2000, 'the health check to fail');
    const res = await send(port, 'shop.localhost');
    expect(res.status).toBe(503);
    expect(res.headers['x-berth-environment']).toBe('shop');
    expect(res.body).toContain(`environment shop has no healthy backend`);
    expect(res.body).toContain(`web on h-123 (127.0.0.1:${dead}): connection refused`);
    const asJson = await send(port, 'shop.localhost', '/', { headers: { accept: 'application/json' } });
    expect(JSON.parse(asJson.body)).toEqual({
      error: { code: 'no_healthy_backend', message: `environment shop has no healthy backend: web on h-123 (127.0.0.1:${dead}): connection refused` },
    });
    expect(router.route('shop')).toMatchObject({ requests: 2, unavailable: 2 });
  });

  it('answers 502 naming environment and backend when the only backend refuses, and counts it down', async () => {
    const { router, port } = await startRouter();
    const dead = await closedPort();
    router.setRoute('shop', { backends: [{ id: 'h-9', url: `http://127.0.0.1:${dead}` }], healthIntervalMs: 60_000 });
    const res = await send(port, 'shop.localhost', '/', { headers: { accept: 'application/json' } });
    expect(res.status).toBe(502);
    expect(res.headers['x-berth-backend']).toBe('h-9');
    expect(JSON.parse(res.body)).toEqual({ error: { code: 'backend_failed', message: `environment shop: backend h-9 (127.0.0.1:${dead}) failed: connection refused` } });
    expect(router.route('shop')?.backends[0]).toMatchObject({ healthy: false, lastError: 'connection refused', failures: 1, active: 0 });
  });

  it('answers 504 when a backend sends no response in time, and keeps it in rotation', async () => {
    const { router, port } = await startRouter({ responseTimeoutMs: 100 });
    const web = await backend('h-1');
    router.setRoute('shop', { backends: [{ id: web.id, url: web.url }], healthIntervalMs: 60_000 });
    const res = await send(port, 'shop.localhost', '/slow?ms=1000');
    expect(res.status).toBe(504);
    expect(res.body).toContain('no response within 100 ms');
    expect(router.route('shop')?.backends[0]?.healthy).toBe(true);
    // The deadline is for the response headers only: a stream may pause longer between chunks.
    const streamed = await send(port, 'shop.localhost', '/stream?chunks=3&gap=250');
    expect(streamed).toMatchObject({ status: 200, body: 'chunk 2\nchunk 1\nchunk 0\n' });
  });

  it('cuts the client off when the backend dies mid-response, rather than leave it waiting', async () => {
    const { router, port } = await startRouter();
    const web = await backend('h-1', (_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('only part of it');
      setTimeout(() => res.socket?.destroy(), 50);
    });
    router.setRoute('shop', { backends: [{ id: web.id, url: web.url }], healthIntervalMs: 60_000 });
    await expect(send(port, 'shop.localhost')).rejects.toThrow();
    await waitFor(() => router.route('shop')?.backends[0]?.active === 0, 1000, 'the request to end');
    expect(router.route('shop')?.backends[0]?.failures).toBe(1);
  });

  it('reports routes as JSON-able views and removes them', async () => {
    const { router, port } = await startRouter();
    const web = await backend('h-1');
    const view = router.setRoute('shop', { backends: [{ id: web.id, url: web.url, label: 'web' }], healthPath: '/status/204', info: { version: 'v1' } });
    expect(view).toMatchObject({ name: 'shop', url: `http://shop.localhost:${port}/`, healthPath: '/status/204', healthIntervalMs: 1000, info: { version: 'v1' }, healthyBackends: 1 });
    expect(view.backends[0]).toEqual({ id: 'h-1', url: web.url, label: 'web', healthy: true, draining: false, lastCheckedAt: null, lastError: null, lastErrorAt: null, requests: 0, failures: 0, active: 0 });
    // Drained (its host about to restart) and back; an unknown backend is said so.
    expect([router.setDraining('SHOP', 'h-1', true), router.route('shop')?.backends[0]?.draining, router.setDraining('shop', 'h-1', false), router.setDraining('shop', 'h-9', true)]).toEqual([true, true, true, false]);
    expect(JSON.parse(JSON.stringify(router.routes()))).toEqual(router.routes());
    expect(router.removeRoute('SHOP')).toBe(true);
    expect(router.removeRoute('shop')).toBe(false);
    expect(router.routes()).toEqual([]);
    expect((await send(port, 'shop.localhost')).status).toBe(404);
  });

  it('rejects bad routes and options with typed errors, and use after close', async () => {
    const { router } = await startRouter();
    expect(() => router.setRoute('not_a_label', { backends: [] })).toThrow(BerthError);
    expect(() => new EnvironmentRouter({ domain: 'bad..domain' })).toThrow(/invalid router domain/);
    expect(() => new EnvironmentRouter({ healthTimeoutMs: -1 })).toThrow(/healthTimeoutMs/);
    await expect(router.listen({ port: 0 })).rejects.toThrow(/already listening/);
    await router.close();
    expect(() => router.setRoute('shop', { backends: [] })).toThrow(/closed/);
  });
});
