/**
 * A host's own disk (HostResources.diskMiB) on this machine (root on Linux needed; skipped
 * otherwise): a host that fills it gets ENOSPC and the machine's disk holds at most its size; a
 * reset gives a fresh one; a capture copies its layer; terminate leaves no mount or loop device.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostSpec } from '../types.js';
import { countLocalLeftovers, LocalDriver, type LocalDriverConfig } from './index.js';
import { inHost, initPidOf, runTool, sleeperDriverConfig, startTestDriver, testSpec } from './test-helpers.js';

const canRun = process.platform === 'linux' && process.getuid?.() === 0;
const root = mkdtempSync('/tmp/berth-disk-test-');
const config: LocalDriverConfig = sleeperDriverConfig(root, { bridge: 'berthdsk0', subnet: '10.244.0.0/24', cgroupName: 'berthdsk' });
const run = randomBytes(3).toString('hex');

const spec = (name: string, diskMiB?: number): HostSpec => testSpec(run, name, 'ws://10.244.0.1:7071/v1/agent', diskMiB === undefined ? {} : { diskMiB });

/** Bytes the machine's disk holds for a file (a sparse file holds only what was written). */
const allocated = (path: string): number => statSync(path).blocks * 512;

describe.skipIf(!canRun)('a host with a disk of its own', () => {
  let driver: LocalDriver;
  let baseline: ReturnType<typeof countLocalLeftovers>;

  beforeAll(async () => {
    ({ driver, baseline } = await startTestDriver(config));
  });

  afterAll(async () => {
    for (const host of await driver.list()) await driver.terminate(host.id, host.driverData);
    expect(countLocalLeftovers(config)).toEqual(baseline);
    expect(await driver.teardown()).toBe(true);
    rmSync(root, { recursive: true, force: true });
  });

  it('stops a host that fills its disk with ENOSPC, and the machine holds no more than its size', async () => {
    const host = await driver.launch(spec('full', 32));
    const df = await inHost(host, 'df -k / | tail -1');
    const sizeKiB = Number(df.stdout.trim().split(/\s+/)[1]);
    expect(sizeKiB).toBeGreaterThan(20 * 1024);
    expect(sizeKiB).toBeLessThanOrEqual(32 * 1024);
    const fill = await inHost(host, 'dd if=/dev/zero of=/root/big bs=1M count=64 2>&1; echo "exit $?"');
    expect(fill.stdout).toMatch(/No space left on device/);
    expect(fill.stdout).not.toContain('exit 0');
    expect(allocated(`${config.stateDir}/${host.id}/disk.img`)).toBeLessThanOrEqual(33 * 1024 * 1024);
    // Nor through its console log (the init's output, open to anything in the host at /proc/1/fd/1).
    await inHost(host, 'dd if=/dev/zero of=/proc/1/fd/1 bs=1M count=64 2>/dev/null; true');
    expect(allocated(realpathSync(`${config.stateDir}/${host.id}/console.log`))).toBeLessThanOrEqual(33 * 1024 * 1024);
    expect(allocated(`${config.stateDir}/${host.id}/disk.img`)).toBeLessThanOrEqual(33 * 1024 * 1024);
    await inHost(host, ': > /proc/1/fd/1');
    // The host still works: removing the file gives the room back.
    expect((await inHost(host, 'rm /root/big && echo hello > /root/small && cat /root/small')).stdout).toBe('hello\n');
    // Another host, without a disk of its own, writes on as before.
    const free = await driver.launch(spec('free'));
    expect((await inHost(free, 'dd if=/dev/zero of=/root/big bs=1M count=40 2>/dev/null && echo wrote')).stdout).toBe('wrote\n');
    await Promise.all([driver.terminate(host.id, host.driverData), driver.terminate(free.id, free.driverData)]);
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);

  it('reports what a host uses: CPU time, memory and processes with their limits, and its disk', async () => {
    const host = await driver.launch({ ...spec('stats', 64), resources: { diskMiB: 64, memoryMiB: 256, pids: 200 } });
    const before = await driver.stats(host.id, host.driverData);
    expect(before).toMatchObject({ memoryLimitBytes: 256 * 1024 * 1024, pidsLimit: 200 });
    expect(before.pids).toBeGreaterThanOrEqual(1);
    expect(before.memoryBytes).toBeGreaterThan(0);
    expect(before.diskSizeBytes).toBeGreaterThan(48 * 1024 * 1024);
    expect(before.diskSizeBytes).toBeLessThanOrEqual(64 * 1024 * 1024);
    // 16 MiB written, and a busy loop running in the host (in its cgroups, as its agent's commands are).
    await inHost(host, 'dd if=/dev/urandom of=/root/data bs=1M count=16 2>/dev/null');
    const joins = (host.driverData['cgroupDirs'] as string[]).map((dir) => `echo $$ > ${dir}/cgroup.procs`).join('; ');
    await runTool('sh', ['-c', `${joins}; exec nsenter -t ${initPidOf(host)} -a /bin/sh -c 'nohup sh -c "while :; do :; done" >/dev/null 2>&1 &'`]);
    await new Promise((r) => setTimeout(r, 600));
    const after = await driver.stats(host.id, host.driverData);
    expect((after.cpuSeconds ?? 0) - (before.cpuSeconds ?? 0)).toBeGreaterThan(0.2);
    expect(after.pids).toBeGreaterThan(before.pids ?? 0);
    expect((after.diskUsedBytes ?? 0) - (before.diskUsedBytes ?? 0)).toBeGreaterThanOrEqual(15 * 1024 * 1024);
    // A host without limits or a disk of its own: the fields it has no value for are absent.
    const plain = await driver.launch(spec('stats-plain'));
    const stats = await driver.stats(plain.id, plain.driverData);
    expect(Object.keys(stats).sort()).toEqual(['cpuSeconds', 'memoryBytes', 'pids']);
    await Promise.all([driver.terminate(host.id, host.driverData), driver.terminate(plain.id, plain.driverData)]);
    await expect(driver.stats(host.id, host.driverData)).rejects.toMatchObject({ code: 'invalid_state' });
  }, 60_000);

  it('gives a reset host a fresh disk of the same size', async () => {
    const host = await driver.launch(spec('reset', 32));
    await inHost(host, 'echo secret > /root/left');
    const fresh = await driver.reset(spec('reset', 32), host.driverData);
    expect((await inHost(fresh, 'test -e /root/left && echo LEFTOVER; df -k / | tail -1')).stdout).not.toContain('LEFTOVER');
    expect((await inHost(fresh, 'dd if=/dev/zero of=/root/big bs=1M count=64 2>&1')).stdout).toMatch(/No space left on device/);
    await driver.terminate(fresh.id, fresh.driverData);
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);

  it('captures the layer of a host on its own disk (copied: the disk goes with the host)', async () => {
    const host = await driver.launch(spec('capture', 32));
    await inHost(host, 'mkdir -p /opt/app && echo v1 > /opt/app/version');
    const dest = `${root}/layer`;
    await driver.captureLayer(host.id, host.driverData, dest, { stop: true });
    await driver.terminate(host.id, host.driverData);
    expect(existsSync(`${dest}/opt/app/version`)).toBe(true);
    expect(readdirSync(dest)).not.toContain('lost+found');
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);
});
