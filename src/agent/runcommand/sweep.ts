import { readdirSync, readFileSync } from 'node:fs';

/** Name of the environment variable that marks every process of an invocation. */
export const MARKER_ENV = 'BERTH_INVOCATION_ID';

export interface SweepTarget {
  /** Invocation id: processes whose environ holds `BERTH_INVOCATION_ID=<id>` match. */
  invocationId: string;
  /** Process group of the shell: live (non-zombie) members match even if they cleared their env. */
  pgid?: number;
}

/**
 * Live processes of an invocation: members of its process group and any process whose initial
 * environment carries the invocation marker (which catches children that called setsid to
 * leave the group). Zombies are dead already and are skipped. Never returns the caller itself.
 */
export function findInvocationProcesses(target: SweepTarget, procRoot = '/proc'): number[] {
  const marker = Buffer.from(`${MARKER_ENV}=${target.invocationId}\0`);
  const self = process.pid;
  const found: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return found;
  }
  for (const name of entries) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === self || pid === 1) continue;
    const st = readStat(`${procRoot}/${name}/stat`);
    if (!st || st.state === 'Z' || st.state === 'X') continue;
    if (target.pgid !== undefined && st.pgrp === target.pgid) {
      found.push(pid);
      continue;
    }
    if (environHas(`${procRoot}/${name}/environ`, marker)) found.push(pid);
  }
  return found;
}

function readStat(path: string): { state: string; pgrp: number } | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses: split after the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).split(' ');
  const state = fields[0] ?? '';
  const pgrp = Number(fields[2]);
  return { state, pgrp };
}

function environHas(path: string, marker: Buffer): boolean {
  let env: Buffer;
  try {
    env = readFileSync(path);
  } catch {
    return false;
  }
  if (env.length < marker.length) return false;
  // Entries are NUL-terminated: match at the start or right after a NUL.
  let at = env.indexOf(marker);
  while (at >= 0) {
    if (at === 0 || env[at - 1] === 0) return true;
    at = env.indexOf(marker, at + 1);
  }
  return false;
}

/** Sends `signal` to each pid, ignoring processes that are already gone. */
export function signalAll(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // ESRCH: gone already.
    }
  }
}

/** Signals a whole process group; false when the group no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * KILLs every process of the invocation, rescanning until none is left (new ones may have been
 * forked between a scan and its kills) or `maxMs` has passed. Returns the pids still alive at the end
 * (empty on success).
 */
export async function killInvocationProcesses(target: SweepTarget, maxMs = 3000): Promise<number[]> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    if (target.pgid !== undefined) signalGroup(target.pgid, 'SIGKILL');
    const pids = findInvocationProcesses(target);
    if (pids.length === 0) return pids;
    signalAll(pids, 'SIGKILL');
    if (Date.now() >= deadline) return findInvocationProcesses(target);
    await sleep(5);
  }
}
