import { escapedProcesses, markedProcesses } from '../procfs.js';

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
  return markedProcesses({ marker: `${MARKER_ENV}=${target.invocationId}`, ...(target.pgid !== undefined ? { pgid: target.pgid } : {}) }, procRoot);
}

/**
 * The invocation's processes that left its process group (setsid): a signal to the group misses
 * them. Those still in it are left out, so one signal to the group reaches each process once (a
 * shell's TERM trap must not run twice).
 */
export function findEscapees(target: Required<SweepTarget>, procRoot = '/proc'): number[] {
  return escapedProcesses(`${MARKER_ENV}=${target.invocationId}`, target.pgid, procRoot);
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
