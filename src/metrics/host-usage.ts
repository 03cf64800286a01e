/**
 * What each running host uses, as families of the exposition: read at scrape time from its driver
 * (HostDriver.stats: a few cgroup files each) or, on EC2, from its agent (the machine's /proc), not
 * from the store, which does not keep them.
 * A host whose reading fails (it went away meanwhile) is left out of this scrape.
 */
import type { HostStatsView } from '../hosts/views.js';
import type { MetricFamily, MetricType } from './exposition.js';

type Field = keyof Omit<HostStatsView, 'hostId' | 'at'>;

const FAMILIES: [name: string, type: MetricType, field: Field, help: string][] = [
  ['berth_host_cpu_seconds_total', 'counter', 'cpuSeconds', "CPU time the host's processes used since it booted."],
  ['berth_host_memory_bytes', 'gauge', 'memoryBytes', 'Memory the host uses now (local: its cgroup, page cache included; EC2: the machine\'s total less available).'],
  ['berth_host_memory_limit_bytes', 'gauge', 'memoryLimitBytes', 'Memory limit of the host (EC2: the machine\'s memory; local hosts without one are absent).'],
  ['berth_host_processes', 'gauge', 'pids', 'Processes and threads of the host.'],
  ['berth_host_processes_limit', 'gauge', 'pidsLimit', 'Process limit of the host (hosts without one are absent).'],
  ['berth_host_disk_used_bytes', 'gauge', 'diskUsedBytes', 'Bytes used of the disk of its own (EC2: its root filesystem; local hosts without one are absent).'],
  ['berth_host_disk_size_bytes', 'gauge', 'diskSizeBytes', 'Size of the disk of its own (EC2: its root filesystem; local hosts without one are absent).'],
];

export function hostUsageFamilies(tenant: string, stats: readonly HostStatsView[]): MetricFamily[] {
  const sorted = [...stats].sort((a, b) => a.hostId.localeCompare(b.hostId));
  return FAMILIES.map(([name, type, field, help]) => ({
    name,
    type,
    help,
    samples: sorted.flatMap((s) => {
      const value = s[field];
      return value === undefined ? [] : [{ labels: { tenant, host: s.hostId }, value }];
    }),
  })).filter((f) => f.samples.length > 0);
}
