/**
 * `GET /v1/hosts/:id/shell`, upgraded to a WebSocket: the API's end of a shell session.
 *
 * Query: `cols`, `rows` (the terminal's size, default 80x24), `term` (TERM, default
 * xterm-256color), and optionally `command` (run instead of a login shell), `cwd`, `user`.
 * Auth: `Authorization: Bearer <token>`, as every API call; or, from the dashboard, its token cookie,
 * taken only from a page of this server (the Origin is this host), so that no other site can open
 * a terminal with a visitor's cookie (cross-site WebSocket hijacking). Refusals come before the
 * upgrade, as an HTTP status with the API's JSON error body.
 *
 * Frames: binary both ways are the terminal's bytes. Text frames are JSON: from the client
 * `{"type":"resize","cols":C,"rows":R}`; from the server, last, `{"type":"exit","code":N|null,
 * "signal":S|null,"error"?:"…"}`, after which the server closes the socket. Closing the socket
 * hangs the terminal up.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { z } from 'zod';
import { BerthError, isBerthError, type ErrorBody } from '../core/errors.js';
import { cookieToken } from '../server/http/auth.js';
import { requireRole, type Principal } from '../tokens/token-service.js';
import { routeRole } from '../tokens/route-roles.js';
import { auditCaller, type AuditLog } from '../audit/audit-log.js';
import { requireHostInScope, type ScopeLookups } from '../tokens/scope-guard.js';
import { SHELL_TERM_PATTERN, SHELL_USER_PATTERN } from '../protocol/shell.js';
import type { ShellBroker, ShellExit, ShellHandle, ShellRequest } from './shell-broker.js';

const SHELL_PATH = /^\/v1\/hosts\/([A-Za-z0-9_-]{1,64})\/shell$/;
/** Keeps an idle session's connection open through proxies that drop quiet ones. */
const PING_INTERVAL_MS = 30_000;

const dimension = (fallback: number) => z.coerce.number().int().min(1).max(1000).default(fallback);
const shellQuery = z
  .object({
    cols: dimension(80),
    rows: dimension(24),
    term: z.string().regex(SHELL_TERM_PATTERN, 'a terminal type such as xterm-256color').default('xterm-256color'),
    // It travels in the URL, which the HTTP server takes up to 16 KiB of headers for.
    command: z.string().min(1).max(8 * 1024, 'at most 8 KiB: put a longer script in a file on the host, or pipe it in').optional(),
    cwd: z.string().startsWith('/', 'an absolute path').optional(),
    user: z.string().regex(SHELL_USER_PATTERN, 'a Unix user name').optional(),
  })
  .strict();

const clientFrame = z.object({ type: z.literal('resize'), cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) });

export interface ShellEndpointDeps {
  broker: ShellBroker;
  /** Who a bearer token is (throws `unauthorized` for an unknown, revoked or expired one). */
  authenticate: (token: string) => Promise<Principal>;
  /** Hosts' groups, to hold a scoped token to its own (src/tokens/scope.ts). */
  hostGroups: ScopeLookups['hostGroups'];
  /** Where each terminal opened or refused is recorded; absent: nowhere. */
  audit?: AuditLog;
  log: (line: string) => void;
}

/** Serves shell sessions on the API's HTTP server; returns a function that stops accepting them. */
export function serveShells(server: Server, deps: ShellEndpointDeps): () => void {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1024 * 1024 });
  // A session still being opened when the server stops is not upgraded after the others were
  // terminated: its socket would hold the API server's close open (see accept).
  const state = { stopped: false };
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const started = performance.now();
    // Filled in by accept() once the token is known, so that a refusal says whose it was.
    const who: { principal?: Principal } = {};
    const audit = (status: number) =>
      deps.audit?.record({
        ...auditCaller(who.principal),
        method: 'GET',
        route: '/v1/hosts/:id/shell',
        path: new URL(req.url ?? '/', 'http://berth').pathname,
        status,
        durationMs: performance.now() - started,
        ip: req.socket.remoteAddress ?? null,
      });
    accept(wss, req, socket, head, deps, who, state).then(
      () => audit(101),
      (err: unknown) => {
        if (!isBerthError(err)) deps.log(`shell: ${err instanceof Error ? err.message : String(err)}`);
        const refusal = isBerthError(err) ? err : new BerthError('internal', 'the shell session could not be opened', 'See the server log.');
        audit(refusal.status);
        refuse(socket, refusal);
      },
    );
  };
  server.on('upgrade', onUpgrade);
  return () => {
    state.stopped = true;
    server.off('upgrade', onUpgrade);
    for (const ws of wss.clients) ws.terminate();
    wss.close();
  };
}

async function accept(wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer, deps: ShellEndpointDeps, who: { principal?: Principal }, state: { stopped: boolean }): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://berth');
  const hostId = SHELL_PATH.exec(url.pathname)?.[1];
  if (!hostId) throw new BerthError('not_found', `no WebSocket endpoint at ${url.pathname}`, 'Shell sessions are at /v1/hosts/HOST/shell.');
  const token = tokenOf(req);
  if (!token) throw new BerthError('unauthorized', 'missing API token', "Send `Authorization: Bearer <token>`; the token is in the server's data dir (file `token`).");
  const principal = await deps.authenticate(token);
  who.principal = principal;
  requireRole(principal, routeRole('GET', '/v1/hosts/:id/shell') ?? 'admin', 'a terminal on a host');
  await requireHostInScope(principal, hostId, deps);
  const tenantId = principal.tenantId;
  const parsed = shellQuery.safeParse(Object.fromEntries(url.searchParams));
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; ');
    throw new BerthError('validation_failed', `bad shell request: ${problems}`, 'Give cols and rows as 1-1000, and cwd as an absolute path.');
  }
  const request: ShellRequest = stripUndefined(parsed.data);
  // Checked before the host starts anything: `ws` refuses a bad handshake itself, but only later.
  if (req.headers.upgrade?.toLowerCase() !== 'websocket' || !/^[+/0-9A-Za-z]{22}==$/.test(req.headers['sec-websocket-key'] ?? '')) {
    throw new BerthError('validation_failed', 'not a WebSocket handshake', 'Open the terminal with a WebSocket client (berth host shell does).');
  }

  // Output that comes before the socket is ready (it cannot, in practice: the upgrade follows at
  // once) waits in `early`.
  let ws: WebSocket | undefined;
  const early: (() => void)[] = [];
  const whenOpen = (f: () => void) => (ws ? f() : early.push(f));
  const handle: ShellHandle = await deps.broker.open(tenantId, hostId, request, {
    output: (data, taken) => whenOpen(() => ws?.send(data, { binary: true }, (err) => !err && taken())),
    ended: (exit: ShellExit) =>
      whenOpen(() => {
        ws?.send(JSON.stringify({ type: 'exit', ...exit }));
        ws?.close(1000, 'session ended');
      }),
    pauseInput: () => whenOpen(() => ws?.pause()),
    resumeInput: () => whenOpen(() => ws?.resume()),
  }, principal.tokenName);
  if (state.stopped) socket.destroy();
  if (socket.destroyed) return handle.close();
  // A socket that closes before it became a WebSocket (a handshake `ws` refused) leaves no terminal open.
  socket.once('close', () => ws === undefined && handle.close());
  wss.handleUpgrade(req, socket, head, (client) => {
    ws = client;
    const ping = setInterval(() => client.ping(), PING_INTERVAL_MS);
    ping.unref();
    client.on('message', (data: RawData, isBinary: boolean) => {
      const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) return handle.input(bytes);
      const frame = clientFrame.safeParse(safeJson(bytes.toString('utf8')));
      if (frame.success) handle.resize(frame.data.cols, frame.data.rows);
    });
    client.on('close', () => {
      clearInterval(ping);
      handle.close();
    });
    client.on('error', () => client.terminate());
    for (const f of early.splice(0)) f();
  });
}

function tokenOf(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const cookie = cookieToken(req.headers.cookie);
  if (!cookie) return undefined;
  let origin: string | undefined;
  try {
    origin = req.headers.origin ? new URL(req.headers.origin).host : undefined;
  } catch {
    origin = undefined;
  }
  if (!origin || origin !== req.headers.host) {
    throw new BerthError('forbidden', `a terminal was asked for from another site (${req.headers.origin ?? 'no origin'}) with the dashboard's cookie`, "Open terminals from this server's dashboard, or send the token in an Authorization header.");
  }
  return cookie;
}

function refuse(socket: Duplex, err: BerthError): void {
  const body = JSON.stringify(err.toJSON() satisfies ErrorBody);
  const reason = err.status === 401 ? 'Unauthorized' : err.status === 403 ? 'Forbidden' : 'Refused';
  socket.end(`HTTP/1.1 ${err.status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
