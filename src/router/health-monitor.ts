/**
 * Active health checks: per route, every `healthIntervalMs`, a GET of the route's health path on each
 * backend. A response below 500 within the timeout is healthy; anything else takes the backend out of
 * rotation at once, and the next passing check puts it back. Timers and probe sockets are unref'd so
 * the monitor never keeps the process alive, and `stop()` ends everything at once.
 */
import http from 'node:http';
import type { Backend, Route } from './route-table.js';
import { describeBackendError } from './error-pages.js';

export interface ProbeOptions {
  path: string;
  /** Sent as Host, so the application sees the same name as for real traffic. */
  hostHeader: string;
  timeoutMs: number;
  signal: AbortSignal;
}

/** One health check: undefined when healthy, else why not (for people: "connection refused"). */
export function probeBackend(backend: Backend, options: ProbeOptions): Promise<string | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (reason: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal.removeEventListener('abort', onAbort);
      request.destroy();
      resolve(reason);
    };
    const onAbort = () => settle('health check cancelled');
    // A fresh connection per check (no agent): the check must prove the backend still accepts them.
    const request = http.request({
      hostname: backend.hostname,
      port: backend.port,
      path: options.path,
      method: 'GET',
      agent: false,
      headers: { host: options.hostHeader, 'user-agent': 'berth-router-health', accept: '*/*', connection: 'close' },
    });
    const timer = setTimeout(() => settle(`health check GET ${options.path} got no answer within ${options.timeoutMs} ms`), options.timeoutMs);
    timer.unref();
    request.on('socket', (socket) => socket.unref());
    request.on('response', (response) => {
      const status = response.statusCode ?? 0;
      response.resume();
      settle(status < 500 ? undefined : `health check GET ${options.path} answered ${status}`);
    });
    request.on('error', (err) => settle(describeBackendError(err)));
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener('abort', onAbort, { once: true });
    request.end();
  });
}

export interface HealthMonitorOptions {
  timeoutMs: number;
  /** The Host header a route's checks send, e.g. `web.localhost`. */
  hostHeaderFor: (route: Route) => string;
  /** Called when a backend leaves or re-enters rotation (not on every check). */
  onChange: (route: Route, backend: Backend, healthy: boolean) => void;
}

interface Watch {
  route: Route;
  timer: NodeJS.Timeout | undefined;
  intervalMs: number;
  checking: boolean;
}

export class HealthMonitor {
  private readonly watches = new Map<Route, Watch>();
  private readonly stopping = new AbortController();

  constructor(private readonly options: HealthMonitorOptions) {}

  /** Starts checking the route, or picks up a changed interval; idempotent. */
  watch(route: Route): void {
    if (this.stopping.signal.aborted) return;
    const existing = this.watches.get(route);
    if (existing) {
      if (existing.intervalMs === route.healthIntervalMs) return;
      existing.intervalMs = route.healthIntervalMs;
      if (!existing.checking) this.schedule(existing, route.healthIntervalMs);
      return;
    }
    const watch: Watch = { route, timer: undefined, intervalMs: route.healthIntervalMs, checking: false };
    this.watches.set(route, watch);
    this.schedule(watch, route.healthIntervalMs);
  }

  unwatch(route: Route): void {
    const watch = this.watches.get(route);
    if (!watch) return;
    clearTimeout(watch.timer);
    this.watches.delete(route);
  }

  /** Stops every timer and cancels the checks in flight. */
  stop(): void {
    this.stopping.abort();
    for (const watch of this.watches.values()) clearTimeout(watch.timer);
    this.watches.clear();
  }

  private schedule(watch: Watch, delayMs: number): void {
    clearTimeout(watch.timer);
    watch.timer = setTimeout(() => void this.tick(watch), delayMs);
    watch.timer.unref();
  }

  private async tick(watch: Watch): Promise<void> {
    watch.checking = true;
    const startedAt = Date.now();
    const route = watch.route;
    // The list as it is now: a setRoute since the last tick is checked from this tick on.
    const backends = route.backends;
    const hostHeader = this.options.hostHeaderFor(route);
    const results = await Promise.all(
      backends.map((backend) =>
        probeBackend(backend, { path: route.healthPath, hostHeader, timeoutMs: this.options.timeoutMs, signal: this.stopping.signal }),
      ),
    );
    watch.checking = false;
    if (this.watches.get(route) !== watch) return;
    const now = Date.now();
    backends.forEach((backend, i) => {
      const failure = results[i];
      const changed = failure === undefined ? backend.markUp(startedAt, now) : backend.markDown(failure, now, false);
      if (changed) this.options.onChange(route, backend, failure === undefined);
    });
    // Checks never overlap: a slow check delays the next one instead of piling up.
    this.schedule(watch, Math.max(0, watch.intervalMs - (now - startedAt)));
  }
}
