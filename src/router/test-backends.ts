/**
 * Real HTTP servers on 127.0.0.1 to stand in for environment backends in the router's tests, and a
 * client that sets the Host header. Used by the *.test.ts files of this folder only.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { EnvironmentRouter } from './router.js';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface TestBackend {
  readonly id: string;
  readonly port: number;
  /** `http://127.0.0.1:PORT`, as a route's backend url. */
  readonly url: string;
  readonly server: http.Server;
  readonly seen: SeenRequest[];
  /** Like a killed replica: stops listening and resets every open connection. */
  kill(): Promise<void>;
  /** Like a drained replica: stops listening, lets requests in flight finish. */
  drain(): Promise<void>;
  /** Listens again on the same port. */
  restart(): Promise<void>;
}

/**
 * The default behaviour: `/slow?ms=N` answers after N ms, `/echo` answers with the request body,
 * `/stream?chunks=N&gap=MS` sends N chunks MS (50) apart, `/status/N` answers N; everything else answers
 * 200 with `{backend, method, url, headers}`.
 */
function defaultHandler(id: string): RequestListener {
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const json = () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ backend: id, method: req.method, url: req.url, headers: req.headers }));
    };
    if (url.pathname === '/slow') {
      req.resume();
      setTimeout(json, Number(url.searchParams.get('ms') ?? 200));
    } else if (url.pathname === '/echo') {
      res.setHeader('content-type', req.headers['content-type'] ?? 'application/octet-stream');
      req.pipe(res);
    } else if (url.pathname === '/stream') {
      let left = Number(url.searchParams.get('chunks') ?? 3);
      res.writeHead(200, { 'content-type': 'text/plain' });
      const tick = () => {
        if (left-- <= 0) return res.end();
        res.write(`chunk ${left}\n`);
        setTimeout(tick, Number(url.searchParams.get('gap') ?? 50));
      };
      tick();
    } else if (url.pathname.startsWith('/status/')) {
      res.statusCode = Number(url.pathname.slice('/status/'.length));
      res.end(id);
    } else {
      req.resume();
      json();
    }
  };
}

export async function startBackend(id: string, handler?: RequestListener): Promise<TestBackend> {
  const seen: SeenRequest[] = [];
  const handle = handler ?? defaultHandler(id);
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handle(req, res);
  });
  await listenOn(server, 0);
  const port = (server.address() as AddressInfo).port;
  const stop = (hard: boolean) =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      if (hard) server.closeAllConnections();
      else server.closeIdleConnections();
    });
  return {
    id,
    port,
    url: `http://127.0.0.1:${port}`,
    server,
    seen,
    kill: () => stop(true),
    drain: () => stop(false),
    restart: () => listenOn(server, port),
  };
}

function listenOn(server: http.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** A port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await listenOn(server, 0);
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface TestResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Readable;
  agent?: http.Agent;
}

/** One request to the router at 127.0.0.1:port with the given Host header. */
export function send(port: number, host: string, path = '/', options: SendOptions = {}): Promise<TestResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: { host, ...options.headers }, agent: options.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    const body = options.body;
    if (body === undefined || typeof body === 'string') req.end(body);
    else body.pipe(req);
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns true or `timeoutMs` passes; returns how long it took. */
export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
  return Date.now() - start;
}

/** A router listening on 127.0.0.1 and one backend `id`, both closed by `cleanups` (which the test runs after it). */
export async function routerAndBackend(cleanups: Array<() => Promise<void> | void>, id: string): Promise<{ router: EnvironmentRouter; port: number; backend: TestBackend }> {
  const router = new EnvironmentRouter();
  const port = await router.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => router.close());
  const backend = await startBackend(id);
  cleanups.push(() => backend.kill());
  return { router, port, backend };
}
