/** `berth host stats`: what hosts use now, from two readings (CPU is a rate: time used over time passed). */
import type { Command } from 'commander';
import type { HostStatsView, HostView } from '../hosts/views.js';
import type { Context } from './context.js';
import { table, UsageError } from './output.js';

export interface HostStatsRow extends HostStatsView {
  /** CPU in use between the two readings, in percent of one core (200 = two cores busy). */
  cpuPercent?: number;
}

const MIB = 1024 * 1024;

function mib(bytes: number | undefined): string {
  if (bytes === undefined) return '-';
  return bytes >= 10 * 1024 * MIB ? `${(bytes / (1024 * MIB)).toFixed(1)} GiB` : `${(bytes / MIB).toFixed(1)} MiB`;
}

function ofLimit(used: string, limit: string | undefined): string {
  return limit === undefined ? used : `${used} / ${limit}`;
}

/** The second reading with the CPU rate since the first. */
export function withCpuRate(first: HostStatsView, second: HostStatsView): HostStatsRow {
  const seconds = (Date.parse(second.at) - Date.parse(first.at)) / 1000;
  if (first.cpuSeconds === undefined || second.cpuSeconds === undefined || seconds <= 0) return second;
  return { ...second, cpuPercent: Math.max(0, Math.round(((second.cpuSeconds - first.cpuSeconds) / seconds) * 1000) / 10) };
}

export function statsTable(rows: HostStatsRow[]): string {
  return table(
    ['ID', 'CPU %', 'MEMORY', 'PIDS', 'DISK'],
    rows.map((r) => [
      r.hostId,
      r.cpuPercent === undefined ? '-' : r.cpuPercent.toFixed(1),
      r.memoryBytes === undefined ? '-' : ofLimit(mib(r.memoryBytes), r.memoryLimitBytes === undefined ? undefined : mib(r.memoryLimitBytes)),
      r.pids === undefined ? '-' : ofLimit(String(r.pids), r.pidsLimit === undefined ? undefined : String(r.pidsLimit)),
      r.diskUsedBytes === undefined ? '-' : ofLimit(mib(r.diskUsedBytes), mib(r.diskSizeBytes)),
    ]),
  );
}

export function registerHostStatsCommand(host: Command, ctx: Context): void {
  host
    .command('stats')
    .description('what hosts use now: CPU (over --interval), memory, processes and own disk, with their limits')
    .argument('[ids...]', 'host ids (default: every running host)')
    .option('--interval <s>', 'seconds between the two readings the CPU rate is taken from', '1')
    .option('--json', 'print JSON')
    .action(async (ids: string[], opts: { interval: string; json?: boolean }) => {
      const interval = Number(opts.interval);
      if (!Number.isFinite(interval) || interval <= 0 || interval > 60) throw new UsageError(`--interval must be a number of seconds above 0 and at most 60, not "${opts.interval}"`);
      const client = ctx.client();
      const targets = ids.length > 0 ? ids : (await client.get<{ hosts: HostView[] }>('/v1/hosts')).hosts.filter((h) => h.state === 'running').map((h) => h.id);
      const read = () => Promise.all(targets.map((id) => client.get<HostStatsView>(`/v1/hosts/${encodeURIComponent(id)}/stats`)));
      const first = await read();
      await new Promise((resolve) => setTimeout(resolve, interval * 1000));
      const second = await read();
      const rows = second.map((s, i) => {
        const before = first[i];
        return before ? withCpuRate(before, s) : s;
      });
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(rows, null, 2)}\n`);
      printer.out(rows.length === 0 ? 'no running hosts\n' : statsTable(rows));
    });
}
