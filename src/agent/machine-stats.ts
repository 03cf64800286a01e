/**
 * What the machine the agent runs on uses now, read from /proc and the root filesystem: for the
 * drivers that cannot measure their hosts from outside (an EC2 instance is a machine of its own).
 * Each figure is read on its own; one that cannot be read is left out.
 */
import { readdir, readFile, statfs } from 'node:fs/promises';
import type { MachineStats } from '../protocol/messages.js';

/** Linux reports /proc/stat in USER_HZ, which is 100 on every architecture it runs on. */
const USER_HZ = 100;

export async function readMachineStats(opts: { procRoot?: string; rootPath?: string } = {}): Promise<MachineStats> {
  const proc = opts.procRoot ?? '/proc';
  const [cpu, memory, pids, disk] = await Promise.all([
    readFile(`${proc}/stat`, 'latin1').then(cpuSeconds, () => undefined),
    readFile(`${proc}/meminfo`, 'latin1').then(memoryUse, () => undefined),
    readdir(proc).then((names) => names.filter((n) => /^\d+$/.test(n)).length, () => undefined),
    statfs(opts.rootPath ?? '/').then(
      (fs) => ({ diskSizeBytes: fs.blocks * fs.bsize, diskUsedBytes: (fs.blocks - fs.bfree) * fs.bsize }),
      () => undefined,
    ),
  ]);
  return { ...(cpu !== undefined ? { cpuSeconds: cpu } : {}), ...(memory ?? {}), ...(pids !== undefined ? { pids } : {}), ...(disk ?? {}) };
}

/** The `cpu` line: time spent on anything but idle and iowait (guest time is already in user). */
export function cpuSeconds(stat: string): number | undefined {
  const line = stat.split('\n').find((l) => l.startsWith('cpu '));
  const fields = line?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  if (fields.length < 4 || fields.some((n) => !Number.isFinite(n))) return undefined;
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / USER_HZ;
}

/** In use = MemTotal - MemAvailable (what the kernel could not hand out without swapping). */
export function memoryUse(meminfo: string): { memoryBytes: number; memoryLimitBytes: number } | undefined {
  const kib = (key: string): number | undefined => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(meminfo);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kib('MemTotal');
  const available = kib('MemAvailable') ?? kib('MemFree');
  if (total === undefined || available === undefined) return undefined;
  return { memoryBytes: total - available, memoryLimitBytes: total };
}
