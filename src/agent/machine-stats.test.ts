/**
 * The machine's figures as the agent reads them: parsed from /proc's own formats (fixtures copied
 * from a real machine), and read for real from this one.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cpuSeconds, memoryUse, readMachineStats } from './machine-stats.js';

const STAT = `cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 10863291 3497 0 6466 0 39046 0
intr 199292893 9 0 0
ctxt 1990473336
`;
const MEMINFO = `MemTotal:       16337412 kB
MemFree:          452316 kB
MemAvailable:    9041508 kB
Buffers:          310684 kB
`;

describe('machine stats', () => {
  it("reads CPU time (all but idle and iowait, in USER_HZ) and memory in use (total less available)", () => {
    expect(cpuSeconds(STAT)).toBeCloseTo((10132153 + 290696 + 3084719 + 0 + 25195 + 0) / 100, 6);
    expect(cpuSeconds('intr 1 2 3\n')).toBeUndefined();
    expect(memoryUse(MEMINFO)).toEqual({ memoryBytes: (16337412 - 9041508) * 1024, memoryLimitBytes: 16337412 * 1024 });
    // A kernel without MemAvailable (before 3.14): MemFree.
    expect(memoryUse('MemTotal: 1000 kB\nMemFree: 400 kB\n')).toEqual({ memoryBytes: 600 * 1024, memoryLimitBytes: 1000 * 1024 });
    expect(memoryUse('nothing here')).toBeUndefined();
  });

  it('leaves out what it cannot read, and reads every figure of this machine', async () => {
    const proc = mkdtempSync(join(tmpdir(), 'berth-proc-'));
    try {
      writeFileSync(join(proc, 'stat'), STAT);
      for (const pid of ['1', '42', 'self', 'sys']) mkdirSync(join(proc, pid));
      const partial = await readMachineStats({ procRoot: proc, rootPath: join(proc, 'missing') });
      expect(partial).toEqual({ cpuSeconds: cpuSeconds(STAT), pids: 2 });
    } finally {
      rmSync(proc, { recursive: true, force: true });
    }
    const here = await readMachineStats();
    expect(here.cpuSeconds).toBeGreaterThan(0);
    expect(here.memoryBytes).toBeGreaterThan(0);
    expect(here.memoryBytes).toBeLessThanOrEqual(here.memoryLimitBytes ?? 0);
    expect(here.pids).toBeGreaterThan(1);
    expect(here.diskUsedBytes).toBeGreaterThan(0);
    expect(here.diskUsedBytes).toBeLessThanOrEqual(here.diskSizeBytes ?? 0);
  });
});
