/**
 * The two halves of launching a host: writing its files (identity, fstab) before anything runs, and
 * starting the detached launcher and waiting for its "ready <pid>" line on fd 3.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { HostSpec } from '../types.js';
import type { HostNames } from './config.js';
import { errnoCode, SYSTEM_PATH } from './proc.js';

export class HostDirExistsError extends Error {}

/**
 * Creates the host's directory and seeds its overlay upper dir with what the agent and the host need
 * at boot. Done before the overlay is mounted, so no copy-up happens and the image is untouched.
 */
export function writeHostFiles(names: HostNames, spec: HostSpec, ip: string, fstab: string): void {
  try {
    mkdirSync(names.hostDir, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') throw new HostDirExistsError(names.hostDir);
    throw err;
  }
  for (const dir of [names.workDir, names.rootDir]) mkdirSync(dir, { mode: 0o700 });
  // The upper dir's root becomes the host's '/', so it gets the mode a root directory has.
  mkdirSync(names.upperDir, { mode: 0o755 });
  const etc = join(names.upperDir, 'etc');
  mkdirSync(join(etc, 'berth'), { recursive: true, mode: 0o755 });
  writeFileSync(join(etc, 'berth', 'agent.json'), `${JSON.stringify(spec.agent)}\n`, { mode: 0o600 });
  writeFileSync(join(etc, 'berth', 'tags.json'), `${JSON.stringify(spec.tags)}\n`, { mode: 0o644 });
  writeFileSync(join(etc, 'hostname'), `${spec.hostname}\n`, { mode: 0o644 });
  writeFileSync(
    join(etc, 'hosts'),
    `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${ip}\t${spec.hostname}\n`,
    { mode: 0o644 },
  );
  writeFileSync(names.fstabFile, fstab, { mode: 0o600 });
}

export interface StartedHost {
  outerPid: number;
  initPid: number;
}

/** The last lines of the host's console, to explain a failed launch after its directory is gone. */
export function consoleTail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export class LaunchProcessError extends Error {
  constructor(
    message: string,
    readonly outerPid: number | undefined,
  ) {
    super(message);
  }
}

/**
 * Spawns the launcher detached (own session, stdio to the console log, unref'd) so the host outlives
 * the server, and resolves with the host's PID 1 once the setup script reports it is about to exec
 * the init. The environment is built from scratch: the server's secrets must not leak into hosts.
 */
export function startLauncher(
  shell: string,
  launcherScript: string,
  names: HostNames,
  env: Record<string, string>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<StartedHost> {
  const logFd = openSync(names.consoleLog, 'a', 0o600);
  let child;
  try {
    child = spawn(shell, ['-c', launcherScript, 'berth-launch'], {
      detached: true,
      stdio: ['ignore', logFd, logFd, 'pipe'],
      env: { PATH: SYSTEM_PATH, ...env },
      cwd: '/',
    });
  } finally {
    closeSync(logFd);
  }
  const launcher = child;
  const readyPipe = launcher.stdio[3];
  return new Promise<StartedHost>((resolve, reject) => {
    let received = '';
    let settled = false;
    const finish = (err: Error | undefined, initPid?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (readyPipe instanceof Readable) {
        readyPipe.removeAllListeners('data').removeAllListeners('close');
        readyPipe.destroy();
      }
      launcher.unref();
      if (err || initPid === undefined || launcher.pid === undefined) reject(err ?? new LaunchProcessError('launcher did not start', launcher.pid));
      else resolve({ outerPid: launcher.pid, initPid });
    };
    const onAbort = (): void => finish(new LaunchProcessError('launch was cancelled', launcher.pid));
    const timer = setTimeout(() => finish(new LaunchProcessError(`host did not come up within ${timeoutMs} ms`, launcher.pid)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    // After a successful start, errors of the launcher handle have no one to report to.
    launcher.on('error', (err) => finish(new LaunchProcessError(`cannot start ${shell}: ${err.message}`, launcher.pid)));
    if (!(readyPipe instanceof Readable)) {
      finish(new LaunchProcessError('no ready pipe to the launcher', launcher.pid));
      return;
    }
    readyPipe.setEncoding('utf8');
    readyPipe.on('data', (chunk: string) => {
      received += chunk;
      const match = /^ready (\d+)$/m.exec(received);
      if (match?.[1]) finish(undefined, Number(match[1]));
    });
    // EOF before "ready": the launcher or setup script failed and everything it started has exited.
    readyPipe.on('close', () => finish(new LaunchProcessError('host setup exited before the init started', launcher.pid)));
  });
}
