/**
 * cgroup handling for both layouts users have: cgroup v1 (one hierarchy per controller, as on older
 * distributions and this project's CI machine) and the v2 unified hierarchy (most current distros).
 * Detection is per controller, so hybrid machines work too: each of cpu/memory/pids is taken from the
 * v1 hierarchy that has it, else from the v2 hierarchy when that offers it.
 *
 * A host gets `<hierarchy>/<cgroupName>/<id>` in every hierarchy used. Its launcher joins all of
 * them before anything else starts, so every process of the host is accounted and can be found.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError, errorMessage } from '../../core/errors.js';
import type { HostResources } from '../types.js';
import { errnoCode, sendSignal, sleep } from './proc.js';

export type CgroupController = 'cpu' | 'memory' | 'pids';
const CONTROLLERS: readonly CgroupController[] = ['cpu', 'memory', 'pids'];

export interface CgroupHierarchy {
  version: 1 | 2;
  mountPoint: string;
  /** Controllers of ours this hierarchy provides (may be empty: then used only to track processes). */
  controllers: CgroupController[];
}

export interface CgroupLayout {
  hierarchies: CgroupHierarchy[];
  /** Controllers available nowhere: a host asking for that limit cannot be launched. */
  missing: CgroupController[];
  /** A v2 hierarchy without favordynmods is used: joining it waits for an RCU grace period (see CgroupJoin). */
  slowJoin: boolean;
}

const CPU_PERIOD_US = 100_000;
/**
 * CPU shares of a standby host (a pool's spare) against a serving one: 1/16. Under contention a host
 * being warmed yields to claimed hosts (a new user's first request) instead of splitting the CPU
 * evenly with them; on an idle machine it runs at full speed, as shares only divide contended time.
 */
const CPU_SHARES = { standby: '64', serving: '1024' } as const;
const CPU_WEIGHT = { standby: '6', serving: '100' } as const;

function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Works out which hierarchy provides each controller from /proc/self/mountinfo. */
export function detectCgroupLayout(
  mountinfo: string,
  readV2Controllers: (mountPoint: string) => string[] = (mp) => readFileSync(join(mp, 'cgroup.controllers'), 'utf8').trim().split(/\s+/),
): CgroupLayout {
  const v1 = new Map<CgroupController, string>();
  let v2MountPoint: string | undefined;
  let v2Options = '';
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    const mountPoint = fields[4];
    const fsType = fields[separator + 1];
    const superOptions = fields[separator + 3] ?? '';
    if (separator < 0 || mountPoint === undefined) continue;
    if (fsType === 'cgroup') {
      for (const option of superOptions.split(',')) {
        const controller = CONTROLLERS.find((c) => c === option);
        if (controller && !v1.has(controller)) v1.set(controller, unescapeMountField(mountPoint));
      }
    } else if (fsType === 'cgroup2' && v2MountPoint === undefined) {
      v2MountPoint = unescapeMountField(mountPoint);
      v2Options = superOptions;
    }
  }
  let v2Available: string[] = [];
  if (v2MountPoint !== undefined) {
    try {
      v2Available = readV2Controllers(v2MountPoint);
    } catch {
      v2Available = [];
    }
  }
  const byMount = new Map<string, CgroupHierarchy>();
  const missing: CgroupController[] = [];
  for (const controller of CONTROLLERS) {
    const v1Mount = v1.get(controller);
    const [version, mountPoint] = v1Mount ? [1 as const, v1Mount] : v2Available.includes(controller) && v2MountPoint ? [2 as const, v2MountPoint] : [];
    if (!version || !mountPoint) {
      missing.push(controller);
      continue;
    }
    const hierarchy = byMount.get(mountPoint) ?? { version, mountPoint, controllers: [] };
    hierarchy.controllers.push(controller);
    byMount.set(mountPoint, hierarchy);
  }
  // Without any controller we still need one hierarchy to know which processes belong to a host.
  if (byMount.size === 0 && v2MountPoint !== undefined) byMount.set(v2MountPoint, { version: 2, mountPoint: v2MountPoint, controllers: [] });
  const hierarchies = [...byMount.values()];
  const slowJoin = hierarchies.some((h) => h.version === 2) && !v2Options.split(',').includes('favordynmods');
  return { hierarchies, missing, slowJoin };
}

export function parentDirs(layout: CgroupLayout, cgroupName: string): string[] {
  return layout.hierarchies.map((h) => join(h.mountPoint, cgroupName));
}

export function hostCgroupDirs(layout: CgroupLayout, cgroupName: string, id: string): string[] {
  return layout.hierarchies.map((h) => join(h.mountPoint, cgroupName, id));
}

function enableV2Controllers(dir: string, controllers: CgroupController[]): void {
  const enabled = readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8').trim().split(/\s+/);
  for (const controller of controllers) {
    if (!enabled.includes(controller)) writeFileSync(join(dir, 'cgroup.subtree_control'), `+${controller}`);
  }
}

/** Creates `<hierarchy>/<cgroupName>` everywhere and, on v2, delegates our controllers down to it. */
export function ensureCgroupParents(layout: CgroupLayout, cgroupName: string): void {
  for (const hierarchy of layout.hierarchies) {
    const parent = join(hierarchy.mountPoint, cgroupName);
    try {
      if (hierarchy.version === 2) enableV2Controllers(hierarchy.mountPoint, hierarchy.controllers);
      mkdirSync(parent, { recursive: true });
      if (hierarchy.version === 2) enableV2Controllers(parent, hierarchy.controllers);
    } catch (err) {
      throw new BerthError(
        'driver_unavailable',
        `cannot prepare cgroup ${parent}: ${errorMessage(err)}`,
        hierarchy.version === 2
          ? 'Run berth server as root with a writable cgroup v2 hierarchy. Inside a container, run it with --privileged --cgroupns=host (the root cgroup of a cgroup namespace cannot delegate controllers while it holds processes).'
          : 'Run berth server as root with the cgroup hierarchies mounted read-write (inside a container add --privileged).',
        { path: parent },
      );
    }
  }
}

/** The files (a trailing '?' marks optional ones) and values that enforce `resources` in one hierarchy. */
export function limitFiles(hierarchy: CgroupHierarchy, resources: HostResources, standby = false): [string, string][] {
  const files: [string, string][] = [];
  const has = (c: CgroupController): boolean => hierarchy.controllers.includes(c);
  if (standby && has('cpu')) files.push(cpuShareFile(hierarchy, true));
  const cpus = resources.cpus;
  const memoryBytes = resources.memoryMiB === undefined ? undefined : Math.round(resources.memoryMiB * 1024 * 1024);
  const quota = cpus === undefined ? undefined : Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
  if (hierarchy.version === 1) {
    if (has('cpu') && quota !== undefined) files.push(['cpu.cfs_period_us', String(CPU_PERIOD_US)], ['cpu.cfs_quota_us', String(quota)]);
    if (has('memory') && memoryBytes !== undefined) {
      // memsw (memory+swap) must be set after memory and keeps a host from spilling into swap.
      files.push(['memory.limit_in_bytes', String(memoryBytes)], ['memory.memsw.limit_in_bytes?', String(memoryBytes)]);
    }
  } else {
    if (has('cpu') && quota !== undefined) files.push(['cpu.max', `${quota} ${CPU_PERIOD_US}`]);
    if (has('memory') && memoryBytes !== undefined) files.push(['memory.max', String(memoryBytes)], ['memory.swap.max?', '0']);
  }
  if (has('pids') && resources.pids !== undefined) files.push(['pids.max', String(Math.max(1, Math.floor(resources.pids)))]);
  return files;
}

function cpuShareFile(hierarchy: CgroupHierarchy, standby: boolean): [string, string] {
  const level = standby ? 'standby' : 'serving';
  return hierarchy.version === 1 ? ['cpu.shares', CPU_SHARES[level]] : ['cpu.weight', CPU_WEIGHT[level]];
}

/**
 * A host's CPU share: small while it is a pool's standby, normal once it serves (see CPU_SHARES).
 * One small write per hierarchy; a host whose cgroup is gone is left alone.
 */
export function setHostStandby(layout: CgroupLayout, cgroupName: string, id: string, standby: boolean): void {
  for (const hierarchy of layout.hierarchies) {
    if (!hierarchy.controllers.includes('cpu')) continue;
    const [name, value] = cpuShareFile(hierarchy, standby);
    try {
      writeFileSync(join(hierarchy.mountPoint, cgroupName, id, name), value);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
}

export function checkResourcesSupported(layout: CgroupLayout, resources: HostResources): void {
  const wanted: [CgroupController, unknown][] = [['cpu', resources.cpus], ['memory', resources.memoryMiB], ['pids', resources.pids]];
  for (const [controller, value] of wanted) {
    if (value !== undefined && layout.missing.includes(controller)) {
      throw new BerthError(
        'launch_failed',
        `this machine has no ${controller} cgroup controller, so the requested ${controller} limit cannot be enforced`,
        `Enable the ${controller} controller (cgroup v2: add it to /sys/fs/cgroup/cgroup.subtree_control) or launch without a ${controller} limit.`,
      );
    }
  }
}

/**
 * How the launcher shell moves itself into one cgroup. Moving a whole process (cgroup.procs) takes a
 * global lock whose first use waits for an RCU grace period: 5-20 ms per launch. On v1, writing "0"
 * to `tasks` moves just the calling thread and skips that lock (kernel >= 6.1); for the single-threaded
 * launcher shell that is the same thing. v2 has no such path (unless mounted with favordynmods).
 */
export interface CgroupJoin {
  file: string;
  /** What the shell writes: "0" (itself, as a thread) or "$$" (its process). */
  value: '0' | '$$';
}

/** Creates the host's cgroups and writes its limits; returns how the launcher joins them. */
export function createHostCgroups(layout: CgroupLayout, cgroupName: string, id: string, resources: HostResources, standby = false): CgroupJoin[] {
  checkResourcesSupported(layout, resources);
  const joins: CgroupJoin[] = [];
  for (const hierarchy of layout.hierarchies) {
    const dir = join(hierarchy.mountPoint, cgroupName, id);
    try {
      mkdirSync(dir);
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    joins.push(hierarchy.version === 1 ? { file: join(dir, 'tasks'), value: '0' } : { file: join(dir, 'cgroup.procs'), value: '$$' });
    for (const [name, value] of limitFiles(hierarchy, resources, standby)) {
      const optional = name.endsWith('?');
      const file = join(dir, optional ? name.slice(0, -1) : name);
      if (optional && !existsSync(file)) continue;
      writeFileSync(file, value);
    }
  }
  return joins;
}

/** Every cgroup dir from `dir` down (deepest first), skipping those already gone. */
function subtreeDeepestFirst(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return [];
  }
  return [...entries.flatMap((name) => subtreeDeepestFirst(join(dir, name))), dir];
}

/** Pids of every live process in the given cgroups and their descendants (a host may create sub-cgroups). */
export function cgroupPids(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const dir of dirs) {
    for (const sub of subtreeDeepestFirst(dir)) {
      let text: string;
      try {
        text = readFileSync(join(sub, 'cgroup.procs'), 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n')) if (line) pids.add(Number(line));
    }
  }
  return [...pids];
}

/**
 * SIGKILLs everything left in the host's cgroups, waits until they are empty and removes them.
 * Membership of these cgroups is what makes a process part of the host, so killing by it is safe.
 */
export async function destroyHostCgroups(dirs: string[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = cgroupPids(dirs);
    if (pids.length === 0) break;
    if (Date.now() > deadline) {
      throw new BerthError('internal', `processes ${pids.join(', ')} of the host survived SIGKILL`, 'Check for processes stuck in uninterruptible sleep (state D) with ps, then terminate the host again.');
    }
    for (const dir of dirs) {
      // cgroup v2 kills a whole subtree atomically, including processes forking right now.
      if (existsSync(join(dir, 'cgroup.kill'))) writeFileSync(join(dir, 'cgroup.kill'), '1');
    }
    for (const pid of pids) sendSignal(pid, 'SIGKILL');
    await sleep(10);
  }
  for (const dir of dirs) {
    for (const sub of subtreeDeepestFirst(dir)) {
      for (;;) {
        try {
          rmdirSync(sub);
          break;
        } catch (err) {
          const code = errnoCode(err);
          if (code === 'ENOENT') break;
          // EBUSY for a moment while the last killed tasks finish exiting.
          if (code !== 'EBUSY' || Date.now() > deadline) {
            throw new BerthError('internal', `cannot remove cgroup ${sub}: ${errorMessage(err)}`, 'Terminate the host again; if it keeps failing, check what still uses that cgroup.');
          }
          await sleep(10);
        }
      }
    }
  }
}

/** Host ids that have a cgroup under our parent in any hierarchy. */
export function listHostCgroupIds(layout: CgroupLayout, cgroupName: string): string[] {
  const ids = new Set<string>();
  for (const parent of parentDirs(layout, cgroupName)) {
    try {
      for (const entry of readdirSync(parent, { withFileTypes: true })) if (entry.isDirectory()) ids.add(entry.name);
    } catch {
      // Parent not created yet: no hosts there.
    }
  }
  return [...ids];
}

export function readMountinfo(): string {
  return readFileSync('/proc/self/mountinfo', 'utf8');
}
