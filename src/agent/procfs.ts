/**
 * What the agent reads from /proc: a process's identity (pid + start time, so a recycled pid is
 * never mistaken for another), whether it is alive, and which processes belong to a service or a
 * command (its process group, plus whatever carries its marker variable).
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcStat {
  /** One letter: R, S, D, Z (zombie), X (dead), T, ... */
  state: string;
  pgrp: number;
  /** Field 22: clock ticks after boot at which the process started. */
  startTime: number;
}

export function readProcStat(pid: number, procRoot = '/proc'): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`${procRoot}/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).split(' ');
  // fields[0] is field 3 (state), so field N is fields[N - 3].
  const state = fields[0] ?? '';
  const pgrp = Number(fields[2]);
  const startTime = Number(fields[19]);
  if (!Number.isInteger(pgrp) || !Number.isInteger(startTime)) return undefined;
  return { state, pgrp, startTime };
}

function isDead(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X';
}

/** True while `pid` is the very process that started at `startTime` and has not exited. */
export function isSameLiveProcess(pid: number, startTime: number, procRoot = '/proc'): boolean {
  const stat = readProcStat(pid, procRoot);
  return stat !== undefined && !isDead(stat) && stat.startTime === startTime;
}

/**
 * Live processes of a service or command: members of its process group, and any process whose
 * environment holds its marker (`NAME=value`), which catches children that left the group with
 * setsid. Zombies are dead already and are skipped. Never the caller, never PID 1.
 */
export function markedProcesses(target: { pgid?: number; marker?: string }, procRoot = '/proc'): number[] {
  const marker = target.marker === undefined ? undefined : Buffer.from(`${target.marker}\0`);
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
    if (pid === process.pid || pid === 1) continue;
    const stat = readProcStat(pid, procRoot);
    if (!stat || isDead(stat)) continue;
    if ((target.pgid !== undefined && stat.pgrp === target.pgid) || (marker && environHas(`${procRoot}/${name}/environ`, marker))) found.push(pid);
  }
  return found;
}

/**
 * The marked processes that left process group `pgid` (setsid): a signal to the group misses them.
 * Those still in it are left out, so a signal to the group and then to these reaches each process
 * once (a second TERM runs a shell's trap again, and many programs take it as "stop now").
 */
export function escapedProcesses(marker: string, pgid: number, procRoot = '/proc'): number[] {
  return markedProcesses({ marker }, procRoot).filter((pid) => readProcStat(pid, procRoot)?.pgrp !== pgid);
}

/** Cheaper than serviceProcesses: only the process group, for polling while a stop is under way. */
export function groupAlive(pgid: number, procRoot = '/proc'): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false;
  }
  // The group exists; it may hold only zombies, which a slow reaper leaves behind: those are gone.
  return markedProcesses({ pgid }, procRoot).length > 0;
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
