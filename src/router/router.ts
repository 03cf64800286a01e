/**
 * The environment router: a reverse proxy owned by the berth server that sends
 * `http://NAME.<domain>:<port>` to the backends of environment NAME. Routes change at run time
 * (`setRoute` swaps an environment's backends in one step, for zero-downtime deploys), backends are
 * health-checked per route, and every failure answers with a page that names the environment and why.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { BerthError } from '../core/errors.js';
import {
  asleepPage,
  environmentNotFoundPage,
  noEnvironmentPage,
  noHealthyBackendPage,
  sendErrorPage,
  writeErrorToSocket,
  type RouterErrorPage,
} from './error-pages.js';
import { HealthMonitor } from './health-monitor.js';
import { environmentFromHost, isDomain, normaliseDomain, portOfHost } from './host-name.js';
import { plainResponse, withoutUpgrade } from './plain-upgrade.js';
import { hasNoBody, ProxyForwarder } from './proxy-forwarder.js';
import { Route, validateRoute, type Backend, type RouteSpec, type RouteView } from './route-table.js';
import { ACCESS_PATH, guardFailedPage, stripCredentials } from './route-guard.js';

export interface RouterOptions {
  /** Environments answer at `NAME.<domain>`; default `localhost` (browsers resolve *.localhost to loopback). */
  domain?: string;
  /** A health check without an answer within this fails; default 1000 ms. */
  healthTimeoutMs?: number;
  /** A new backend connection not established within this is a connection error; default 3000 ms. */
  connectTimeoutMs?: number;
  /** Backend silence before its response headers → 504; default 120 000 ms. */
  responseTimeoutMs?: number;
  /** Other backends a bodiless request may try after connection errors; default 2. */
  connectRetries?: number;
  /** Backends leaving and re-entering rotation; never per request. */
  log?: (line: string) => void;
  /**
   * Called for each HTTP response once it ends, headers sent (WebSocket upgrades are not counted):
   * the environment it was for (null when no route has the name the request asked) and its status.
   * For metrics: it must be cheap and must not throw.
   */
  onResponse?: (environment: string | null, status: number) => void;
}

export interface ListenOptions {
  /** 0 picks a free port. */
  port: number;
  /** Default: all interfaces, as http.Server.listen does. */
  host?: string;
  /** HTTPS with this certificate (and chain) and key, PEM (router-tls.ts); URLs are https:// then. */
  tls?: { cert: Buffer | string; key: Buffer | string };
}

type Selected = { route: Route; backend: Backend } | { route?: Route; page: RouterErrorPage };
type Target = Selected | { route: Route; waking: Promise<void> };

export class EnvironmentRouter {
  readonly domain: string;
  private readonly table = new Map<string, Route>();
  private readonly health: HealthMonitor;
  private readonly forwarder: ProxyForwarder;
  private readonly log: (line: string) => void;
  private readonly onResponse: ((environment: string | null, status: number) => void) | undefined;
  private server: http.Server | https.Server | undefined;
  private redirect: http.Server | undefined;
  private port: number | undefined;
  private closing: Promise<void> | undefined;
  /** Every socket the HTTP server handed over for an upgrade, until it closes. */
  private readonly upgradeSockets = new Set<Duplex>();
  private readonly closeHooks: Array<() => void> = [];

  constructor(options: RouterOptions = {}) {
    this.domain = normaliseDomain(options.domain ?? 'localhost');
    if (!isDomain(this.domain)) {
      throw new BerthError('validation_failed', `invalid router domain ${JSON.stringify(options.domain)}`, 'Use a domain name such as localhost or envs.example.com.');
    }
    this.log = options.log ?? (() => {});
    this.onResponse = options.onResponse;
    this.health = new HealthMonitor({
      timeoutMs: positive(options.healthTimeoutMs, 1000, 'healthTimeoutMs'),
      hostHeaderFor: (route) => this.hostFor(route.name),
      onChange: (route, backend, healthy) => this.logChange(route, backend, healthy, 'health check'),
    });
    this.forwarder = new ProxyForwarder({
      connectTimeoutMs: positive(options.connectTimeoutMs, 3000, 'connectTimeoutMs'),
      responseTimeoutMs: positive(options.responseTimeoutMs, 120_000, 'responseTimeoutMs'),
      connectRetries: Math.max(0, Math.floor(options.connectRetries ?? 2)),
      onBackendDown: (route, backend) => this.logChange(route, backend, false, 'request'),
    });
  }

  /**
   * Creates or replaces the route of environment `name` (case-insensitive). The new backend list
   * takes effect for the next request; requests in flight finish on the backends they have. Backends
   * with the same id+url as before keep their health; new ones count as healthy until a check fails.
   */
  setRoute(name: string, spec: RouteSpec): RouteView {
    this.assertOpen();
    const key = name.toLowerCase();
    validateRoute(key, spec);
    let route = this.table.get(key);
    if (!route) {
      route = new Route(key);
      this.table.set(key, route);
    }
    const removed = route.update(spec);
    this.health.watch(route);
    for (const backend of route.backends) this.forwarder.unretire(backend);
    this.retireUnused(removed);
    return route.view(this.urlFor(key));
  }

  /**
   * Takes a backend of route `name` out of rotation for new requests (`draining`), or puts it back;
   * requests in flight on it finish. False when the route has no such backend.
   */
  setDraining(name: string, backendId: string, draining: boolean): boolean {
    const backend = this.table.get(name.toLowerCase())?.backends.find((b) => b.id === backendId);
    if (backend) backend.draining = draining;
    return backend !== undefined;
  }

  /** Returns false when there was no such route. In-flight requests finish; nothing is retried on it. */
  removeRoute(name: string): boolean {
    const key = name.toLowerCase();
    const route = this.table.get(key);
    if (!route) return false;
    this.table.delete(key);
    this.health.unwatch(route);
    this.retireUnused(route.update({ backends: [] }));
    return true;
  }

  routes(): RouteView[] {
    return [...this.table.values()].sort((a, b) => a.name.localeCompare(b.name)).map((r) => r.view(this.urlFor(r.name)));
  }

  route(name: string): RouteView | undefined {
    const route = this.table.get(name.toLowerCase());
    return route?.view(this.urlFor(route.name));
  }

  /** `http://NAME.<domain>:<port>/` (https:// with TLS) once listening; null before. */
  urlFor(name: string): string | null {
    if (this.port === undefined) return null;
    const secure = this.server instanceof https.Server;
    return `${secure ? 'https' : 'http'}://${this.hostFor(name.toLowerCase())}${this.port === (secure ? 443 : 80) ? '' : `:${this.port}`}/`;
  }

  /** Starts answering; resolves with the bound port (useful with port 0). */
  async listen(options: ListenOptions): Promise<number> {
    this.assertOpen();
    if (this.server) throw new BerthError('invalid_state', 'the router is already listening', 'Call listen() once per router.');
    // No whole-request deadline: bodies may stream for as long as they need (headers still time out).
    const server = options.tls ? https.createServer({ requestTimeout: 0, cert: options.tls.cert, key: options.tls.key }, this.handleRequest) : http.createServer({ requestTimeout: 0 }, this.handleRequest);
    server.on('upgrade', this.handleUpgrade);
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port, options.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.server = undefined;
      throw new BerthError('conflict', `the router cannot listen on ${options.host ?? '*'}:${options.port}: ${err instanceof Error ? err.message : String(err)}`, 'Pick another port or stop what holds it.', undefined, { cause: err });
    }
    this.port = (server.address() as AddressInfo).port;
    return this.port;
  }

  /** A new certificate and key for connections from now on (open ones keep theirs); HTTPS only. */
  setCertificate(pair: { cert: Buffer | string; key: Buffer | string }): void {
    if (!(this.server instanceof https.Server)) throw new BerthError('invalid_state', 'the router does not serve HTTPS', 'Start it with a certificate (--router-tls-cert and --router-tls-key).');
    this.server.setSecureContext({ cert: pair.cert, key: pair.key });
  }

  /**
   * Plain HTTP on another port that sends every request to the same address over HTTPS (308 keeps
   * the method and body), for people who type a name without https://. Call after listen() with TLS.
   */
  async listenRedirect(options: { port: number; host?: string }): Promise<number> {
    this.assertOpen();
    const httpsPort = this.port;
    if (!(this.server instanceof https.Server) || httpsPort === undefined) throw new BerthError('invalid_state', 'the router redirects to HTTPS only once it serves HTTPS', 'Start it with a certificate first.');
    const server = http.createServer((req, res) => {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '');
      if (environmentFromHost(host, this.domain).kind === 'none') return sendErrorPage(req, res, noEnvironmentPage(this.domain, portOfHost(req.headers.host)));
      const location = `https://${host}${httpsPort === 443 ? '' : `:${httpsPort}`}${req.url ?? '/'}`;
      res.writeHead(308, { location, 'content-length': '0', connection: 'close' }).end();
    });
    this.redirect = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new BerthError('conflict', `the router's HTTP redirect cannot listen on ${options.host ?? '*'}:${options.port}: ${err.message}`, 'Pick another port or stop what holds it.', undefined, { cause: err })));
      server.listen(options.port, options.host, () => resolve());
    });
    return (server.address() as AddressInfo).port;
  }

  /** `stop` runs when the router closes (what serves it, as a certificate watcher, stops with it). */
  whenClosed(stop: () => void): void {
    this.closeHooks.push(stop);
  }

  /** Stops listening and health checks, and closes every open connection, WebSockets included. */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  /** The request handler, public so the router can also serve from a server the caller owns. */
  readonly handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const found = this.resolve(req);
    const onResponse = this.onResponse;
    if (onResponse) {
      const environment = found.route?.name ?? null;
      res.once('close', () => {
        if (res.headersSent) onResponse(environment, res.statusCode);
      });
    }
    const send = (target: Target) => {
      if ('page' in target) sendErrorPage(req, res, target.page);
      else if ('waking' in target) this.afterWake(target, res, send);
      else {
        stripCredentials(req);
        this.forwarder.web(req, res, target.route, target.backend);
      }
    };
    if (!found.route) return send({ page: found.page });
    const { route } = found;
    if (!route.guard) return send(this.choose(route));
    // A private environment: its access link is answered here; any other request is let in first.
    if ((req.url ?? '/').split('?')[0] === ACCESS_PATH) {
      void route.guard.login(req).then(
        (answer) => {
          if ('status' in answer) return sendErrorPage(req, res, answer);
          res.writeHead(303, { location: answer.location, 'set-cookie': answer.setCookie, 'cache-control': 'no-store', 'content-length': '0' }).end();
        },
        (err: unknown) => sendErrorPage(req, res, guardFailedPage(route.name, err)),
      );
      return;
    }
    this.guarded(route, req, res, send);
  };

  /** The 'upgrade' handler: WebSocket upgrades pass through to a backend, others are refused. */
  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    // The HTTP server stops watching an upgraded socket's errors; an unwatched error would crash us.
    socket.on('error', () => socket.destroy());
    // Nor does it close such a socket (an error page's, one waiting for a guard or a wake): close() does.
    this.upgradeSockets.add(socket);
    socket.once('close', () => this.upgradeSockets.delete(socket));
    if (req.headers.upgrade?.toLowerCase() !== 'websocket') {
      // HTTP lets a server ignore an Upgrade it does not take and answer over HTTP/1.1 (RFC 9110
      // 7.8), as nginx does: clients that offer h2c (curl --http2, Java's HttpClient) get their page.
      if (!hasNoBody(req)) {
        const page: RouterErrorPage = { status: 400, code: 'upgrade_not_supported', message: `the router speaks HTTP/1.1 and WebSocket only, not ${req.headers.upgrade ?? '(none)'}`, hint: 'Send the request without its Upgrade header.' };
        writeErrorToSocket(req, socket, page);
        return;
      }
      this.handleRequest(withoutUpgrade(req), plainResponse(req, socket));
      return;
    }
    const send = (target: Target) => {
      if (this.closing) socket.destroy(); // a guard or wake that ended after the router closed
      else if ('page' in target) writeErrorToSocket(req, socket, target.page);
      else if ('waking' in target) this.afterWake(target, socket, send);
      else {
        stripCredentials(req);
        this.forwarder.ws(req, socket, head, target.route, target.backend);
      }
    };
    const found = this.resolve(req);
    if (!found.route) return send({ page: found.page });
    if (found.route.guard) this.guarded(found.route, req, socket, send);
    else send(this.choose(found.route));
  };

  /** How long environment `name` has gone without a request (0 while one is in flight); undefined: no route. */
  idleMs(name: string, now = Date.now()): number | undefined {
    return this.table.get(name.toLowerCase())?.idleMs(now);
  }

  /** The backend a request to `route` goes to (counted), the error page that answers it, or the wake it waits for. */
  private choose(route: Route): Target {
    route.requests++;
    route.touch(Date.now());
    const backend = route.pick();
    if (backend) return { route, backend };
    // A sleeping environment: the request waits for its wake (one for every request meanwhile).
    if (route.backends.length === 0 && route.wake) return { route, waking: route.wakeOnce(route.wake) };
    route.unavailable++;
    return { route, page: noHealthyBackendPage(route.name, route.backends) };
  }

  /** A private environment's request: sent on once its guard lets it in, else refused. */
  private guarded(route: Route, req: IncomingMessage, client: { destroyed: boolean }, send: (target: Target) => void): void {
    const guard = route.guard;
    if (!guard) return send(this.choose(route));
    guard.check(req).then(
      (page) => {
        if (client.destroyed) return;
        send(page ? { route, page } : this.choose(route));
      },
      (err: unknown) => {
        if (!client.destroyed) send({ route, page: guardFailedPage(route.name, err) });
      },
    );
  }

  /** Holds a request until its environment woke, then sends it on (or answers why it could not wake). */
  private afterWake(target: { route: Route; waking: Promise<void> }, client: { destroyed: boolean }, send: (next: Target) => void): void {
    const { route } = target;
    const answer = (next: Selected) => {
      if (!client.destroyed) send(next);
    };
    target.waking.then(
      () => {
        const backend = route.pick();
        if (backend) return answer({ route, backend });
        route.unavailable++;
        answer({ route, page: route.backends.length === 0 ? asleepPage(route.name, 'it went back to sleep before the request could be sent') : noHealthyBackendPage(route.name, route.backends) });
      },
      (err: unknown) => {
        route.unavailable++;
        answer({ route, page: asleepPage(route.name, err instanceof Error ? err.message : String(err)) });
      },
    );
  }

  private resolve(req: IncomingMessage): { route: Route } | { route?: undefined; page: RouterErrorPage } {
    const host = req.headers.host;
    const target = environmentFromHost(host, this.domain);
    if (target.kind === 'none') return { page: noEnvironmentPage(this.domain, portOfHost(host)) };
    const route = this.table.get(target.name);
    return route ? { route } : { page: environmentNotFoundPage(target.name) };
  }

  private async shutDown(): Promise<void> {
    this.health.stop();
    for (const stop of this.closeHooks) stop();
    const redirect = this.redirect;
    if (redirect) {
      redirect.closeAllConnections();
      await new Promise((resolve) => redirect.close(resolve));
    }
    const server = this.server;
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      // After closeAllConnections: upgraded sockets are no longer the HTTP server's, but still count
      // as its connections, so close() waits for them.
      this.forwarder.destroy();
      for (const socket of this.upgradeSockets) socket.destroy();
      await closed;
    } else {
      this.forwarder.destroy();
      for (const socket of this.upgradeSockets) socket.destroy();
    }
  }

  /** Backends that left a route: let go of our connections to addresses no route uses any more. */
  private retireUnused(removed: readonly Backend[]): void {
    if (removed.length === 0) return;
    const inUse = new Set<string>();
    for (const route of this.table.values()) for (const backend of route.backends) inUse.add(backend.address);
    for (const backend of removed) if (!inUse.has(backend.address)) this.forwarder.retire(backend);
  }

  private assertOpen(): void {
    if (this.closing) throw new BerthError('invalid_state', 'the router is closed', 'Create a new router.');
  }

  private hostFor(name: string): string {
    return `${name}.${this.domain}`;
  }

  private logChange(route: Route, backend: Backend, healthy: boolean, by: string): void {
    const state = healthy ? 'back in rotation' : `out of rotation (${by}): ${backend.lastError ?? 'unhealthy'}`;
    this.log(`router: environment ${route.name}: ${backend.describe()} ${state}`);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new BerthError('validation_failed', `router option ${name} must be a positive number of milliseconds, not ${value}`, `Leave it out for the default (${fallback}).`);
  }
  return value;
}

export type { BackendSpec, BackendView, RouteSpec, RouteView } from './route-table.js';
export type { RouterErrorCode } from './error-pages.js';
