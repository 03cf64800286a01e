/**
 * What a local host uses now, from its cgroups and its own disk: cheap reads of a few files each,
 * so a client may poll them (`berth host stats` samples twice for a CPU rate).
 *
 * CPU time: cgroup v2's cpu.stat has it for the whole cgroup, whatever ran and exited. On cgroup v1
 * berth's hosts join the cpu, memory and pids hierarchies; where cpuacct is mounted with cpu its
 * cpuacct.usage has it, otherwise it is summed from the host's processes (/proc/PID/stat: their own
 * time and that of the children they reaped, which PID 1's reaping makes nearly everything).
 */
import { readFileSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import type { HostStats } from '../types.js';
import type { CgroupHierarchy, CgroupLayout } from './cgroups.js';
import { cgroupPids } from './cgroups.js';

/** Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on every architecture Linux runs berth on). */
const USER_HZ = 100;
/** cgroup v1 writes "no limit" as the largest page-aligned 64-bit number; anything this large is none. */
const V1_NO_LIMIT = 2 ** 60;

/**
 * Read synchronously: these are a few bytes of cgroupfs or procfs each, and a sync read takes a
 * fifth of the time of one through libuv's thread pool (measured: 0.17 against 0.74 ms per host;
 * `npm run bench -- foundation` has the reading's cost through the API).
 */
function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function readNumber(path: string): number | undefined {
  const text = readText(path);
  if (text === undefined || text === 'max') return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : undefined;
}

const limit = (value: number | undefined): number | undefined => (value === undefined || value >= V1_NO_LIMIT ? undefined : value);

/** CPU seconds of the processes in `dir` (and the children they reaped), from /proc. */
function processCpuSeconds(dir: string): number {
  let ticks = 0;
  for (const pid of cgroupPids([dir])) {
    const stat = readText(`/proc/${pid}/stat`);
    if (!stat) continue;
    // Fields after the command (which may hold spaces), from the 3rd: utime is the 14th field overall.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    for (const index of [11, 12, 13, 14]) ticks += Number(fields[index] ?? 0);
  }
  return ticks / USER_HZ;
}

function fromHierarchy(hierarchy: CgroupHierarchy, dir: string, stats: HostStats): void {
  const has = (c: string): boolean => (hierarchy.controllers as string[]).includes(c);
  if (hierarchy.version === 2) {
    const usage = (readText(join(dir, 'cpu.stat')))?.match(/^usage_usec (\d+)$/m)?.[1];
    if (usage !== undefined) stats.cpuSeconds = Number(usage) / 1e6;
    if (has('memory')) {
      stats.memoryBytes = readNumber(join(dir, 'memory.current'));
      stats.memoryLimitBytes = readNumber(join(dir, 'memory.max'));
    }
  } else {
    if (has('cpu')) {
      const usage = readNumber(join(dir, 'cpuacct.usage'));
      stats.cpuSeconds = usage !== undefined ? usage / 1e9 : processCpuSeconds(dir);
    }
    if (has('memory')) {
      stats.memoryBytes = readNumber(join(dir, 'memory.usage_in_bytes'));
      stats.memoryLimitBytes = limit(readNumber(join(dir, 'memory.limit_in_bytes')));
    }
  }
  if (has('pids')) {
    stats.pids = readNumber(join(dir, 'pids.current'));
    stats.pidsLimit = readNumber(join(dir, 'pids.max'));
  }
}

export function readHostStats(layout: CgroupLayout, cgroupName: string, id: string, diskMountPoint: string | undefined): HostStats {
  const stats: HostStats = {};
  for (const hierarchy of layout.hierarchies) fromHierarchy(hierarchy, join(hierarchy.mountPoint, cgroupName, id), stats);
  if (diskMountPoint) {
    const fs = statfsSync(diskMountPoint);
    stats.diskSizeBytes = fs.blocks * fs.bsize;
    stats.diskUsedBytes = (fs.blocks - fs.bfree) * fs.bsize;
  }
  // Absent, not undefined-valued, fields: JSON and deep equality see the same thing.
  return Object.fromEntries(Object.entries(stats).filter(([, v]) => v !== undefined));
}
