/**
 * Sends one request (or WebSocket upgrade) to a chosen backend through http-proxy-3, and deals with
 * what goes wrong: a connection error takes the backend out of rotation at once and, when the request
 * has no body (so nothing of it has been read), sends it again to another healthy backend — once the
 * connection was made, only if its method may be repeated. That is what lets a replica die or a route
 * switch without a client seeing an error, and no order is placed twice.
 */
import type { TLSSocket } from 'node:tls';
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import { ProxyServer } from 'http-proxy-3';
import { BerthError } from '../core/errors.js';
import { backendFailedPage, CONNECTION_ERROR_CODES, describeBackendError, errorCode, sendErrorPage, writeErrorToSocket } from './error-pages.js';
import type { Backend, Route } from './route-table.js';

export interface ForwarderOptions {
  /** A new backend connection not established within this counts as a connection error. */
  connectTimeoutMs: number;
  /** Backend silence this long before its response headers → 504; the backend stays in rotation. */
  responseTimeoutMs: number;
  /** How many other backends a bodiless request may try after a connection error. */
  connectRetries: number;
  /** A request's connection error took the backend out of rotation. */
  onBackendDown: (route: Route, backend: Backend, reason: string) => void;
}

/** One try of one request at one backend. */
interface Attempt {
  readonly route: Route;
  readonly backend: Backend;
  proxyReq: ClientRequest | undefined;
  connectTimedOut: boolean;
  responseTimedOut: boolean;
  /** The connection to the backend was established (a reused one was): the request may have reached it. */
  connected: boolean;
  /** The WebSocket handshake completed: the socket now carries frames, no HTTP answer may follow. */
  upgraded: boolean;
  /** Counted out of `backend.active` (once, whichever of error or close comes first). */
  ended: boolean;
  failed: boolean;
}

export class ProxyForwarder {
  private readonly proxy = new ProxyServer();
  /** Keep-alive connections to backends: a request costs no TCP handshake once the pool is warm. */
  private readonly agent = new http.Agent({ keepAlive: true, timeout: 30_000 });
  private readonly freshAgent = new http.Agent({ keepAlive: false });
  /** The attempt in progress per incoming request; http-proxy-3's events find theirs here. */
  private readonly attempts = new WeakMap<IncomingMessage, Attempt>();
  /** Upgraded sockets on both sides: the HTTP server no longer tracks them, close() must. */
  private readonly upgradedSockets = new Set<Duplex>();
  /** Backend addresses no route uses any more (`10.1.0.5:8080`). */
  private readonly retiredAddresses = new Set<string>();

  constructor(private readonly options: ForwarderOptions) {
    // Emitted once the backend request has a socket (not for requests with Expect: those get no timeouts).
    this.proxy.on('proxyReq', (proxyReq, req, _res, _options, socket) => {
      const attempt = this.attempts.get(req);
      if (!attempt) return;
      attempt.proxyReq = proxyReq;
      this.armTimeouts(attempt, proxyReq, socket);
    });
    // http-proxy-3's first pass marks a DELETE or OPTIONS without Content-Length as bodiless (length
    // 0, chunking dropped) yet still streams its body after it: the backend would read those bytes
    // as a request of their own (one whose X-Forwarded-* the client wrote). Its framing is put back.
    const framing = new WeakMap<IncomingMessage, string>();
    this.proxy.before('web', 'deleteLength', (req: IncomingMessage) => {
      const chunked = req.headers['transfer-encoding'];
      if (chunked !== undefined && req.headers['content-length'] === undefined) framing.set(req, chunked);
    });
    // (Before the pass after it: http-proxy-3's `after` inserts before the named pass as well.)
    this.proxy.before('web', 'timeout', (req: IncomingMessage) => {
      const chunked = framing.get(req);
      if (chunked === undefined) return;
      delete req.headers['content-length'];
      req.headers['transfer-encoding'] = chunked;
    });
    this.proxy.on('proxyRes', (proxyRes, req, res) => this.onBackendResponse(proxyRes, req, res));
    this.proxy.on('proxyReqWs', (proxyReq, req) => this.onBackendUpgradeRequest(proxyReq, req));
    this.proxy.on('open', (backendSocket) => this.trackUpgraded(backendSocket));
    // Only client-socket errors arrive here (every call passes its own callback): drop the socket.
    this.proxy.on('error', (_err, _req, res) => res.destroy());
  }

  web(req: IncomingMessage, res: ServerResponse, route: Route, backend: Backend): void {
    res.once('close', () => {
      const attempt = this.attempts.get(req);
      if (attempt) this.endAttempt(attempt);
    });
    this.send(req, res, route, backend, forwardedHeaders(req), hasNoBody(req), new Set(), 0);
  }

  ws(req: IncomingMessage, socket: Duplex, head: Buffer, route: Route, backend: Backend): void {
    const attempt = this.begin(req, route, backend);
    this.trackUpgraded(socket);
    socket.once('close', () => this.endAttempt(attempt));
    // No agent: an upgraded connection leaves any pool anyway, and a fresh one proves the backend is up.
    this.proxy.ws(req, socket, head, { target: backend.target, headers: forwardedHeaders(req) }, (err) => {
      if (attempt.failed) return;
      attempt.failed = true;
      backend.failures++;
      if (attempt.upgraded) return; // http-proxy-3 closes the client socket; frames cannot carry a page
      const reason = describeBackendError(err);
      if (this.isConnectionError(attempt, err)) this.markDown(route, backend, reason);
      // WebSocket clients reconnect on their own; http-proxy-3 closes this socket right after the page.
      writeErrorToSocket(req, socket, backendFailedPage(route.name, backend, reason, attempt.responseTimedOut), { 'x-berth-backend': backend.id });
    });
  }

  /**
   * A backend address left every route: close our pooled idle connections to it now, and the busy
   * ones as their requests finish, so a drained backend is not held open by our pool until the
   * keep-alive timeout.
   */
  retire(backend: Backend): void {
    this.retiredAddresses.add(backend.address);
    this.closeIdleConnections(backend);
  }

  /** The address is in a route (again). */
  unretire(backend: Backend): void {
    this.retiredAddresses.delete(backend.address);
  }

  private closeIdleConnections(backend: Backend): void {
    // The agent names its pools `host:port:` plus options; requests here pass host and port only.
    const prefix = `${backend.hostname}:${backend.port}:`;
    for (const [name, sockets] of Object.entries(this.agent.freeSockets)) {
      if (name.startsWith(prefix)) for (const socket of sockets ?? []) socket.destroy();
    }
  }

  /** Closes upgraded sockets and the backend connection pool; in-flight HTTP requests die with their clients. */
  destroy(): void {
    for (const socket of this.upgradedSockets) socket.destroy();
    this.upgradedSockets.clear();
    this.agent.destroy();
    this.freshAgent.destroy();
  }

  private send(
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    backend: Backend,
    headers: Record<string, string>,
    retryable: boolean,
    tried: Set<Backend>,
    retries: number,
  ): void {
    const attempt = this.begin(req, route, backend);
    res.setHeader('x-berth-environment', route.name);
    res.setHeader('x-berth-backend', backend.id);
    const options = {
      target: backend.target,
      // A request that may not be sent twice goes on a connection of its own: a pooled one the backend
      // closed just as it was reused would leave no way to tell whether the backend got the request.
      agent: IDEMPOTENT_METHODS.has(req.method ?? '') ? this.agent : this.freshAgent,
      headers,
      // A retry has nothing left to read from the request (only bodiless ones are retried, and it has
      // ended): an empty stream ends the backend request instead.
      ...(retries > 0 ? { buffer: Readable.from([]) } : {}),
    };
    this.proxy.web(req, res, options, (err) => this.onAttemptError(err, req, res, attempt, headers, retryable, tried, retries));
  }

  private begin(req: IncomingMessage, route: Route, backend: Backend): Attempt {
    const attempt: Attempt = { route, backend, proxyReq: undefined, connected: false, connectTimedOut: false, responseTimedOut: false, upgraded: false, ended: false, failed: false };
    this.attempts.set(req, attempt);
    backend.requests++;
    backend.active++;
    return attempt;
  }

  private endAttempt(attempt: Attempt): void {
    if (attempt.ended) return;
    attempt.ended = true;
    attempt.backend.active--;
  }

  private onAttemptError(
    err: Error,
    req: IncomingMessage,
    res: ServerResponse,
    attempt: Attempt,
    headers: Record<string, string>,
    retryable: boolean,
    tried: Set<Backend>,
    retries: number,
  ): void {
    // Errors of an earlier attempt (its listeners stay on the request) or a second error of this one.
    if (this.attempts.get(req) !== attempt || attempt.failed) return;
    attempt.failed = true;
    this.endAttempt(attempt);
    if (res.destroyed || req.socket.destroyed) return; // the client left: nothing to answer, not the backend's fault
    const { route, backend } = attempt;
    backend.failures++;
    if (res.headersSent) {
      res.destroy(); // the backend broke off mid-response: so must we, or the client waits forever
      return;
    }
    const reason = describeBackendError(err);
    const connectionError = this.isConnectionError(attempt, err);
    // A pooled keep-alive connection the backend closed just as it was reused says nothing about the
    // backend's health: retry (on a fresh connection) without taking it out of rotation.
    const code = errorCode(err);
    const staleConnection = connectionError && !attempt.connectTimedOut && attempt.proxyReq?.reusedSocket === true && (code === 'ECONNRESET' || code === 'EPIPE');
    if (connectionError && !staleConnection) {
      tried.add(backend);
      this.markDown(route, backend, reason);
    }
    // Once connected, the backend may have acted on the request before the connection broke: only a
    // method that may be repeated (RFC 9110 9.2.2) is sent again then, as nginx does.
    const mayRepeat = !attempt.connected || IDEMPOTENT_METHODS.has(req.method ?? '');
    if (connectionError && retryable && mayRepeat && retries < this.options.connectRetries) {
      // The route's current backends: after a setRoute switch that is the new set.
      const next = staleConnection ? (route.pick(new Set([...tried, backend])) ?? (backend.healthy ? backend : undefined)) : route.pick(tried);
      if (next) {
        this.send(req, res, route, next, headers, retryable, tried, retries + 1);
        return;
      }
    }
    sendErrorPage(req, res, backendFailedPage(route.name, backend, reason, attempt.responseTimedOut));
  }

  private isConnectionError(attempt: Attempt, err: unknown): boolean {
    if (attempt.responseTimedOut) return false;
    if (attempt.connectTimedOut) return true;
    const code = errorCode(err);
    return code !== undefined && CONNECTION_ERROR_CODES.has(code);
  }

  private markDown(route: Route, backend: Backend, reason: string): void {
    if (backend.markDown(reason, Date.now(), true)) this.options.onBackendDown(route, backend, reason);
  }

  private armTimeouts(attempt: Attempt, proxyReq: ClientRequest, socket: Socket): void {
    const { connectTimeoutMs, responseTimeoutMs } = this.options;
    attempt.connected = !socket.connecting;
    if (socket.connecting) {
      socket.once('connect', () => (attempt.connected = true));
      const timer = setTimeout(() => {
        attempt.connectTimedOut = true;
        proxyReq.destroy(new BerthError('deadline_exceeded', `connection not established within ${connectTimeoutMs} ms`, 'Check that the backend host is up and reachable.'));
      }, connectTimeoutMs);
      socket.once('connect', () => clearTimeout(timer));
      proxyReq.once('close', () => clearTimeout(timer));
    }
    // Socket inactivity while waiting for the response headers; cleared once they arrive so long
    // streams (server-sent events, downloads that pause) are not cut.
    proxyReq.setTimeout(responseTimeoutMs, () => {
      attempt.responseTimedOut = true;
      proxyReq.destroy(new BerthError('deadline_exceeded', `no response within ${responseTimeoutMs} ms`, 'The application took too long to answer.'));
    });
  }

  private onBackendResponse(proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const backend = this.attempts.get(req)?.backend;
    this.attempts.get(req)?.proxyReq?.setTimeout(0);
    if (backend && this.retiredAddresses.size > 0) {
      // The connection goes back to the pool once the response ended; then it can be closed.
      proxyRes.once('end', () => {
        if (this.retiredAddresses.has(backend.address)) setImmediate(() => this.closeIdleConnections(backend));
      });
    }
    // A backend that dies mid-body: cut the client's response off too rather than leave it hanging.
    proxyRes.once('close', () => {
      if (proxyRes.complete || res.destroyed) return;
      const attempt = this.attempts.get(req);
      if (attempt && !attempt.failed) {
        attempt.failed = true;
        attempt.backend.failures++;
      }
      res.destroy();
    });
  }

  private onBackendUpgradeRequest(proxyReq: ClientRequest, req: IncomingMessage): void {
    const attempt = this.attempts.get(req);
    if (!attempt) return;
    attempt.proxyReq = proxyReq;
    proxyReq.once('socket', (socket: Socket) => this.armTimeouts(attempt, proxyReq, socket));
    // These run before http-proxy-3's own listeners, which copy the backend's headers to the client.
    const label = (backendResponse: IncomingMessage) => {
      backendResponse.headers['x-berth-environment'] = attempt.route.name;
      backendResponse.headers['x-berth-backend'] = attempt.backend.id;
    };
    proxyReq.once('upgrade', (backendResponse: IncomingMessage) => {
      attempt.upgraded = true;
      label(backendResponse);
    });
    proxyReq.once('response', label);
  }

  private trackUpgraded(socket: Duplex): void {
    this.upgradedSockets.add(socket);
    socket.once('close', () => this.upgradedSockets.delete(socket));
  }
}

const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** The request has no body at all, so it can be sent again as it is. */
export function hasNoBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0');
}

/**
 * X-Forwarded-For gains the client's address; Proto and Host are set, not appended: the router is
 * where requests enter, so whatever a client claimed there is not to be trusted. Host itself passes
 * unchanged, so applications see NAME.<domain>.
 */
function forwardedHeaders(req: IncomingMessage): Record<string, string> {
  const address = req.socket.remoteAddress ?? '';
  const client = address.startsWith('::ffff:') ? address.slice(7) : address;
  const prior = req.headers['x-forwarded-for'];
  const priorText = Array.isArray(prior) ? prior.join(', ') : prior;
  return {
    'x-forwarded-for': priorText ? `${priorText}, ${client}` : client,
    'x-forwarded-proto': (req.socket as Partial<TLSSocket>).encrypted === true ? 'https' : 'http',
    'x-forwarded-host': req.headers.host ?? '',
  };
}
