/**
 * Guarded (private) routes through a real router and real backends: refused requests never reach
 * the backend or wake a sleeping route, admitted ones arrive without the credential the guard took
 * out, the access path is answered by the router, and WebSocket upgrades are guarded too.
 */
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { ACCESS_PATH, type RouteGuard } from './route-guard.js';
import { routerAndBackend, send } from './test-backends.js';

/** Lets in requests with `x-pass: yes` (taking the header out); the access path sets a cookie. */
const guard: RouteGuard = {
  check: (req: IncomingMessage) => {
    const pass = req.headers['x-pass'] === 'yes';
    delete req.headers['x-pass'];
    return Promise.resolve(pass ? undefined : { status: 401, code: 'environment_private', message: 'environment secret is private: no pass', environment: 'secret' });
  },
  login: (req: IncomingMessage) =>
    Promise.resolve(new URL(req.url ?? '/', 'http://x').searchParams.get('grant') === 'good' ? { setCookie: 'c=1; HttpOnly', location: '/' } : { status: 401, code: 'environment_private', message: 'bad grant' }),
};

describe('EnvironmentRouter guarded routes', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const setUp = () => routerAndBackend(cleanups, 'h-private');

  it('refuses what the guard refuses before the backend sees it, and sends the rest on without the credential', async () => {
    const { router, port, backend } = await setUp();
    router.setRoute('secret', { backends: [{ id: backend.id, url: backend.url }], guard, healthIntervalMs: 60_000 });
    expect(router.route('secret')).toMatchObject({ private: true });
    const refused = await send(port, `secret.localhost:${port}`, '/', { headers: { accept: 'application/json' } });
    expect(refused.status).toBe(401);
    expect(JSON.parse(refused.body)).toEqual({ error: { code: 'environment_private', message: 'environment secret is private: no pass' } });
    expect(backend.seen).toEqual([]);
    const admitted = await send(port, `secret.localhost:${port}`, '/x', { headers: { 'x-pass': 'yes' } });
    expect(admitted.status).toBe(200);
    const seen = JSON.parse(admitted.body) as { headers: Record<string, string> };
    expect(seen.headers['x-pass']).toBeUndefined();
    expect(backend.seen.map((r) => r.url)).toEqual(['/x']);
  });

  it("keeps berth's credentials from every app, private or public, and leaves other cookies", async () => {
    const { router, port, backend } = await setUp();
    router.setRoute('secret', { backends: [{ id: backend.id, url: backend.url }], guard, healthIntervalMs: 60_000 });
    router.setRoute('open', { backends: [{ id: backend.id, url: backend.url }], healthIntervalMs: 60_000 });
    for (const name of ['secret', 'open']) {
      const answer = await send(port, `${name}.localhost:${port}`, '/', { headers: { 'x-pass': 'yes', 'x-berth-token': 'tok', cookie: 'theme=dark; berth_access=abc.def; lang=en' } });
      const seen = JSON.parse(answer.body) as { headers: Record<string, string> };
      expect([name, seen.headers['x-berth-token'], seen.headers['cookie']]).toEqual([name, undefined, 'theme=dark; lang=en']);
    }
    const alone = await send(port, `open.localhost:${port}`, '/', { headers: { cookie: 'berth_access=abc.def' } });
    expect((JSON.parse(alone.body) as { headers: Record<string, string> }).headers['cookie']).toBeUndefined();
  });

  it('answers the access path itself: a cookie and a redirect, or the refusal', async () => {
    const { router, port, backend } = await setUp();
    router.setRoute('secret', { backends: [{ id: backend.id, url: backend.url }], guard, healthIntervalMs: 60_000 });
    const ok = await send(port, `secret.localhost:${port}`, `${ACCESS_PATH}?grant=good`);
    expect([ok.status, ok.headers.location, ok.headers['set-cookie']]).toEqual([303, '/', ['c=1; HttpOnly']]);
    expect((await send(port, `secret.localhost:${port}`, `${ACCESS_PATH}?grant=bad`)).status).toBe(401);
    expect(backend.seen).toEqual([]);
    // A public route's app gets that path like any other.
    router.setRoute('open', { backends: [{ id: backend.id, url: backend.url }], healthIntervalMs: 60_000 });
    expect((await send(port, `open.localhost:${port}`, `${ACCESS_PATH}?grant=good`)).status).toBe(200);
  });

  it('does not wake a sleeping private route for a request it refuses', async () => {
    const { router, port, backend } = await setUp();
    let wakes = 0;
    router.setRoute('secret', {
      backends: [],
      guard,
      wake: () => {
        wakes++;
        router.setRoute('secret', { backends: [{ id: backend.id, url: backend.url }], guard, healthIntervalMs: 60_000 });
        return Promise.resolve();
      },
    });
    expect((await send(port, `secret.localhost:${port}`)).status).toBe(401);
    expect(wakes).toBe(0);
    expect((await send(port, `secret.localhost:${port}`, '/', { headers: { 'x-pass': 'yes' } })).status).toBe(200);
    expect(wakes).toBe(1);
  });

  it('guards WebSocket upgrades too', async () => {
    const { router, port, backend } = await setUp();
    router.setRoute('secret', { backends: [{ id: backend.id, url: backend.url }], guard, healthIntervalMs: 60_000 });
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers: { host: `secret.localhost:${port}` } });
    ws.on('error', () => {});
    cleanups.push(() => ws.terminate());
    const [, res] = (await once(ws, 'unexpected-response')) as [unknown, IncomingMessage];
    expect(res.statusCode).toBe(401);
    expect(backend.seen).toEqual([]);
  });
});
