/**
 * The agent's supervisor: the set of services of one host. It converges to a desired set (validated
 * whole first), starts each service only once its dependencies are ready, stops in reverse dependency
 * order, and survives agent restarts: a new Supervisor on the same state dir re-adopts running services.
 *
 * Dependencies order starts; they do not bind lifetimes: a service whose dependency later restarts or
 * fails keeps running, and converge() restarts only services whose configHash changed (not their
 * dependents: a dependent that must see a dependency's new config carries it in its own hash). A
 * ready service that declares `reload` and whose new spec changes only its env is signalled instead.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { ServiceSpec, ServiceStatus } from '../../protocol/messages.js';
import { SERVICE_REMOVED_REASON } from '../../protocol/reasons.js';
import { SupervisorDetachedError, UnknownServiceError } from './errors.js';
import type { LogReadOptions } from './log-read.js';
import { Service, type ServiceRuntime } from './service.js';
import { ServiceStateStore } from './state-file.js';
import { dependencyOrder, dependentsOf, validateServiceSet } from './validate.js';

export interface SupervisorOptions {
  /** Per-service state files and FIFOs; must survive an agent restart (not a restart of the host). */
  stateDir: string;
  /** `<name>.log` and its rotations. */
  logDir: string;
  log?: (line: string) => void;
  /** Every status change of every service, as it happens. */
  onStatus?: (status: ServiceStatus) => void;
  /** Epoch milliseconds; timestamps, `since` and run durations use it. Default Date.now. */
  clock?: () => number;
  /** How often processes adopted from a previous agent are checked for exit. Default 500 ms. */
  adoptedPollMs?: number;
}

export interface WaitOptions {
  /** Stops waiting (the promise rejects with the signal's reason); what was started keeps going. */
  signal?: AbortSignal;
}

/** Environment variable whose value identifies a service's processes (see proc.serviceProcesses). */
export const SERVICE_MARKER_ENV = 'BERTH_SERVICE_ID';
const DEFAULT_ADOPTED_POLL_MS = 500;

export class Supervisor {
  private readonly services = new Map<string, Service>();
  /** Service names, dependencies first. */
  private order: string[] = [];
  private readonly runtime: ServiceRuntime;
  private readonly onStatus: (status: ServiceStatus) => void;
  private readonly waiters = new Set<() => void>();
  /** converge() and stopAll() run one at a time, in call order. */
  private exclusive: Promise<void> = Promise.resolve();
  private pumpScheduled = false;
  private detached = false;

  constructor(opts: SupervisorOptions) {
    mkdirSync(opts.stateDir, { recursive: true });
    const log = opts.log ?? ((line: string) => void process.stderr.write(`berth-agent: supervisor: ${line}\n`));
    this.onStatus = opts.onStatus ?? (() => undefined);
    // Stable across agent restarts (same state dir), distinct between supervisors on one machine.
    const instance = createHash('sha256').update(resolve(opts.stateDir)).digest('hex').slice(0, 12);
    this.runtime = {
      stateDir: opts.stateDir,
      logDir: opts.logDir,
      clock: opts.clock ?? Date.now,
      adoptedPollMs: opts.adoptedPollMs ?? DEFAULT_ADOPTED_POLL_MS,
      store: new ServiceStateStore(opts.stateDir),
      log,
      marker: (name) => `${SERVICE_MARKER_ENV}=${name}.${instance}`,
      changed: (service) => this.changed(service),
    };
    for (const record of this.runtime.store.loadAll(log)) {
      const service = new Service(record.spec, this.runtime);
      this.services.set(service.name, service);
      service.restore(record);
    }
    this.order = dependencyOrder(new Map([...this.services].map(([name, s]) => [name, s.spec])));
    this.schedulePump();
  }

  /**
   * Makes the running set match `specs`: validates the whole set first (InvalidServiceSetError, nothing
   * changed), stops removed services and those whose configHash changed (dependents first), then starts
   * new and changed ones in dependency order. Services with an unchanged configHash are left alone,
   * whatever their state. A changed service that is ready, declares `reload` and whose spec changed only
   * in env is reloaded instead (env file rewritten, its signal to its main process, the new spec taken
   * in place). Resolves once every started service has settled (ready, failed, in backoff, or blocked by
   * a failed dependency).
   */
  async converge(specs: readonly ServiceSpec[], opts: WaitOptions = {}): Promise<void> {
    this.assertAttached();
    const set = validateServiceSet(specs);
    const started = await this.runExclusive(async () => {
      const removed = [...this.services.keys()].filter((name) => !set.specs.has(name));
      const changed = [...set.specs.values()]
        .filter((spec) => {
          const current = this.services.get(spec.name);
          return current !== undefined && current.spec.configHash !== spec.configHash;
        })
        .map((spec) => spec.name);
      // Before any stop: a reload is a signal, over at once, and needs the process as it runs now.
      const reloaded = new Set(
        changed.filter((name) => {
          const current = this.services.get(name);
          const next = set.specs.get(name);
          return current !== undefined && next !== undefined && reloadable(current.spec, next) && current.reload(next);
        }),
      );
      const restarted = changed.filter((name) => !reloaded.has(name));
      const removedSet = new Set(removed);
      await this.stopDependentsFirst([...removed, ...restarted], (name) =>
        removedSet.has(name) ? SERVICE_REMOVED_REASON : 'configuration changed',
      );
      await Promise.all(removed.flatMap((name) => this.services.get(name)?.dispose() ?? []));
      for (const name of removed) this.services.delete(name);
      const added: string[] = [];
      for (const spec of set.specs.values()) {
        const current = this.services.get(spec.name);
        if (!current) {
          this.services.set(spec.name, new Service(spec, this.runtime));
          added.push(spec.name);
        } else if (restarted.includes(spec.name)) {
          current.replaceSpec(spec);
        }
      }
      this.order = set.order;
      for (const name of [...restarted, ...added]) this.services.get(name)?.requestStart();
      this.schedulePump();
      return [...restarted, ...added];
    });
    await this.waitSettled(started, opts.signal);
  }

  /** Every service, dependencies first. */
  status(): ServiceStatus[] {
    return this.order.flatMap((name) => this.services.get(name)?.status() ?? []);
  }

  /** Starts a stopped or failed service (crash count reset) once its dependencies are ready; resolves when settled. */
  async start(name: string, opts: WaitOptions = {}): Promise<ServiceStatus> {
    const service = this.get(name);
    await service.whenStopped();
    service.requestStart();
    this.schedulePump();
    await this.waitSettled([name], opts.signal);
    return service.status();
  }

  /** Stops one service (not its dependents); resolves once its processes are gone. */
  async stop(name: string): Promise<ServiceStatus> {
    const service = this.get(name);
    await service.stop('stopped on request');
    return service.status();
  }

  /** Stops then starts one service; `restarts` counts only restarts made by the restart policy. */
  async restart(name: string, opts: WaitOptions = {}): Promise<ServiceStatus> {
    const service = this.get(name);
    await service.stop('restart requested');
    return this.start(name, opts);
  }

  /** Stops every service, dependents first; they stay stopped, also across an agent restart. */
  stopAll(): Promise<void> {
    this.assertAttached();
    return this.runExclusive(() => this.stopDependentsFirst([...this.services.keys()], () => 'all services stopped'));
  }

  /** The service's log as lines: what is retained (or its last `tailLines`), then new lines when following. */
  logs(name: string, opts: LogReadOptions = {}): AsyncIterable<string> {
    return this.get(name).log.lines(opts);
  }

  /** The service's retained log files, oldest first, the current `<name>.log` last. */
  logFiles(name: string): string[] {
    return this.get(name).log.files();
  }

  /**
   * The agent is exiting: stop watching and reading, leave every service running. A new Supervisor on
   * the same state dir adopts them.
   */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    for (const service of this.services.values()) service.detach();
    for (const wake of [...this.waiters]) wake();
  }

  private get(name: string): Service {
    this.assertAttached();
    const service = this.services.get(name);
    if (!service) throw new UnknownServiceError(name);
    return service;
  }

  private assertAttached(): void {
    if (this.detached) throw new SupervisorDetachedError();
  }

  private runExclusive<T>(op: () => Promise<T>): Promise<T> {
    const result = this.exclusive.then(op);
    this.exclusive = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /** Stops `names` in parallel where possible, each only after its dependents among them have stopped. */
  private async stopDependentsFirst(names: string[], reason: (name: string) => string): Promise<void> {
    const targets = new Set(names);
    const specs = new Map([...this.services].map(([name, service]) => [name, service.spec]));
    const stops = new Map<string, Promise<void>>();
    const visiting = new Set<string>();
    const stopOne = (name: string): Promise<void> => {
      const known = stops.get(name);
      if (known) return known;
      if (visiting.has(name)) return Promise.resolve(); // a cycle in a set loaded from old state files
      visiting.add(name);
      const first = dependentsOf(name, specs).filter((dependent) => targets.has(dependent)).map(stopOne);
      visiting.delete(name);
      const stop = Promise.all(first).then(() => this.services.get(name)?.stop(reason(name)));
      stops.set(name, stop);
      return stop;
    };
    await Promise.all(names.map(stopOne));
  }

  private changed(service: Service): void {
    if (this.detached) return;
    try {
      this.onStatus(service.status());
    } catch (e) {
      this.runtime.log(`onStatus listener failed: ${(e as Error).message}`);
    }
    this.schedulePump();
    for (const wake of [...this.waiters]) wake();
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => this.pump());
  }

  /** Launches every pending service whose dependencies are all ready; says what the others wait for. */
  private pump(): void {
    this.pumpScheduled = false;
    if (this.detached) return;
    for (const name of this.order) {
      const service = this.services.get(name);
      if (!service || service.phase !== 'pending') continue;
      let blocked: string | undefined;
      const waiting: string[] = [];
      for (const depName of service.spec.dependsOn) {
        const dep = this.services.get(depName);
        const depState = dep?.status().state;
        if (!dep) blocked = `dependency ${depName} is not configured`;
        else if (depState === 'failed') blocked = `dependency ${depName} failed`;
        else if (dep.phase === 'idle') blocked = `dependency ${depName} is stopped`;
        else if (dep.phase === 'pending' && depState === 'stopped') blocked = `dependency ${depName} cannot start`;
        else if (dep.phase !== 'ready') waiting.push(depName);
        if (blocked) break;
      }
      if (blocked) service.setWaiting('stopped', blocked);
      else if (waiting.length > 0) service.setWaiting('starting', `waiting for ${waiting.join(', ')} to be ready`);
      else service.launch();
    }
  }

  private waitSettled(names: readonly string[], signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (signal?.aborted) finish(() => reject(abortError(signal)));
        else if (this.detached) finish(() => reject(new SupervisorDetachedError()));
        else if (names.every((name) => this.services.get(name)?.settled ?? true)) finish(resolve);
      };
      const finish = (settle: () => void): void => {
        this.waiters.delete(check);
        signal?.removeEventListener('abort', check);
        settle();
      };
      this.waiters.add(check);
      signal?.addEventListener('abort', check, { once: true });
      // After the pump that a converge or start scheduled has run.
      queueMicrotask(check);
    });
  }
}

/**
 * `next` may be applied by a reload: it declares one, and nothing but env (and so the configHash)
 * differs from `current`. Any other change (cmd, user, ready, the reload signal itself, …) needs a new
 * process.
 */
export function reloadable(current: ServiceSpec, next: ServiceSpec): boolean {
  if (next.reload === undefined) return false;
  const { env: _currentEnv, configHash: _currentHash, ...currentRest } = current;
  const { env: _nextEnv, configHash: _nextHash, ...nextRest } = next;
  return isDeepStrictEqual(currentRest, nextRest);
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException('the wait was aborted', 'AbortError');
}
