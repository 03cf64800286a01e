/**
 * One supervised service: its state machine and its current process.
 *
 *   idle ─requestStart─▶ pending ─launch (dependencies ready)─▶ starting ─check passes─▶ ready
 *                                                                │   │                   │
 *          ┌──────────── exit: the restart policy says wait ◀────┘   │ check never       │ exit
 *          ▼                                                         │ passes            │
 *       backoff ─delay─▶ starting       exit: policy says no ────────┼───────────────────┤
 *                                       (crash loop, never, …)       ▼                   ▼
 *   any phase ─stop()─▶ stopping ─group gone─▶ idle (stopped | failed)  ◀──────────────────
 *
 * The public state (ServiceStatus.state) follows the phase: pending shows as `starting` (waiting for
 * dependencies) or `stopped` (a dependency failed), idle as `stopped` or `failed`.
 */
import type { ServiceSpec, ServiceState, ServiceStatus } from '../../protocol/messages.js';
import { planRestore } from './adopt.js';
import { decideAfterExit, describeExit, type ObservedExit } from './backoff.js';
import { envFilePath, removeEnvFile, writeEnvFile } from './env-file.js';
import { runContext } from './environment.js';
import { ServiceLog } from './logs.js';
import { ServiceProcess } from './process.js';
import { hasProbes, waitUntilReady } from './readiness.js';
import type { ServiceRecord, ServiceStateStore } from './state-file.js';
import { ServiceStatusBook } from './status.js';
import { monotonicMs } from '../clock.js';

export type ServicePhase = 'idle' | 'pending' | 'starting' | 'ready' | 'backoff' | 'stopping';

/** What every service of one supervisor shares. */
export interface ServiceRuntime {
  stateDir: string;
  logDir: string;
  clock: () => number;
  adoptedPollMs: number;
  store: ServiceStateStore;
  log: (line: string) => void;
  /** `NAME=value` put in the environment of every process of the service, to find them all. */
  marker: (service: string) => string;
  /** Called on every change of the service's status. */
  changed: (service: Service) => void;
}

export class Service {
  readonly log: ServiceLog;
  private specValue: ServiceSpec;
  private phaseValue: ServicePhase = 'idle';
  private readonly book: ServiceStatusBook;
  private run: ServiceProcess | undefined;
  private spawning: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private probe: AbortController | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  private detached = false;

  constructor(
    spec: ServiceSpec,
    private readonly rt: ServiceRuntime,
  ) {
    this.specValue = spec;
    this.book = new ServiceStatusBook(rt.clock, () => {
      if (!this.detached) rt.changed(this);
    });
    this.log = new ServiceLog({
      name: spec.name,
      stateDir: rt.stateDir,
      logDir: rt.logDir,
      policy: spec.logs,
      clock: rt.clock,
      onError: (message) => rt.log(`service ${spec.name}: ${message}`),
    });
  }

  get name(): string {
    return this.specValue.name;
  }

  get spec(): ServiceSpec {
    return this.specValue;
  }

  get phase(): ServicePhase {
    return this.phaseValue;
  }

  /** Not in the middle of anything: what converge() and start() wait for. */
  get settled(): boolean {
    const phase = this.phaseValue;
    return phase === 'idle' || phase === 'ready' || phase === 'backoff' || (phase === 'pending' && this.book.state === 'stopped');
  }

  status(): ServiceStatus {
    return this.book.status(this.specValue, this.run?.pid ?? null);
  }

  /** Wants the service running (crash count reset): it starts once the supervisor sees its dependencies ready. */
  requestStart(): void {
    if (this.detached || this.phaseValue !== 'idle') return;
    this.book.quickExits = 0;
    this.phaseValue = 'pending';
    this.setState('starting', 'waiting to start');
    this.persist();
  }

  /** While pending: why it has not started yet (set by the supervisor from its dependencies). */
  setWaiting(state: 'starting' | 'stopped', reason: string): void {
    if (this.phaseValue === 'pending') this.setState(state, reason);
  }

  /** A new configuration (same name), only while no process runs. Restart history starts over. */
  replaceSpec(spec: ServiceSpec): void {
    if (this.phaseValue !== 'idle' && this.phaseValue !== 'pending') {
      throw new Error(`service ${this.name}: cannot replace the spec while ${this.phaseValue}`);
    }
    this.specValue = spec;
    this.book.resetHistory();
    this.log.setPolicy(spec.logs);
    this.persist();
  }

  launch(): void {
    if (this.detached || (this.phaseValue !== 'pending' && this.phaseValue !== 'backoff')) return;
    const again = this.phaseValue === 'backoff';
    if (again) this.book.restarts++;
    this.clearBackoff();
    this.phaseValue = 'starting';
    this.setState('starting', again && this.book.lastExit ? `restart ${this.book.restarts} after ${describeExit(this.book.lastExit)}` : 'starting');
    this.spawning = this.spawn().finally(() => (this.spawning = undefined));
  }

  /**
   * Stop signal to the process group, KILL after stopTimeoutSeconds; ends `final` with `reason`.
   * Nothing to do when idle; a stop already under way is shared.
   */
  stop(reason = 'stopped', final: 'stopped' | 'failed' = 'stopped'): Promise<void> {
    if (this.stopping) return this.stopping;
    this.abortProbe();
    this.clearBackoff();
    const phase = this.phaseValue;
    if (phase === 'idle' || this.detached) return Promise.resolve();
    if (phase === 'pending' || phase === 'backoff') {
      // No process: a backoff's leftovers were killed when its process exited.
      this.phaseValue = 'idle';
      this.setState(final, reason);
      this.persist();
      return Promise.resolve();
    }
    this.phaseValue = 'stopping';
    this.setState('stopping', reason);
    this.persist();
    this.stopping = this.terminate(reason, final).finally(() => (this.stopping = undefined));
    return this.stopping;
  }

  /** Resolves once a stop under way (if any) is over; stops nothing itself. */
  async whenStopped(): Promise<void> {
    await this.stopping;
  }

  /** Resumes from a previous agent's record: adopts its live process, or applies the policy to its lost exit. */
  restore(record: ServiceRecord): void {
    this.book.restore(record);
    const plan = planRestore(record, this.rt.marker(this.name), this.rt.clock, this.rt.adoptedPollMs);
    const wasStopping = record.state === 'stopping';
    switch (plan.kind) {
      case 'idle':
        return;
      case 'start-again':
        this.phaseValue = 'pending';
        this.setState('starting', 'waiting to start');
        break;
      case 'adopted': {
        const proc = plan.proc;
        this.attach(proc);
        this.log.note(`adopted pid ${proc.pid} from a previous agent`);
        this.phaseValue = record.ready ? 'ready' : 'starting';
        if (wasStopping) {
          void this.stop(record.reason); // the previous agent's stop, finished
          return;
        }
        const adopted = `adopted from a previous agent (pid ${proc.pid})`;
        this.setState(this.phaseValue, record.ready ? adopted : `${adopted}; checking readiness again`);
        if (!record.ready) this.awaitReadiness(proc);
        break;
      }
      case 'lost-exit':
        if (wasStopping) {
          this.book.lastExit = plan.exit;
          this.phaseValue = 'idle';
          this.setState('stopped', record.reason);
          break;
        }
        this.afterExit(plan.exit, plan.ranMs, plan.remnantsGone);
        return; // afterExit persisted
    }
    this.persist();
  }

  /** The agent is exiting: let go of everything, stop nothing (the next agent adopts the process). */
  detach(): void {
    this.detached = true;
    this.abortProbe();
    this.clearBackoff();
    this.run?.release();
    this.log.detach();
  }

  /**
   * Applies `spec`, which differs from the current one only in env (the caller checks), without a
   * restart: rewrites the env file, then sends spec.reload.signal to the main process. Only once the
   * service is ready: before that it may not handle the signal yet, and every reload signal's default
   * action is to exit. False when it cannot (not ready, no reload, the process gone, the file not
   * written): the caller restarts the service instead.
   */
  reload(spec: ServiceSpec): boolean {
    const proc = this.run;
    const signal = spec.reload?.signal;
    if (this.detached || this.phaseValue !== 'ready' || !proc || proc.hasExited || signal === undefined) return false;
    try {
      const ctx = runContext(spec, this.rt.marker(this.name), this.envFile);
      writeEnvFile(this.envFile, spec.env, ctx);
    } catch (e) {
      this.rt.log(`service ${this.name}: cannot reload, restarting instead: ${(e as Error).message}`);
      return false;
    }
    if (!proc.signal(signal)) return false;
    this.specValue = spec;
    this.log.note(`configuration ${spec.configHash}: ${signal} to pid ${proc.pid} (reload)`);
    this.book.reloaded(`reloaded with ${signal}`);
    this.persist();
    return true;
  }

  /** The service was removed (and stopped): forget its state and env file, keep its log files. */
  async dispose(): Promise<void> {
    this.rt.store.remove(this.specValue);
    removeEnvFile(this.envFile);
    await this.log.close();
  }

  private get envFile(): string {
    return envFilePath(this.rt.stateDir, this.name);
  }

  private async spawn(): Promise<void> {
    let proc: ServiceProcess;
    try {
      const marker = this.rt.marker(this.name);
      const ctx = runContext(this.specValue, marker, this.envFile);
      // Before the process exists: the file it is told about is there from its first instruction.
      writeEnvFile(this.envFile, this.specValue.env, ctx);
      proc = await ServiceProcess.launch({ ...ctx, cmd: this.specValue.cmd, outputFd: this.log.openForService(), marker, clock: this.rt.clock });
    } catch (e) {
      if (this.phaseValue === 'starting' && !this.detached) this.settleIdle('failed', `could not start: ${(e as Error).message}`);
      return;
    }
    this.attach(proc);
    this.persist(); // the pid on disk before anything else can happen to this agent
    if (this.detached) return proc.release();
    if (this.phaseValue !== 'starting') return; // a stop arrived meanwhile: it terminates this run
    this.log.note(`started (pid ${proc.pid})`);
    this.awaitReadiness(proc);
  }

  private attach(proc: ServiceProcess): void {
    this.run = proc;
    void proc.exited.then((exit) => this.onExit(proc, exit));
  }

  private awaitReadiness(proc: ServiceProcess): void {
    const check = this.specValue.ready;
    if (!hasProbes(check)) {
      this.markReady('ready (no readiness check)');
      return;
    }
    let ctx;
    try {
      ctx = runContext(this.specValue, this.rt.marker(this.name), this.envFile);
    } catch (e) {
      void this.stop(`cannot run the readiness check: ${(e as Error).message}`, 'failed');
      return;
    }
    const probe = new AbortController();
    this.probe = probe;
    const startedAt = monotonicMs();
    void waitUntilReady(check, ctx, probe.signal).then((result) => {
      if (this.probe === probe) this.probe = undefined;
      if (result.outcome === 'aborted' || this.run !== proc || this.phaseValue !== 'starting') return;
      if (result.outcome === 'ready') {
        this.markReady(`ready after ${Math.round(monotonicMs() - startedAt)} ms`);
        return;
      }
      this.log.note(result.reason);
      void this.stop(result.reason, 'failed');
    });
  }

  private markReady(reason: string): void {
    this.phaseValue = 'ready';
    this.log.note(reason);
    this.setState('ready', reason);
    this.persist();
  }

  private onExit(proc: ServiceProcess, exit: ObservedExit): void {
    // A stop collects the exit itself; a detached supervisor watches nothing.
    if (this.run !== proc || this.phaseValue === 'stopping' || this.detached) return;
    this.run = undefined;
    this.abortProbe();
    this.afterExit(exit, this.rt.clock() - proc.startedAtMs, proc.killRemnants());
  }

  /** Applies the restart policy; a restart waits for the dead run's leftovers to be gone. */
  private afterExit(exit: ObservedExit, ranMs: number, remnantsGone: Promise<void>): void {
    this.book.lastExit = exit;
    const decision = decideAfterExit(this.specValue.restart, exit, ranMs, this.book.quickExits);
    this.book.quickExits = decision.quickExits;
    if (decision.action === 'settle') {
      this.settleIdle(decision.state, decision.reason);
      return;
    }
    this.log.note(decision.reason);
    this.phaseValue = 'backoff';
    this.setState('backoff', decision.reason);
    // A stop and a new start while the leftovers are awaited make this wait stale: it launches nothing.
    const timer = setTimeout(() => void remnantsGone.then(() => this.backoffTimer === timer && this.launch()), decision.delayMs);
    this.backoffTimer = timer;
    this.persist();
  }

  private async terminate(reason: string, final: 'stopped' | 'failed'): Promise<void> {
    if (this.spawning) await this.spawning;
    const proc = this.run;
    const { stopSignal, stopTimeoutSeconds } = this.specValue;
    if (proc) {
      this.log.note(`stopping (${reason}): ${stopSignal} to the process group`);
      const exit = await proc.terminate(stopSignal, stopTimeoutSeconds * 1000, () =>
        this.log.note(`still running ${stopTimeoutSeconds} s after ${stopSignal}: KILL to the process group`),
      );
      this.book.lastExit = exit;
      this.run = undefined;
      this.log.note(`stopped (${describeExit(exit)})`);
    }
    if (!this.detached) this.settleIdle(final, reason);
  }

  private settleIdle(state: 'stopped' | 'failed', reason: string): void {
    if (state === 'failed') this.log.note(reason);
    this.phaseValue = 'idle';
    this.setState(state, reason);
    this.persist();
  }

  private setState(state: ServiceState, reason: string): void {
    this.book.set(state, reason);
  }

  private persist(): void {
    if (this.detached) return;
    const flags = { active: this.phaseValue !== 'idle', ready: this.phaseValue === 'ready' };
    this.rt.store.save(this.book.record(this.specValue, this.run, flags));
  }

  private abortProbe(): void {
    this.probe?.abort();
    this.probe = undefined;
  }

  private clearBackoff(): void {
    clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
  }
}
