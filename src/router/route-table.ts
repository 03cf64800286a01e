/**
 * The routes the router serves: per environment name, its backends with their health and counters,
 * and round-robin selection among the healthy ones. No I/O here: the health monitor and the proxy
 * report what they see, this module keeps the state and answers "which backend next".
 */
import { BerthError } from '../core/errors.js';
import { isDnsLabel } from './host-name.js';
import type { RouteGuard } from './route-guard.js';

export interface BackendSpec {
  /** Stable identity, e.g. the host id (`h-…`); health state survives a setRoute for the same id+url. */
  id: string;
  /** `http://HOST:PORT`, nothing after the port. */
  url: string;
  /** What runs there, for people (e.g. the service name `web`); shown in error pages. */
  label?: string;
}

export interface RouteSpec {
  backends: readonly BackendSpec[];
  /** Path the health check GETs; default `/`. */
  healthPath?: string;
  /** Milliseconds between health checks; default 1000. */
  healthIntervalMs?: number;
  /** Anything JSON-able the caller wants to see again in `routes()` (version, mode, …). */
  info?: Record<string, unknown>;
  /**
   * The environment sleeps (no backends): a request calls this, once for every request that comes
   * while it runs, and waits for it; it resolves once the route has backends again (setRoute).
   */
  wake?: () => Promise<void>;
  /** A private environment: who may reach it, checked before anything is sent on or woken. */
  guard?: RouteGuard;
}

export interface BackendView {
  id: string;
  url: string;
  label: string | null;
  /** In rotation. A backend never checked yet counts as healthy (`lastCheckedAt` is null then). */
  healthy: boolean;
  /** Taken out of rotation while its host restarts (env set, env restart); it gets requests only when no other backend can. */
  draining: boolean;
  lastCheckedAt: string | null;
  /** The most recent failure (check or request), kept after recovery for debugging; null if none. */
  lastError: string | null;
  lastErrorAt: string | null;
  /** Requests (and WebSocket upgrades) sent to this backend, including retried ones. */
  requests: number;
  /** Requests that failed at this backend (connection errors, timeouts, broken responses). */
  failures: number;
  /** Requests and WebSockets open right now. */
  active: number;
}

export interface RouteView {
  name: string;
  /** Where the environment answers, once the router listens; null before. */
  url: string | null;
  healthPath: string;
  healthIntervalMs: number;
  info: Record<string, unknown> | null;
  healthyBackends: number;
  backends: BackendView[];
  requests: number;
  /** Requests answered 503 because no backend was healthy. */
  unavailable: number;
  /** It has no backends and wakes at its next request. */
  asleep: boolean;
  /** Only requests its guard lets in reach it. */
  private: boolean;
  /** The latest request's arrival (null: none since the route was made, e.g. by a server start). */
  lastRequestAt: string | null;
}

export const DEFAULT_HEALTH_PATH = '/';
export const DEFAULT_HEALTH_INTERVAL_MS = 1000;
const MIN_HEALTH_INTERVAL_MS = 10;

export class Backend {
  readonly label: string | undefined;
  /** Parsed once: the proxy takes it as its target on every request. */
  readonly target: URL;
  /** `10.1.0.5:8080`, for messages. */
  readonly address: string;
  /** For http.request: the host name without IPv6 brackets. */
  readonly hostname: string;
  readonly port: number;
  healthy = true;
  /** Taken out of rotation by the control plane (its host is about to restart): new requests go to the others. */
  draining = false;
  lastCheckedAt: number | null = null;
  lastError: string | null = null;
  lastErrorAt: number | null = null;
  /** When a request last took it out of rotation: a health check begun earlier must not undo that. */
  passiveDownAt = 0;
  requests = 0;
  failures = 0;
  active = 0;

  constructor(
    readonly id: string,
    readonly url: string,
    label: string | undefined,
  ) {
    this.label = label;
    this.target = new URL(url);
    this.address = this.target.host;
    this.hostname = this.target.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = Number(this.target.port || 80);
  }

  get key(): string {
    return backendKey(this.id, this.url);
  }

  /** `web on h-123 (10.1.0.5:8080)` or `h-123 (10.1.0.5:8080)`. */
  describe(): string {
    return this.label ? `${this.label} on ${this.id} (${this.address})` : `${this.id} (${this.address})`;
  }

  /** Returns true when this took the backend out of rotation (it was healthy before). */
  markDown(reason: string, now: number, passive: boolean): boolean {
    const wasHealthy = this.healthy;
    this.healthy = false;
    this.lastError = reason;
    this.lastErrorAt = now;
    if (passive) this.passiveDownAt = now;
    else this.lastCheckedAt = now;
    return wasHealthy;
  }

  /** A passing check begun at `checkStartedAt`; returns true when it put the backend back in rotation. */
  markUp(checkStartedAt: number, now: number): boolean {
    this.lastCheckedAt = now;
    if (this.passiveDownAt > checkStartedAt) return false;
    const wasHealthy = this.healthy;
    this.healthy = true;
    return !wasHealthy;
  }

  view(): BackendView {
    return {
      id: this.id,
      url: this.url,
      label: this.label ?? null,
      healthy: this.healthy,
      draining: this.draining,
      lastCheckedAt: isoOrNull(this.lastCheckedAt),
      lastError: this.lastError,
      lastErrorAt: isoOrNull(this.lastErrorAt),
      requests: this.requests,
      failures: this.failures,
      active: this.active,
    };
  }
}

/**
 * One environment's route. The object lives as long as the route; `update` swaps its backend list in
 * one assignment, so a request picks from either the old list or the new one, never a mix, and
 * in-flight requests keep the Backend they were given.
 */
export class Route {
  backends: readonly Backend[] = [];
  healthPath = DEFAULT_HEALTH_PATH;
  healthIntervalMs = DEFAULT_HEALTH_INTERVAL_MS;
  info: Record<string, unknown> | undefined;
  requests = 0;
  unavailable = 0;
  wake: (() => Promise<void>) | undefined;
  guard: RouteGuard | undefined;
  lastRequestAt: number | null = null;
  private cursor = 0;
  private waking: Promise<void> | undefined;
  /** Settles the wake under way for the requests it holds, once backends are back. */
  private routed: (() => void) | undefined;
  /** Since when nothing has been in flight and no request came (see idleMs). */
  private quietSince = Date.now();

  constructor(readonly name: string) {}

  /** A request arrived (health checks are the router's own and do not count). */
  touch(now: number): void {
    this.lastRequestAt = now;
    this.quietSince = now;
  }

  /**
   * How long it has gone without a request: 0 while any is in flight (a WebSocket included),
   * else since the later of the last arrival and the last time a caller saw one in flight.
   */
  idleMs(now: number): number {
    if (this.backends.some((b) => b.active > 0)) {
      this.quietSince = now;
      return 0;
    }
    return now - this.quietSince;
  }

  /**
   * The wake under way, or a new one: every request held meanwhile waits for the same. It settles
   * as soon as the route has backends again (the wake may still be recording that it is done), or
   * when the wake fails.
   */
  wakeOnce(wake: () => Promise<void>): Promise<void> {
    if (!this.waking) {
      const routed = new Promise<void>((resolve) => (this.routed = resolve));
      const started = Promise.race([wake(), routed]).finally(() => {
        if (this.waking === started) this.waking = undefined;
        this.routed = undefined;
      });
      this.waking = started;
    }
    return this.waking;
  }

  /**
   * Replaces the backends; one with the same id+url as before keeps its health state and counters.
   * Returns the backends that left the route.
   */
  update(spec: RouteSpec): Backend[] {
    const previous = new Map(this.backends.map((b) => [b.key, b]));
    this.backends = spec.backends.map((b) => {
      const kept = previous.get(backendKey(b.id, b.url));
      previous.delete(backendKey(b.id, b.url));
      return kept ?? new Backend(b.id, b.url, b.label);
    });
    this.healthPath = spec.healthPath ?? DEFAULT_HEALTH_PATH;
    this.healthIntervalMs = spec.healthIntervalMs ?? DEFAULT_HEALTH_INTERVAL_MS;
    this.info = spec.info === undefined ? undefined : structuredClone(spec.info);
    this.wake = spec.wake;
    this.guard = spec.guard;
    if (this.backends.length > 0) this.routed?.();
    return [...previous.values()];
  }

  /**
   * The next healthy backend in round-robin order that is not in `exclude`; undefined if none. A
   * draining one only when no other healthy one is left (better a backend about to restart than a 503).
   */
  pick(exclude?: ReadonlySet<Backend>): Backend | undefined {
    return this.next(exclude, false) ?? this.next(exclude, true);
  }

  private next(exclude: ReadonlySet<Backend> | undefined, draining: boolean): Backend | undefined {
    const backends = this.backends;
    const count = backends.length;
    for (let i = 0; i < count; i++) {
      const index = (this.cursor + i) % count;
      const backend = backends[index];
      if (backend && backend.healthy && backend.draining === draining && !exclude?.has(backend)) {
        this.cursor = (index + 1) % count;
        return backend;
      }
    }
    return undefined;
  }

  healthyCount(): number {
    let healthy = 0;
    for (const backend of this.backends) if (backend.healthy) healthy++;
    return healthy;
  }

  view(url: string | null): RouteView {
    return {
      name: this.name,
      url,
      healthPath: this.healthPath,
      healthIntervalMs: this.healthIntervalMs,
      info: this.info === undefined ? null : structuredClone(this.info),
      healthyBackends: this.healthyCount(),
      backends: this.backends.map((b) => b.view()),
      requests: this.requests,
      unavailable: this.unavailable,
      asleep: this.backends.length === 0 && this.wake !== undefined,
      private: this.guard !== undefined,
      lastRequestAt: isoOrNull(this.lastRequestAt),
    };
  }
}

function backendKey(id: string, url: string): string {
  return `${id}\n${url}`;
}

function isoOrNull(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** Checks a route before it replaces anything: a bad spec leaves the current route untouched. */
export function validateRoute(name: string, spec: RouteSpec): void {
  const invalid = (message: string, hint: string) => new BerthError('validation_failed', message, hint, { environment: name });
  if (!isDnsLabel(name)) {
    throw invalid(`invalid environment name ${JSON.stringify(name)}`, 'Use one DNS label: a-z, 0-9 and inner hyphens, at most 63 characters, lower case.');
  }
  if (spec.wake && spec.backends.length > 0) throw invalid(`environment ${name}: a route with backends cannot be asleep`, 'Give a sleeping route no backends.');
  const seen = new Set<string>();
  for (const backend of spec.backends) {
    if (!backend.id) throw invalid(`environment ${name}: a backend has an empty id`, 'Give every backend an id, e.g. its host id.');
    let url: URL;
    try {
      url = new URL(backend.url);
    } catch {
      throw invalid(`environment ${name}: backend ${backend.id} has an invalid url ${JSON.stringify(backend.url)}`, 'Use http://HOST:PORT.');
    }
    if (url.protocol !== 'http:' || !url.hostname || url.username || url.password || url.pathname !== '/' || url.search || url.hash) {
      throw invalid(`environment ${name}: backend ${backend.id} url ${JSON.stringify(backend.url)} is not http://HOST:PORT`, 'Use http://HOST:PORT with nothing after the port.');
    }
    const key = backendKey(backend.id, backend.url);
    if (seen.has(key)) throw invalid(`environment ${name}: backend ${backend.id} at ${backend.url} is listed twice`, 'List each backend once.');
    seen.add(key);
  }
  const path = spec.healthPath;
  if (path !== undefined && (!path.startsWith('/') || /[\s]/.test(path))) {
    throw invalid(`environment ${name}: health path ${JSON.stringify(path)} must start with / and contain no spaces`, 'Use a path such as /healthz.');
  }
  const interval = spec.healthIntervalMs;
  if (interval !== undefined && (!Number.isFinite(interval) || interval < MIN_HEALTH_INTERVAL_MS)) {
    throw invalid(`environment ${name}: health interval ${interval} ms is below ${MIN_HEALTH_INTERVAL_MS} ms`, 'Use a health interval of at least 10 ms (default 1000).');
  }
}
