/**
 * Readiness checks: an HTTP GET, a TCP connect and/or a command, all of which must pass, polled until
 * timeoutSeconds: at most every intervalMs, and sooner while the service is young (a quarter of the
 * time since the checks began, at least 5 ms), so a service is seen ready within about a quarter of
 * the time it took: on a claim's path, a fixed 200 ms poll was most of the wait. Every probe is
 * bounded by the deadline and stops on abort.
 */
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import type { ServiceReadyCheck } from '../../protocol/messages.js';
import { signalGroup } from '../runcommand/sweep.js';
import { monotonicMs } from '../clock.js';

export type ReadinessOutcome = { outcome: 'ready' } | { outcome: 'timeout'; reason: string } | { outcome: 'aborted' };

/** How a command check runs: as the service would. */
export interface ProbeContext {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
}

const HOST = '127.0.0.1';
/**
 * A probe started just before the deadline still gets this long: cut shorter, it would fail with
 * "did not answer" and hide the real failure (refused, 503) from the reason.
 */
const MIN_PROBE_TIMEOUT_MS = 250;
const MIN_POLL_MS = 5;

/** True when the check has at least one probe; a service without one is ready once started. */
export function hasProbes(check: ServiceReadyCheck | undefined): check is ServiceReadyCheck {
  return check !== undefined && (check.http !== undefined || check.tcp !== undefined || check.command !== undefined);
}

export async function waitUntilReady(check: ServiceReadyCheck, ctx: ProbeContext, signal: AbortSignal): Promise<ReadinessOutcome> {
  const started = monotonicMs();
  const deadline = started + check.timeoutSeconds * 1000;
  for (;;) {
    let failure: string | undefined;
    try {
      failure = await probeOnce(check, ctx, deadline, signal);
    } catch (e) {
      failure = `the check failed: ${(e as Error).message}`; // e.g. a path http.request refuses
    }
    if (signal.aborted) return { outcome: 'aborted' };
    if (failure === undefined) return { outcome: 'ready' };
    const left = deadline - monotonicMs();
    if (left <= 0) return { outcome: 'timeout', reason: `not ready within ${check.timeoutSeconds} s: ${failure}` };
    const young = Math.max(MIN_POLL_MS, (monotonicMs() - started) / 4);
    await sleep(Math.min(check.intervalMs, young, left), signal);
    if (signal.aborted) return { outcome: 'aborted' };
    if (monotonicMs() >= deadline) return { outcome: 'timeout', reason: `not ready within ${check.timeoutSeconds} s: ${failure}` };
  }
}

/** Runs every probe of the check; the first failure's description, or undefined when all pass. */
async function probeOnce(check: ServiceReadyCheck, ctx: ProbeContext, deadline: number, signal: AbortSignal): Promise<string | undefined> {
  const timeoutMs = () => Math.max(MIN_PROBE_TIMEOUT_MS, deadline - monotonicMs());
  if (check.tcp) {
    const failure = await probeTcp(check.tcp.port, timeoutMs(), signal);
    if (failure) return failure;
  }
  if (check.http) {
    const failure = await probeHttp(check.http.port, check.http.path, timeoutMs(), signal);
    if (failure) return failure;
  }
  if (check.command !== undefined) return probeCommand(check.command, ctx, timeoutMs(), signal);
  return undefined;
}

function probeTcp(port: number, timeoutMs: number, signal: AbortSignal): Promise<string | undefined> {
  const what = `tcp ${HOST}:${port}`;
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    const finish = bounded(timeoutMs, signal, what, (failure) => {
      socket.destroy();
      resolve(failure);
    });
    socket.once('connect', () => finish(undefined));
    socket.once('error', (e: NodeJS.ErrnoException) => finish(`${what} ${describeNetError(e)}`));
  });
}

function probeHttp(port: number, path: string, timeoutMs: number, signal: AbortSignal): Promise<string | undefined> {
  const what = `http GET http://${HOST}:${port}${path}`;
  return new Promise((resolve) => {
    // agent: false: a fresh connection per probe, nothing pooled or kept alive afterwards.
    const req = request({ host: HOST, port, path, method: 'GET', agent: false }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      finish(status >= 200 && status < 400 ? undefined : `${what} answered ${status}`);
    });
    const finish = bounded(timeoutMs, signal, what, (failure) => {
      req.destroy();
      resolve(failure);
    });
    req.once('error', (e: NodeJS.ErrnoException) => finish(`${what} ${describeNetError(e)}`));
    req.end();
  });
}

/**
 * Wraps a probe's completion: called once, by the probe, its timeout ("did not answer") or the abort
 * signal; the timer and the abort listener are gone afterwards (the signal lives for many probes).
 */
function bounded(timeoutMs: number, signal: AbortSignal, what: string, done: (failure: string | undefined) => void): (failure: string | undefined) => void {
  let settled = false;
  const finish = (failure: string | undefined): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    done(failure);
  };
  const onAbort = (): void => finish(`${what} aborted`);
  const timer = setTimeout(() => finish(`${what} did not answer`), timeoutMs);
  signal.addEventListener('abort', onAbort, { once: true });
  return finish;
}

function probeCommand(command: string, ctx: ProbeContext, timeoutMs: number, signal: AbortSignal): Promise<string | undefined> {
  const what = `command ${JSON.stringify(command)}`;
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn('/bin/sh', ['-c', command], {
        env: ctx.env,
        cwd: ctx.cwd,
        uid: ctx.uid,
        gid: ctx.gid,
        detached: true, // its own group, so a hung check is killed with everything it started
        stdio: 'ignore',
      });
    } catch (e) {
      resolve(`${what} could not start: ${(e as Error).message}`);
      return;
    }
    const pid = child.pid;
    let timedOut = false;
    const kill = (): void => {
      if (pid !== undefined) signalGroup(pid, 'SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, timeoutMs);
    signal.addEventListener('abort', kill, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', kill);
      resolve(`${what} could not start: ${e.message}`);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', kill);
      // Whatever the check left running in its group goes with it.
      if (pid !== undefined) signalGroup(pid, 'SIGKILL');
      if (timedOut) resolve(`${what} did not finish`);
      else if (code === 0) resolve(undefined);
      else resolve(sig ? `${what} was killed by ${sig}` : `${what} exited with code ${code ?? 'unknown'}`);
    });
  });
}

function describeNetError(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ECONNRESET':
      return 'reset the connection';
    default:
      return `failed: ${e.code ?? e.message}`;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
