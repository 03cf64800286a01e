import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { constants as osConstants } from 'node:os';
import { DEFAULT_OUTPUT_LIMIT_BYTES, OutputCapture } from './output.js';
import { findEscapees, findInvocationProcesses, killInvocationProcesses, MARKER_ENV, signalAll, signalGroup } from './sweep.js';
import { buildScript, defaultShell, removeScript, statusFdFor, warmPrelude, writeScript } from './script.js';

export { buildScript, defaultShell, shellQuote } from './script.js';
import type {
  ExecutionResult,
  ExecutionStatus,
  ExecutorOptions,
  RunCallbacks,
  RunShellScriptParams,
  StreamCapture,
} from './types.js';

export const DEFAULT_KILL_GRACE_MS = 5000;
/**
 * After the shell exits, how long to wait for stdout/stderr to reach EOF. They stay open only when
 * a background process the commands left running (e.g. `server &`) still holds them; the run then
 * completes anyway and that process keeps running, its later output discarded.
 */
export const OUTPUT_DRAIN_MS = 100;
/** Poll interval while waiting, after TERM, for the invocation's processes to exit. */
const TERM_POLL_MS = 20;

function signalNumber(signal: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number | undefined>)[signal] ?? 0;
}

let scriptSeq = 0;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** A result for a run that never started. */
function notStarted(status: ExecutionStatus, detail: string, startedAt: Date, stderr: string): ExecutionResult {
  const err = Buffer.from(stderr ? `${stderr}\n` : '');
  return {
    status,
    statusDetail: detail,
    exitCodes: [],
    stdout: { text: '', truncated: false, bytes: 0 },
    stderr: { text: err.toString('utf8'), truncated: false, bytes: err.length },
    startedAt,
    finishedAt: new Date(),
  };
}

/**
 * Runs an AWS-RunShellScript document: all `commands` in order in one shell process, stopping at
 * the first failing one, reporting every exit code. On timeout or cancel the whole process group
 * gets TERM, then KILL after the grace period, then every remaining process carrying the
 * invocation's marker env var is KILLed too. After a normal finish background processes are left alone.
 */
export function runShellScript(
  invocationId: string,
  params: RunShellScriptParams,
  options: ExecutorOptions,
  callbacks: RunCallbacks = {},
): Promise<ExecutionResult> {
  const startedAt = new Date();
  if (!invocationId || invocationId.includes('\0')) {
    return Promise.reject(new Error(`invalid invocation id ${JSON.stringify(invocationId)}`));
  }
  const commands = params.commands;
  const signal = callbacks.signal;
  if (signal?.aborted) {
    return Promise.resolve(notStarted('Cancelled', 'execution cancelled before it started', startedAt, ''));
  }

  const cwd = params.workingDirectory;
  if (cwd !== undefined && cwd !== '') {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(cwd, { throwIfNoEntry: false });
    } catch (e) {
      // ENAMETOOLONG, ELOOP, a NUL byte…: the command fails, the agent goes on.
      const detail = `working directory ${JSON.stringify(cwd)} cannot be used: ${(e as Error).message}`;
      return Promise.resolve(notStarted('Failed', detail, startedAt, detail));
    }
    if (!st || !st.isDirectory()) {
      const detail = `working directory ${cwd} ${st ? 'is not a directory' : 'does not exist'}`;
      return Promise.resolve(notStarted('Failed', detail, startedAt, detail));
    }
  }
  if (commands.length === 0) {
    return Promise.resolve(notStarted('Success', 'no commands to run', startedAt, ''));
  }

  const shell = options.shell ?? defaultShell();
  const warm = options.warmShells?.shell === shell ? options.warmShells : undefined;
  // A warm shell was started before this invocation existed: the script itself must set what a cold
  // spawn would pass in (the marker and the user's variables, exported; the working directory).
  const prelude = warm ? warmPrelude(invocationId, params.env, cwd) : '';
  const script = prelude + buildScript(commands, statusFdFor(shell));
  const scriptPath = join(
    options.scratchDir,
    `run-${invocationId.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 80)}-${process.pid}-${++scriptSeq}.sh`,
  );
  try {
    writeScript(scriptPath, script, options.scratchDir);
  } catch (e) {
    const detail = `could not write the script to ${options.scratchDir}: ${(e as Error).message}`;
    return Promise.resolve(notStarted('Failed', detail, startedAt, detail));
  }

  let child = warm?.take(scriptPath);
  if (!child) {
    if (prelude) writeScript(scriptPath, buildScript(commands, statusFdFor(shell)), options.scratchDir);
    const env: NodeJS.ProcessEnv = { ...process.env, ...params.env, [MARKER_ENV]: invocationId };
    try {
      child = spawn(shell, [scriptPath], {
        cwd: cwd || undefined,
        env,
        detached: true, // setsid: the shell leads its own process group
        stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      });
    } catch (e) {
      removeScript(scriptPath);
      const detail = `could not start ${shell}: ${(e as Error).message}`;
      return Promise.resolve(notStarted('Failed', detail, startedAt, detail));
    }
  }

  return new Run(invocationId, params, options, callbacks, child, shell, scriptPath, startedAt).promise;
}

/** State of one running invocation. */
class Run {
  readonly promise: Promise<ExecutionResult>;
  private resolve!: (r: ExecutionResult) => void;

  private readonly stdout: OutputCapture;
  private readonly stderr: OutputCapture;
  private readonly exitCodes: number[] = [];
  private statusPartial = '';

  private exitCode: number | null = null;
  private exitSignal: NodeJS.Signals | null = null;
  private exited = false;
  private spawnError: Error | undefined;
  private openStreams = 3;
  private drainTimer: NodeJS.Timeout | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  /** Set once TERM has been sent for a timeout or cancel. */
  private stopReason: 'TimedOut' | 'Cancelled' | undefined;
  /** Set when the TERM/KILL/sweep sequence is over. */
  private stopDone = false;
  private finished = false;
  private readonly pgid: number | undefined;
  private readonly onAbort = () => this.stop('Cancelled');

  constructor(
    private readonly invocationId: string,
    private readonly params: RunShellScriptParams,
    private readonly options: ExecutorOptions,
    private readonly callbacks: RunCallbacks,
    private readonly child: ChildProcess,
    private readonly shell: string,
    private readonly scriptPath: string,
    private readonly startedAt: Date,
  ) {
    this.promise = new Promise((resolve) => (this.resolve = resolve));
    const limit = options.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT_BYTES;
    this.stdout = new OutputCapture(limit);
    this.stderr = new OutputCapture(limit);
    this.pgid = child.pid;

    const [, out, err, status] = child.stdio as unknown as [unknown, Readable | null, Readable | null, Readable | null];
    this.attachOutput(out, 'stdout', this.stdout);
    this.attachOutput(err, 'stderr', this.stderr);
    if (status) {
      status.on('data', (chunk: Buffer) => this.onStatus(chunk));
      status.on('error', () => undefined);
      status.once('close', this.streamClosed);
    } else {
      this.openStreams--;
    }

    child.once('error', (e) => {
      // Spawn failure (e.g. shell not found): no 'exit' follows.
      this.spawnError = e;
      if (!this.exited) this.onExit(null, null);
    });
    child.once('exit', (code, sig) => this.onExit(code, sig));
    if (child.pid !== undefined && callbacks.onSpawn) {
      try {
        callbacks.onSpawn(child.pid);
      } catch {
        // A failing listener must not break the run.
      }
    }

    const seconds = params.executionTimeoutSeconds;
    if (Number.isFinite(seconds) && seconds > 0) {
      this.timeoutTimer = setTimeout(() => this.stop('TimedOut'), Math.ceil(seconds * 1000));
    }
    // An abort already past fires no event.
    if (callbacks.signal?.aborted) this.onAbort();
    else callbacks.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  private attachOutput(stream: Readable | null, name: 'stdout' | 'stderr', capture: OutputCapture): void {
    if (!stream) {
      this.openStreams--;
      return;
    }
    const onOutput = this.callbacks.onOutput;
    stream.on('data', (chunk: Buffer) => {
      if (this.finished) return;
      capture.write(chunk);
      if (onOutput) {
        try {
          onOutput(name, chunk);
        } catch {
          // A failing listener must not break the run.
        }
      }
    });
    stream.on('error', () => undefined);
    stream.once('close', this.streamClosed);
  }

  private onStatus(chunk: Buffer): void {
    const text = this.statusPartial + chunk.toString('latin1');
    const lines = text.split('\n');
    this.statusPartial = lines.pop() ?? '';
    for (const line of lines) {
      const code = Number.parseInt(line, 10);
      if (Number.isInteger(code)) this.exitCodes.push(code);
    }
  }

  private readonly streamClosed = (): void => {
    this.openStreams--;
    this.maybeFinish();
  };

  private onExit(code: number | null, sig: NodeJS.Signals | null): void {
    if (this.exited) return;
    this.exited = true;
    this.exitCode = code;
    this.exitSignal = sig;
    if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
    this.callbacks.signal?.removeEventListener('abort', this.onAbort);
    removeScript(this.scriptPath);
    if (this.openStreams > 0) {
      this.drainTimer = setTimeout(() => this.detachStreams(), OUTPUT_DRAIN_MS);
      this.drainTimer.unref();
    }
    this.maybeFinish();
  }

  /**
   * The shell is gone but a background process still holds stdout/stderr: stop capturing, keep
   * draining (so that process neither blocks nor gets SIGPIPE) without holding the event loop open.
   */
  private detachStreams(): void {
    const [, out, err, status] = this.child.stdio as unknown as [unknown, Readable | null, Readable | null, Readable | null];
    for (const s of [out, err, status]) {
      if (!s) continue;
      s.removeListener('close', this.streamClosed);
      if (s.destroyed || s.closed) continue;
      const stream = s as Readable & { unref?: () => void };
      stream.removeAllListeners('data'); // only ours: capture and status parsing
      stream.on('data', () => undefined);
      stream.resume();
      stream.unref?.();
    }
    this.openStreams = 0;
    this.maybeFinish();
  }

  /** Timeout or cancel: TERM the group (and escaped marker processes), KILL after the grace period, sweep. */
  private stop(reason: 'TimedOut' | 'Cancelled'): void {
    if (this.stopReason || this.exited || this.finished) return;
    this.stopReason = reason;
    if (this.timeoutTimer) clearTimeout(this.timeoutTimer);
    void this.terminate()
      .catch(() => undefined)
      .then(() => {
        this.stopDone = true;
        this.maybeFinish();
      });
  }

  private async terminate(): Promise<void> {
    const target = { invocationId: this.invocationId, pgid: this.pgid };
    if (this.pgid !== undefined) signalGroup(this.pgid, 'SIGTERM');
    // Escapees only: a member of the group got its TERM already, and a second would run its trap again.
    signalAll(this.pgid !== undefined ? findEscapees({ invocationId: this.invocationId, pgid: this.pgid }) : findInvocationProcesses(target), 'SIGTERM');
    const grace = this.params.killGraceSeconds !== undefined ? this.params.killGraceSeconds * 1000 : (this.options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
    const deadline = Date.now() + Math.max(0, grace);
    // Wait for everything to exit by itself, at most the grace period.
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(TERM_POLL_MS, Math.max(1, deadline - Date.now()))));
      if (this.exited && findInvocationProcesses(target).length === 0) break;
    }
    await killInvocationProcesses(target);
  }

  private maybeFinish(): void {
    if (this.finished || !this.exited || this.openStreams > 0) return;
    // After a timeout or cancel, finish only once the kill sequence is over.
    if (this.stopReason && !this.stopDone) return;
    this.finished = true;
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.resolve(this.buildResult());
  }

  private buildResult(): ExecutionResult {
    const n = this.params.commands.length;
    const codes = this.exitCodes;
    const stdout: StreamCapture = this.stdout.result();
    let stderr: StreamCapture = this.stderr.result();
    let status: ExecutionStatus;
    let detail: string;

    if (this.spawnError) {
      detail = `could not start ${this.shell}: ${this.spawnError.message}`;
      stderr = appendLine(stderr, detail);
      return this.result('Failed', detail, stdout, stderr);
    }

    // The shell's own exit status: a command's `exit N` (or a signal) ended the script.
    const shellCode =
      this.exitSignal !== null ? 128 + signalNumber(this.exitSignal) : (this.exitCode ?? 0);
    const last = codes[codes.length - 1];
    const endedByFailure = last !== undefined && last !== 0;
    if (!endedByFailure && codes.length < n) codes.push(shellCode);

    const index = codes.length; // 1-based index of the last command that ran
    const lastCode = codes[codes.length - 1] ?? 0;
    const which = `command ${index} of ${n}`;
    if (this.stopReason === 'TimedOut') {
      status = 'TimedOut';
      detail = `execution timed out after ${this.params.executionTimeoutSeconds} s`;
    } else if (this.stopReason === 'Cancelled') {
      status = 'Cancelled';
      detail = 'execution cancelled';
    } else if (lastCode !== 0) {
      status = 'Failed';
      detail =
        this.exitSignal !== null && !endedByFailure
          ? `${which} was killed by ${this.exitSignal} (exit ${lastCode})`
          : `${which} exited with ${lastCode}`;
    } else if (index < n) {
      status = 'Success';
      detail = `${which} exited the script with 0; ${plural(n - index, 'command')} not run`;
    } else {
      status = 'Success';
      detail = n === 1 ? 'command exited with 0' : `all ${n} commands exited with 0`;
    }
    if (status === 'TimedOut' || status === 'Cancelled') {
      if (index <= n && codes.length > 0) detail += ` (${which} ended with ${lastCode})`;
    }
    return this.result(status, detail, stdout, stderr);
  }

  private result(status: ExecutionStatus, detail: string, stdout: StreamCapture, stderr: StreamCapture): ExecutionResult {
    return {
      status,
      statusDetail: detail,
      exitCodes: this.exitCodes,
      stdout,
      stderr,
      startedAt: this.startedAt,
      finishedAt: new Date(),
    };
  }
}

function appendLine(capture: StreamCapture, line: string): StreamCapture {
  const add = `${line}\n`;
  return { text: capture.text + add, truncated: capture.truncated, bytes: capture.bytes + Buffer.byteLength(add) };
}
