/** berth's API client against a real HTTP server: answers, errors, streams, aborts, kept-alive connections. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import { ApiClient } from './client.js';

let server: http.Server;
let url: string;
const connections = new Set<string>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    connections.add(`${req.socket.remotePort}`);
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      if (req.headers.authorization !== 'Bearer t0k') {
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'unauthorized', message: 'bad token', hint: 'Set BERTH_TOKEN.' }));
        return;
      }
      if (req.url === '/echo') {
        res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ method: req.method, body: body ? (JSON.parse(body) as unknown) : null }));
      } else if (req.url === '/ndjson') {
        // Split mid-line and mid-character; the last event has no newline.
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        const text = Buffer.from('{"n":1}\n{"s":"é"}\n{"n":3}');
        res.write(text.subarray(0, 5));
        res.write(text.subarray(5, 14));
        res.end(text.subarray(14));
      } else if (req.url === '/sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(`: hello\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\nretry: 10\ndata: ${String(req.headers['last-event-id'] ?? 'none')}\n\n`);
      } else if (req.url === '/slow') {
        setTimeout(() => res.end('{}'), 5000).unref();
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'not_found', message: 'no such thing', hint: 'Look elsewhere.' }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('ApiClient', () => {
  it('sends JSON with the token and parses the answer; calls share one kept-alive connection', async () => {
    const client = new ApiClient({ url: url.replace(/\/$/, ''), token: 't0k' });
    connections.clear();
    expect(await client.post('/echo', { a: [1, 'é'] })).toEqual({ method: 'POST', body: { a: [1, 'é'] } });
    expect(await client.get('/echo')).toEqual({ method: 'GET', body: null });
    expect(await client.put('/echo', { b: true })).toEqual({ method: 'PUT', body: { b: true } });
    expect(connections.size).toBe(1);
  });

  it("turns an error answer into a BerthError with the server's code, message, hint and status", async () => {
    const client = new ApiClient({ url: url.replace(/\/$/, ''), token: 't0k' });
    const err = await client.get('/nothing').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BerthError);
    expect(err).toMatchObject({ code: 'not_found', message: 'no such thing', hint: 'Look elsewhere.', status: 404 });
    const denied = await new ApiClient({ url: url.replace(/\/$/, ''), token: 'wrong' }).get('/echo').catch((e: unknown) => e);
    expect(denied).toMatchObject({ code: 'unauthorized', status: 401 });
  });

  it('streams newline-delimited JSON split anywhere, and a last line without its newline', async () => {
    const client = new ApiClient({ url: url.replace(/\/$/, ''), token: 't0k' });
    const events: unknown[] = [];
    for await (const event of client.stream('/ndjson')) events.push(event);
    expect(events).toEqual([{ n: 1 }, { s: 'é' }, { n: 3 }]);
  });

  it('reads server-sent events: ids, multi-line data, comments and retry skipped, Last-Event-ID sent', async () => {
    const client = new ApiClient({ url: url.replace(/\/$/, ''), token: 't0k' });
    let opened = false;
    const messages: unknown[] = [];
    for await (const m of client.sse('/sse', { lastEventId: '6', onOpen: () => (opened = true) })) messages.push(m);
    expect(opened).toBe(true);
    expect(messages).toEqual([
      { id: '7', data: 'a\nb' },
      { id: undefined, data: '6' },
    ]);
  });

  it('says the server is unreachable, and how to fix it, when nothing listens', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const err = await new ApiClient({ url: `http://127.0.0.1:${port}`, token: 't0k' }).get('/echo').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'server_unreachable' });
    expect((err as BerthError).message).toContain('ECONNREFUSED');
    expect((err as BerthError).hint).toContain('berth server');
  });

  it("stops a request when its signal aborts, with the signal's reason", async () => {
    const client = new ApiClient({ url: url.replace(/\/$/, ''), token: 't0k' });
    const started = Date.now();
    const err = await client.get('/slow', AbortSignal.timeout(100)).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(2000);
    expect((err as Error).name).toBe('TimeoutError');
    const already = await client.get('/echo', AbortSignal.abort(new Error('stopped by the user'))).catch((e: unknown) => e);
    expect((already as Error).message).toBe('stopped by the user');
  });
});
