import { describe, expect, it } from 'vitest';
import { statsTable, withCpuRate } from './host-stats-command.js';

describe('berth host stats: the CPU rate and the table', () => {
  const at = (ms: number) => new Date(Date.UTC(2026, 0, 1) + ms).toISOString();

  it('takes the CPU rate from two readings, in percent of one core', () => {
    expect(withCpuRate({ hostId: 'h', at: at(0), cpuSeconds: 10 }, { hostId: 'h', at: at(2000), cpuSeconds: 13 })).toMatchObject({ cpuPercent: 150 });
    expect(withCpuRate({ hostId: 'h', at: at(0), cpuSeconds: 10 }, { hostId: 'h', at: at(1000), cpuSeconds: 10 })).toMatchObject({ cpuPercent: 0 });
    // Without CPU time (or without time passing) there is no rate, rather than a made-up one.
    expect(withCpuRate({ hostId: 'h', at: at(0) }, { hostId: 'h', at: at(1000) })).not.toHaveProperty('cpuPercent');
    expect(withCpuRate({ hostId: 'h', at: at(0), cpuSeconds: 1 }, { hostId: 'h', at: at(0), cpuSeconds: 2 })).not.toHaveProperty('cpuPercent');
  });

  it('shows each measure beside its limit, and a dash for what is not measured', () => {
    const text = statsTable([
      { hostId: 'h-1', at: at(0), cpuPercent: 12.5, memoryBytes: 50 * 1024 * 1024, memoryLimitBytes: 256 * 1024 * 1024, pids: 7, pidsLimit: 200, diskUsedBytes: 3 * 1024 * 1024, diskSizeBytes: 64 * 1024 * 1024 },
      { hostId: 'h-2', at: at(0), memoryBytes: 20 * 1024 * 1024 * 1024, pids: 3 },
    ]);
    expect(text.split('\n')).toEqual([
      'ID   CPU %  MEMORY                PIDS     DISK',
      'h-1  12.5   50.0 MiB / 256.0 MiB  7 / 200  3.0 MiB / 64.0 MiB',
      'h-2  -      20.0 GiB              3        -',
      '',
    ]);
  });
});
