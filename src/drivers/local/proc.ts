/**
 * Small process helpers shared by the local driver: running a tool and capturing its output,
 * quoting for /bin/sh, and identifying a process by (pid, start time) so a recycled pid is never
 * mistaken for a host's init.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export type CommandRunner = (file: string, args: string[], input?: string) => Promise<CommandResult>;

/** Runs a command to completion; never throws for a non-zero exit (callers decide what failure means). */
export function runCommand(file: string, args: string[], input?: string, env: Record<string, string> = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: SYSTEM_PATH, LC_ALL: 'C', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    // A tool that exits before reading its input must not crash us with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/** PATH used for every tool we run and inside hosts: never inherit the server's environment. */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Quotes one word for /bin/sh so that it is passed through verbatim. */
export function shQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function describeFailure(file: string, result: CommandResult): string {
  const how = result.signal ? `was killed by ${result.signal}` : `exited with ${String(result.code)}`;
  const output = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-5).join('; ');
  return `${file} ${how}${output ? `: ${output}` : ''}`;
}

export interface ProcessStat {
  /** Single-letter state from /proc/<pid>/stat, e.g. R, S, Z. */
  state: string;
  /** Clock ticks since boot at which the process started: (pid, startTime) identifies it for good. */
  startTime: number;
}

/** Reads /proc/<pid>/stat; undefined when the process does not exist. */
export function readProcessStat(pid: number): ProcessStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name may contain spaces and parentheses: the fields we want follow the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTime = Number(fields[19]);
  if (state === undefined || !Number.isFinite(startTime)) return undefined;
  return { state, startTime };
}

/** True when `pid` is still the very process that started at `startTime` and has not exited. */
export function isSameLiveProcess(pid: number | undefined, startTime: number | undefined): boolean {
  if (pid === undefined || startTime === undefined) return false;
  const stat = readProcessStat(pid);
  return stat !== undefined && stat.startTime === startTime && stat.state !== 'Z' && stat.state !== 'X';
}

export function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    // ESRCH: already gone, which is what we wanted.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `done` every `intervalMs` until it returns true or `timeoutMs` passes; returns the last answer. */
export async function pollUntil(done: () => boolean, timeoutMs: number, intervalMs = 10): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (done()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}

export function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * True while any live process of process group `pgid` exists (scans /proc: for failure paths only).
 * Zombies do not count: they already released their namespaces, and their reaper may be slow.
 */
function processGroupExists(pgid: number): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, , pgrp] = text.slice(text.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') return true;
    } catch {
      // Exited while we looked.
    }
  }
  return false;
}

/** SIGKILLs a whole process group and waits (up to `timeoutMs`) until every member is gone. */
export async function killProcessGroup(pgid: number, timeoutMs = 5000): Promise<void> {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch (err) {
    if (errnoCode(err) === 'ESRCH') return;
    throw err;
  }
  await pollUntil(() => !processGroupExists(pgid), timeoutMs, 5);
}

/** A host's PID 1 among some of the machine's processes: the one whose innermost pid is 1. */
export function findInitPid(pids: Iterable<number>): number | undefined {
  for (const pid of pids) {
    try {
      const nspid = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]?.trim().split(/\s+/);
      if (nspid && nspid.length > 1 && nspid[nspid.length - 1] === '1') return pid;
    } catch {
      // Exited while we looked.
    }
  }
  return undefined;
}
