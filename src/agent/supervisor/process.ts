/**
 * One run of a service: `/bin/sh -c cmd` in its own session and process group, started by this agent
 * (exit seen through the child's exit event) or adopted from a previous agent (not our child: exit seen
 * by polling /proc, status unknown). Stopping signals the whole group and every process carrying the
 * service's marker, then KILLs whatever is left after the timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, statSync } from 'node:fs';
import { signalAll, signalGroup } from '../runcommand/sweep.js';
import type { ObservedExit } from './backoff.js';
import { ServiceStartError } from './errors.js';
import { escapedProcesses, groupAlive, isSameLiveProcess, markedProcesses as serviceProcesses, readProcStat } from '../procfs.js';
import { monotonicMs } from '../clock.js';

export interface LaunchParams {
  cmd: string;
  cwd?: string;
  env: NodeJS.ProcessEnv;
  uid?: number;
  gid?: number;
  /** Descriptor for stdout and stderr (the service's FIFO); closed here once the child has it. */
  outputFd: number;
  /** `NAME=value` present in the environment of every process of the service. */
  marker: string;
  clock: () => number;
}

/** Polling while a stop is under way (bounded by the stop timeout); never while idle. */
const STOP_POLL_MS = 25;
/** After KILL, how long to keep sweeping for stragglers (processes forked between scans). */
const KILL_SWEEP_MS = 3000;

export class ServiceProcess {
  readonly exited: Promise<ObservedExit>;
  private exit: ObservedExit | undefined;
  private resolveExit!: (exit: ObservedExit) => void;
  private watchTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly pid: number,
    /** /proc/<pid>/stat field 22: with the pid, identifies this process across agent restarts. */
    readonly startTime: number,
    /** Epoch ms (supervisor clock) at which this run started. */
    readonly startedAtMs: number,
    private readonly marker: string,
    private readonly clock: () => number,
    private readonly child: ChildProcess | undefined,
  ) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  get adopted(): boolean {
    return this.child === undefined;
  }

  get hasExited(): boolean {
    return this.exit !== undefined;
  }

  static async launch(params: LaunchParams): Promise<ServiceProcess> {
    try {
      if (params.cwd !== undefined) {
        const st = statSync(params.cwd, { throwIfNoEntry: false });
        // Checked here because spawn reports a missing cwd as "spawn /bin/sh ENOENT".
        if (!st) throw new ServiceStartError(`working directory ${params.cwd} does not exist`);
        if (!st.isDirectory()) throw new ServiceStartError(`working directory ${params.cwd} is not a directory`);
      }
      const child = spawn('/bin/sh', ['-c', params.cmd], {
        cwd: params.cwd,
        env: params.env,
        uid: params.uid,
        gid: params.gid,
        detached: true, // setsid: the shell leads its own session and process group
        stdio: ['ignore', params.outputFd, params.outputFd],
      });
      // Read before yielding to the event loop: the child cannot have been reaped yet.
      const stat = child.pid === undefined ? undefined : readProcStat(child.pid);
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', (e) => reject(new ServiceStartError(`could not start /bin/sh: ${e.message}`)));
      });
      child.on('error', () => undefined); // later errors (a failed kill) must not crash the agent
      if (child.pid === undefined) throw new ServiceStartError('could not start /bin/sh: no pid');
      const proc = new ServiceProcess(child.pid, stat?.startTime ?? 0, params.clock(), params.marker, params.clock, child);
      child.once('exit', (code, signal) => proc.settle({ code, signal, known: true }));
      return proc;
    } catch (e) {
      throw e instanceof ServiceStartError ? e : new ServiceStartError(`could not start /bin/sh: ${(e as Error).message}`);
    } finally {
      closeSync(params.outputFd);
    }
  }

  /**
   * Takes over a process a previous agent started, if it is still the same live process; watches it by
   * polling /proc every `pollMs` (it is not our child, so no exit event will come).
   */
  static adopt(
    record: { pid: number; startTime: number; startedAtMs: number },
    marker: string,
    clock: () => number,
    pollMs: number,
  ): ServiceProcess | undefined {
    if (!isSameLiveProcess(record.pid, record.startTime)) return undefined;
    const proc = new ServiceProcess(record.pid, record.startTime, record.startedAtMs, marker, clock, undefined);
    proc.watchTimer = setInterval(() => {
      if (!isSameLiveProcess(proc.pid, proc.startTime)) proc.settle({ code: null, signal: null, known: false });
    }, pollMs);
    return proc;
  }

  /**
   * Stop signal to the group and the marked processes, KILL to all of them after `timeoutMs`; resolves
   * once none is left (or the KILL sweep gave up on unkillable ones).
   */
  async terminate(stopSignal: NodeJS.Signals, timeoutMs: number, onKill?: () => void): Promise<ObservedExit> {
    const target = { pgid: this.pid, marker: this.marker };
    signalGroup(this.pid, stopSignal);
    // Escapees only: the group's members got the signal already, and a second TERM is "stop now" to many programs.
    signalAll(escapedProcesses(this.marker, this.pid), stopSignal);
    // A stopped (SIGSTOP) process handles the stop signal only once continued.
    if (stopSignal !== 'SIGKILL') signalGroup(this.pid, 'SIGCONT');
    const deadline = monotonicMs() + timeoutMs;
    while (monotonicMs() < deadline && (!this.hasExited || groupAlive(this.pid))) {
      await delay(Math.min(STOP_POLL_MS, Math.max(1, deadline - monotonicMs())));
      if (this.adopted && !this.hasExited && !isSameLiveProcess(this.pid, this.startTime)) {
        this.settle({ code: null, signal: null, known: false });
      }
    }
    if (!this.hasExited || serviceProcesses(target).length > 0) {
      onKill?.();
      await this.killRemnants();
    }
    if (this.adopted && !this.hasExited) this.settle({ code: null, signal: null, known: false });
    return this.exited;
  }

  /**
   * Sends `signal` to the main process alone (a reload: its children are its own business). False when
   * it has exited, or an adopted pid no longer names the same process (the pid may have been reused).
   */
  signal(signal: NodeJS.Signals): boolean {
    if (this.hasExited) return false;
    if (this.child) return this.child.kill(signal);
    if (!isSameLiveProcess(this.pid, this.startTime)) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** KILLs every process left in the group or carrying the marker (after the main process exited). */
  killRemnants(): Promise<void> {
    return killServiceRemnants({ pgid: this.pid, marker: this.marker }, () => !this.adopted && !this.hasExited);
  }

  /** The agent lets go of this process without stopping it (the next agent adopts it). */
  release(): void {
    clearInterval(this.watchTimer);
    this.child?.removeAllListeners('exit');
    this.child?.unref();
  }

  private settle(exit: Omit<ObservedExit, 'at'>): void {
    if (this.exit) return;
    clearInterval(this.watchTimer);
    this.exit = { ...exit, at: new Date(this.clock()).toISOString() };
    this.resolveExit(this.exit);
  }
}

/**
 * KILLs the group (when given) and every process carrying the marker, rescanning until none is left
 * (one may fork between a scan and its kill) and `pending` is false, or KILL_SWEEP_MS has passed.
 */
export async function killServiceRemnants(target: { pgid?: number; marker: string }, pending = () => false): Promise<void> {
  const deadline = monotonicMs() + KILL_SWEEP_MS;
  for (;;) {
    if (target.pgid !== undefined) signalGroup(target.pgid, 'SIGKILL');
    const pids = serviceProcesses(target);
    signalAll(pids, 'SIGKILL');
    if ((pids.length === 0 && !pending()) || monotonicMs() >= deadline) return;
    await delay(5);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
