import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cgroupPids, createHostCgroups, destroyHostCgroups, detectCgroupLayout, ensureCgroupParents, limitFiles, readMountinfo, type CgroupLayout } from './cgroups.js';

const line = (id: number, mountPoint: string, fsType: string, superOptions: string): string =>
  `${id} 1 0:${id} / ${mountPoint} rw,relatime shared:${id} - ${fsType} ${fsType} ${superOptions}`;

describe('detectCgroupLayout', () => {
  it('uses one v1 hierarchy per controller on cgroup v1 machines', () => {
    const mountinfo = [
      line(30, '/sys/fs/cgroup/cpu,cpuacct', 'cgroup', 'rw,cpu,cpuacct'),
      line(31, '/sys/fs/cgroup/memory', 'cgroup', 'rw,memory'),
      line(32, '/sys/fs/cgroup/pids', 'cgroup', 'rw,pids'),
      line(33, '/sys/fs/cgroup/unified', 'cgroup2', 'rw'),
    ].join('\n');
    const layout = detectCgroupLayout(mountinfo, () => []);
    expect(layout.missing).toEqual([]);
    expect(layout.hierarchies).toEqual([
      { version: 1, mountPoint: '/sys/fs/cgroup/cpu,cpuacct', controllers: ['cpu'] },
      { version: 1, mountPoint: '/sys/fs/cgroup/memory', controllers: ['memory'] },
      { version: 1, mountPoint: '/sys/fs/cgroup/pids', controllers: ['pids'] },
    ]);
  });

  it('uses the unified hierarchy on cgroup v2 machines', () => {
    const layout = detectCgroupLayout(line(30, '/sys/fs/cgroup', 'cgroup2', 'rw,nsdelegate'), () => ['cpuset', 'cpu', 'io', 'memory', 'pids']);
    expect(layout).toEqual({ hierarchies: [{ version: 2, mountPoint: '/sys/fs/cgroup', controllers: ['cpu', 'memory', 'pids'] }], missing: [], slowJoin: true });
    const fast = detectCgroupLayout(line(30, '/sys/fs/cgroup', 'cgroup2', 'rw,nsdelegate,favordynmods'), () => ['cpu', 'memory', 'pids']);
    expect(fast.slowJoin).toBe(false);
  });

  it('mixes v1 and v2 per controller on hybrid machines and reports what is missing', () => {
    const mountinfo = [line(31, '/sys/fs/cgroup/memory', 'cgroup', 'rw,memory'), line(33, '/sys/fs/cgroup/unified', 'cgroup2', 'rw')].join('\n');
    const layout = detectCgroupLayout(mountinfo, () => ['pids']);
    expect(layout.hierarchies).toEqual([
      { version: 1, mountPoint: '/sys/fs/cgroup/memory', controllers: ['memory'] },
      { version: 2, mountPoint: '/sys/fs/cgroup/unified', controllers: ['pids'] },
    ]);
    expect(layout.missing).toEqual(['cpu']);
  });

  it('falls back to a controller-less v2 hierarchy to track processes', () => {
    const layout = detectCgroupLayout(line(33, '/sys/fs/cgroup', 'cgroup2', 'rw'), () => []);
    expect(layout.hierarchies).toEqual([{ version: 2, mountPoint: '/sys/fs/cgroup', controllers: [] }]);
    expect(layout.missing).toEqual(['cpu', 'memory', 'pids']);
  });
});

describe('limitFiles', () => {
  const resources = { cpus: 1.5, memoryMiB: 512, pids: 100 };
  it('maps resources to cgroup v1 files', () => {
    expect(limitFiles({ version: 1, mountPoint: '/x', controllers: ['cpu', 'memory', 'pids'] }, resources)).toEqual([
      ['cpu.cfs_period_us', '100000'],
      ['cpu.cfs_quota_us', '150000'],
      ['memory.limit_in_bytes', String(512 * 1024 * 1024)],
      ['memory.memsw.limit_in_bytes?', String(512 * 1024 * 1024)],
      ['pids.max', '100'],
    ]);
  });

  it('maps resources to cgroup v2 files', () => {
    expect(limitFiles({ version: 2, mountPoint: '/x', controllers: ['cpu', 'memory', 'pids'] }, resources)).toEqual([
      ['cpu.max', '150000 100000'],
      ['memory.max', String(512 * 1024 * 1024)],
      ['memory.swap.max?', '0'],
      ['pids.max', '100'],
    ]);
  });

  it('writes nothing for limits that were not asked for or controllers the hierarchy lacks', () => {
    expect(limitFiles({ version: 2, mountPoint: '/x', controllers: ['pids'] }, { cpus: 2 })).toEqual([]);
  });
});

// A cgroup2 mount without controllers (the hybrid layout of many machines) still tracks and kills processes.
const controllerlessV2 = /^\d+ \d+ \S+ \/ (\S+) .* - cgroup2 /m.exec(readMountinfo())?.[1];
const canUseV2 = process.getuid?.() === 0 && controllerlessV2 !== undefined && existsSync(`${controllerlessV2}/cgroup.procs`);

describe.skipIf(!canUseV2)('cgroup v2 host lifecycle', () => {
  it('joins, finds, kills and removes a host cgroup', async () => {
    const layout: CgroupLayout = { hierarchies: [{ version: 2, mountPoint: controllerlessV2 ?? '', controllers: [] }], missing: [], slowJoin: true };
    ensureCgroupParents(layout, 'berthv2test');
    const [join] = createHostCgroups(layout, 'berthv2test', 'h-v2', {});
    expect(join).toEqual({ file: `${controllerlessV2}/berthv2test/h-v2/cgroup.procs`, value: '$$' });
    const child = spawn('/bin/sh', ['-c', `echo $$ > ${join?.file}; sleep 30 & exec sleep 30`], { stdio: 'ignore' });
    const dir = `${controllerlessV2}/berthv2test/h-v2`;
    for (let i = 0; i < 100 && cgroupPids([dir]).length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(cgroupPids([dir])).toHaveLength(2);
    expect(readFileSync(`/proc/${child.pid}/cgroup`, 'utf8')).toContain('/berthv2test/h-v2');
    await destroyHostCgroups([dir]);
    expect(existsSync(dir)).toBe(false);
    await destroyHostCgroups([`${controllerlessV2}/berthv2test`]);
  });
});
