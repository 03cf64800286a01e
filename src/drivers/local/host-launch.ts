/**
 * The Node side of launching a host. To overlap work, the launcher is spawned as soon as the host's
 * directory and cgroups exist: while it creates the netns/veth and joins the cgroups, we write the
 * host's files, then tell it to go on (a line on its stdin). It reports "ready <pid>" on fd 3 once
 * the host's init runs.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { HostSpec } from '../types.js';
import type { HostNames } from './config.js';
import { INIT_PATH, INIT_SCRIPT, OLD_ROOT } from './host-scripts.js';
import { BerthError, errorMessage, isBerthError } from '../../core/errors.js';
import { errnoCode, killProcessGroup, SYSTEM_PATH } from './proc.js';
import type { LaunchRequest, LauncherChild } from './spawner.js';

export class HostDirExistsError extends Error {}

/** Claims the host's directory; fails if it exists (the id is in use or its leftovers are). */
export function createHostDir(names: HostNames): void {
  try {
    mkdirSync(names.hostDir, { mode: 0o700 });
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') throw new HostDirExistsError(names.hostDir);
    throw err;
  }
}

/**
 * The files the driver writes into every host at boot, by path under its root. Contents undefined:
 * per-host secrets, never part of an image whatever they contain. `nameServer`: the gateway, where
 * the driver answers DNS (dns-forwarder.ts); without one, a host keeps its image's resolv.conf.
 */
export function bootFiles(hostname: string, ip: string, nameServer?: string): Record<string, string | undefined> {
  return {
    'etc/hostname': `${hostname}\n`,
    'etc/hosts': `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${ip}\t${hostname}\n`,
    ...(nameServer ? { 'etc/resolv.conf': resolvConf(nameServer) } : {}),
    'etc/berth/agent.json': undefined,
    'etc/berth/tags.json': undefined,
  };
}

export function resolvConf(nameServer: string): string {
  return `# written by berth at boot: names are resolved through the machine (not part of any image)\nnameserver ${nameServer}\n`;
}

/**
 * Seeds the overlay upper dir with what the agent and the host need at boot, before the overlay is
 * mounted (so no copy-up happens and the image is untouched). Independent writes run in parallel:
 * file creation is the slowest part of a launch on some disks.
 */
/**
 * The host's boot files, written synchronously: a dozen small files and directories take ~0.13 ms
 * of CPU this way, against ~0.6 ms through fs.promises (three thread-pool round trips per file),
 * on every launch. None of it grows with what a user does, so the event loop is never held long.
 */
export function writeHostFiles(names: HostNames, spec: HostSpec, ip: string, fstab: string, nameServer?: string): void {
  const { upperDir } = names;
  const etc = join(upperDir, 'etc');
  const files = bootFiles(spec.hostname, ip, nameServer);
  // Both exist already on a host with a disk of its own (links into it, see disk.ts).
  mkdirSync(names.workDir, { mode: 0o700, recursive: true });
  mkdirSync(names.rootDir, { mode: 0o700 });
  writeFileSync(names.fstabFile, fstab, { mode: 0o600 });
  // The upper dir's root becomes the host's '/', so it gets the mode of a root directory.
  mkdirSync(upperDir, { mode: 0o755, recursive: true });
  mkdirSync(etc, { mode: 0o755 });
  mkdirSync(join(etc, 'berth'), { mode: 0o755 });
  writeFileSync(join(etc, 'berth', 'agent.json'), `${JSON.stringify(spec.agent)}\n`, { mode: 0o600 });
  writeFileSync(join(etc, 'berth', 'tags.json'), `${JSON.stringify(spec.tags)}\n`, { mode: 0o644 });
  writeFileSync(join(etc, 'hostname'), files['etc/hostname'] ?? '', { mode: 0o644 });
  writeFileSync(join(etc, 'hosts'), files['etc/hosts'] ?? '', { mode: 0o644 });
  // Over whatever the image has there (a file, or a symlink into /run): the upper dir's entry wins.
  if (nameServer) writeFileSync(join(etc, 'resolv.conf'), files['etc/resolv.conf'] ?? '', { mode: 0o644 });
  mkdirSync(join(upperDir, '.berth'), { mode: 0o755 });
  mkdirSync(join(upperDir, OLD_ROOT), { mode: 0o700 });
  writeFileSync(join(upperDir, INIT_PATH), INIT_SCRIPT, { mode: 0o755 });
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

export interface Launcher {
  /** Lets the launcher go past its gate (the host's files are in place). */
  proceed(): void;
  /** Makes the launcher fail at its gate; `ready` then rejects once it has exited. */
  abort(): void;
  /** Resolves with the host's PID 1 once its init runs; never rejects unhandled. */
  ready: Promise<StartedHost>;
}

/**
 * Spawns the launcher detached (own session, stdio to the console log, unref'd) so the host outlives
 * the server. The environment is built from scratch: the server's secrets must not leak into hosts.
 */
export function spawnLocally(req: LaunchRequest): Promise<LauncherChild> {
  const logFd = openSync(req.logPath, 'a', 0o600);
  let child;
  try {
    child = spawn(req.file, req.args, { detached: true, stdio: ['pipe', logFd, logFd, 'pipe'], env: req.env, cwd: req.cwd });
  } finally {
    closeSync(logFd);
  }
  const c = child;
  const pipe = c.stdio[3];
  return Promise.resolve({
    pid: c.pid,
    stdin: c.stdin,
    readyPipe: pipe instanceof Readable ? pipe : undefined,
    on: (event: 'error', listener: (err: Error) => void) => c.on(event, listener),
    unref: () => c.unref(),
  });
}

export async function startLauncher(
  spawnLauncher: (req: LaunchRequest) => Promise<LauncherChild>,
  shell: string,
  launcherScript: string,
  names: HostNames,
  env: Record<string, string>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Launcher> {
  const child = await spawnLauncher({ file: shell, args: ['-c', launcherScript, 'berth-launch'], env: { PATH: SYSTEM_PATH, ...env }, cwd: '/', logPath: names.consoleLog });
  const launcher = child;
  // The launcher may exit before reading its gate line; that is reported through `ready`, not EPIPE.
  launcher.stdin?.on('error', () => undefined);
  const readyPipe = launcher.readyPipe;
  const ready = new Promise<StartedHost>((resolve, reject) => {
    let received = '';
    let settled = false;
    const finish = (err: Error | undefined, initPid?: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (readyPipe) {
        readyPipe.removeAllListeners('data').removeAllListeners('close');
        readyPipe.destroy();
      }
      launcher.stdin?.destroy();
      launcher.unref();
      if (err || initPid === undefined || launcher.pid === undefined) reject(err ?? new LaunchProcessError('launcher did not start', launcher.pid));
      else resolve({ outerPid: launcher.pid, initPid });
    };
    // Giving up while the launcher still runs: kill everything it started (its process group, as it
    // leads its own session) and only then report, so cleanup cannot race with a netns being created.
    let givingUp = false;
    const giveUp = (message: string): void => {
      if (settled || givingUp) return;
      if (launcher.pid === undefined) return finish(new LaunchProcessError(message, undefined));
      givingUp = true; // from now on a late "ready" or EOF must not settle the launch
      const pgid = launcher.pid;
      killProcessGroup(pgid).then(
        () => finish(new LaunchProcessError(message, pgid)),
        (err: unknown) => finish(new LaunchProcessError(`${message}; killing its launcher failed: ${String(err)}`, pgid)),
      );
    };
    const onAbort = (): void => giveUp('launch was cancelled');
    const timer = setTimeout(() => giveUp(`host did not come up within ${timeoutMs} ms`), timeoutMs);
    // An abort already past fires no event (a claim whose caller left before its cold launch).
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    launcher.on('error', (err) => finish(new LaunchProcessError(`cannot start ${shell}: ${err.message}`, launcher.pid)));
    if (!readyPipe) {
      finish(new LaunchProcessError('no ready pipe to the launcher', launcher.pid));
      return;
    }
    readyPipe.setEncoding('utf8');
    readyPipe.on('data', (chunk: string) => {
      if (givingUp) return;
      received += chunk;
      const match = /^ready (\d+)$/m.exec(received);
      if (match?.[1]) finish(undefined, Number(match[1]));
    });
    // EOF before "ready": the launcher or setup script failed and everything it started has exited.
    readyPipe.on('close', () => {
      if (!givingUp) finish(new LaunchProcessError('host setup exited before the init started', launcher.pid));
    });
  });
  ready.catch(() => undefined); // observed by the caller later; keep Node from calling it unhandled meanwhile
  return {
    proceed: () => launcher.stdin?.end('go\n'),
    abort: () => launcher.stdin?.end(),
    ready,
  };
}

export function cancelled(id: string): BerthError {
  return new BerthError('deadline_exceeded', `launch of host ${id} was cancelled`, 'Retry the launch if it is still wanted.');
}

export function launchError(spec: HostSpec, err: unknown, output: string): BerthError {
  if (isBerthError(err)) return err;
  if (err instanceof HostDirExistsError) {
    return new BerthError('conflict', `host ${spec.id} already exists on this machine (${err.message})`, 'Terminate the existing host first, or launch with a new id.');
  }
  if (err instanceof LaunchProcessError && err.message === 'launch was cancelled') return cancelled(spec.id);
  return new BerthError(
    'launch_failed',
    `host ${spec.id} failed to start: ${errorMessage(err)}${output ? `\n${output}` : ''}`,
    `Check that the image ${spec.image} is a root filesystem with /bin/sh, umount and the agent command; the host's console output is included above.`,
    { hostId: spec.id, console: output },
    { cause: err },
  );
}
