/** WebSocket upgrades through the router, against a real `ws` server behind a real HTTP backend. */
import { once } from 'node:events';
import { connect as connectRaw } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { EnvironmentRouter } from './router.js';
import { closedPort, send, startBackend } from './test-backends.js';

describe('EnvironmentRouter WebSockets', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const setUp = async (handshakeDelayMs = 0) => {
    const router = new EnvironmentRouter();
    const port = await router.listen({ port: 0, host: '127.0.0.1' });
    cleanups.push(() => router.close());
    const backend = await startBackend('h-ws');
    cleanups.push(() => backend.kill());
    const verifyClient = (_info: unknown, done: (ok: boolean) => void) => void setTimeout(() => done(true), handshakeDelayMs);
    const wss = new WebSocketServer({ server: backend.server, ...(handshakeDelayMs > 0 ? { verifyClient } : {}) });
    cleanups.push(() => {
      for (const client of wss.clients) client.terminate();
      wss.close();
    });
    const upgrades: IncomingMessage[] = [];
    wss.on('connection', (socket, req) => {
      upgrades.push(req);
      socket.on('message', (data, isBinary) => socket.send(isBinary ? data : `echo: ${(data as Buffer).toString()}`, { binary: isBinary }));
    });
    router.setRoute('chat', { backends: [{ id: backend.id, url: backend.url }], healthIntervalMs: 60_000 });
    return { router, port, upgrades, wss };
  };
  const connect = (port: number, host: string, path = '/') => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers: { host } });
    // Tests read failures from events; terminating an unfinished handshake in clean-up emits one more.
    ws.on('error', () => {});
    cleanups.push(() => ws.terminate());
    return ws;
  };

  it('passes the upgrade through and echoes text and binary both ways', async () => {
    const { port, upgrades, router } = await setUp();
    const ws = connect(port, `chat.localhost:${port}`, '/socket?room=1');
    // 'open' follows 'upgrade' synchronously: wait for both at once.
    const [[response]] = (await Promise.all([once(ws, 'upgrade'), once(ws, 'open')])) as [[IncomingMessage], unknown];
    expect(response.headers['x-berth-environment']).toBe('chat');
    expect(response.headers['x-berth-backend']).toBe('h-ws');
    expect(upgrades[0]?.url).toBe('/socket?room=1');
    expect(upgrades[0]?.headers.host).toBe(`chat.localhost:${port}`);
    expect(upgrades[0]?.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(upgrades[0]?.headers['x-forwarded-host']).toBe(`chat.localhost:${port}`);

    const replies: string[] = [];
    ws.on('message', (data, isBinary) => replies.push(isBinary ? `bin:${(data as Buffer).length}` : (data as Buffer).toString()));
    ws.send('hello');
    ws.send(Buffer.alloc(200_000, 7));
    ws.send('x'.repeat(70_000));
    while (replies.length < 3) await once(ws, 'message');
    expect(replies).toEqual(['echo: hello', 'bin:200000', `echo: ${'x'.repeat(70_000)}`]);
    expect(router.route('chat')?.backends[0]?.active).toBe(1);
    ws.close(1000, 'bye');
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(1000);
  });

  it('closes open WebSockets when the router closes', async () => {
    const { router, port } = await setUp();
    const ws = connect(port, 'chat.localhost');
    await once(ws, 'open');
    const closed = once(ws, 'close');
    await router.close();
    await closed;
    expect(ws.readyState).toBe(WebSocket.CLOSED);
  });

  it('refuses upgrades for unknown environments and unreachable backends with a page', async () => {
    const { router, port } = await setUp();
    const unknown = connect(port, 'nope.localhost');
    const [, notFound] = (await once(unknown, 'unexpected-response')) as [unknown, IncomingMessage];
    expect(notFound.statusCode).toBe(404);

    const dead = await closedPort();
    router.setRoute('gone', { backends: [{ id: 'h-dead', url: `http://127.0.0.1:${dead}` }], healthIntervalMs: 60_000 });
    const refused = connect(port, 'gone.localhost');
    const [, badGateway] = (await once(refused, 'unexpected-response')) as [unknown, IncomingMessage];
    expect(badGateway.statusCode).toBe(502);
    expect(badGateway.headers['x-berth-backend']).toBe('h-dead');
    const body: Buffer[] = [];
    for await (const chunk of badGateway) body.push(chunk as Buffer);
    expect(Buffer.concat(body).toString()).toContain(`environment gone: backend h-dead (127.0.0.1:${dead}) failed: connection refused`);
    expect(router.route('gone')?.backends[0]).toMatchObject({ healthy: false, active: 0 });
  });

  it('answers a request offering another protocol (h2c) over HTTP/1.1, as if it had offered none', async () => {
    const { port } = await setUp();
    const offer = { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAARAAAAAAAIAAAAA' };
    const res = await send(port, `chat.localhost:${port}`, '/page?x=1', { headers: offer });
    expect(res.status).toBe(200);
    const seen = JSON.parse(res.body) as { backend: string; url: string; headers: Record<string, string> };
    expect(seen).toMatchObject({ backend: 'h-ws', url: '/page?x=1' });
    expect(seen.headers['upgrade']).toBeUndefined();
    expect(seen.headers['http2-settings']).toBeUndefined();
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    // With a body it cannot be read once the server let the socket go: refused, saying what to do.
    const withBody = await send(port, `chat.localhost:${port}`, '/', { method: 'POST', headers: { ...offer, 'content-length': '2' }, body: 'hi' });
    expect(withBody.status).toBe(400);
    expect(withBody.body).toContain('without its Upgrade header');
  });

  it('drops the backend connection of a client that leaves during a slow handshake', async () => {
    const { router, port, upgrades, wss } = await setUp(300);
    const ws = connect(port, 'chat.localhost');
    await new Promise((resolve) => setTimeout(resolve, 50));
    ws.terminate();
    // The backend's handshake finishes at 300 ms, on a connection the router has closed: it closes too.
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(upgrades.length).toBeLessThanOrEqual(1);
    expect(wss.clients.size).toBe(0);
    expect(router.route('chat')?.backends[0]).toMatchObject({ healthy: true, active: 0, failures: 0 });
  });

  it('closes even while a client holds open an upgrade it was refused', async () => {
    const { router, port } = await setUp();
    const client = connectRaw({ port, host: '127.0.0.1', allowHalfOpen: true });
    cleanups.push(() => void client.destroy());
    await once(client, 'connect');
    client.write('GET / HTTP/1.1\r\nHost: nope.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    await once(client, 'data'); // the 404 page; the client never closes its side
    const closed = await Promise.race([router.close().then(() => 'closed'), new Promise((resolve) => setTimeout(() => resolve('still open after 2 s'), 2000))]);
    expect(closed).toBe('closed');
  });
});
