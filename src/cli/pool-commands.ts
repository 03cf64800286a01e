import { Option, type Command } from 'commander';
import type { PoolHostView, PoolStatusView } from '../pools/views.js';
import { age, collect, formatTags, parseKeyValues, splitList, table, UsageError, type Printer } from './output.js';
import type { Context } from './context.js';
import { DISK_MIN_MIB } from '../core/resources.js';

interface CreateOptions {
  image?: string;
  size: string;
  max?: string;
  maxLaunching?: string;
  maxIdleAge?: string;
  demandMax?: string;
  demandWindow?: string;
  demandLeadTime?: string;
  schedule: string[];
  timezone?: string;
  warmup: string[];
  health?: string;
  onEmpty?: 'launch' | 'fail';
  tag: string[];
  cpus?: string;
  memory?: string;
  disk?: string;
  machinePort: string[];
  egress?: boolean;
  egressAllow: string[];
  json?: boolean;
}

export function registerPoolCommands(program: Command, ctx: Context): void {
  const pool = program.command('pool').description('keep hosts booted and ready to be claimed (warm pools)');

  pool
    .command('create')
    .description('create a pool; berth then keeps SIZE hosts warmed up and ready (see `berth pool show`)')
    .argument('<name>', 'pool name (lowercase letters, digits and dashes)')
    .option('--image <dir>', "root filesystem directory of its hosts (default: this machine's root)")
    .requiredOption('--size <n>', 'ready hosts to keep')
    .option('--max <n>', 'most hosts the pool holds at once, warming and ready (default: size + max-launching)')
    .option('--max-launching <n>', 'hosts launched at once when refilling (default 4)')
    .option('--max-idle-age <s>', 'seconds a ready host may wait before it is replaced')
    .option('--demand-max <n>', 'size the pool by demand: keep up to N ready hosts, as many as the most claims seen within one refill time (--size is the fewest)')
    .option('--demand-window <s>', 'seconds of claims demand looks back on (default 600)')
    .option('--demand-lead-time <s>', "seconds a refill takes, for demand (default: measured from the pool's hosts)")
    .option('--schedule <cron=n>', 'keep N ready hosts while the cron holds, e.g. "* 8-18 * * 1-5=10" (weekdays 08:00-18:59); the first that holds wins, none: --size (repeatable)', collect, [])
    .option('--timezone <tz>', 'time zone the --schedule rules are read in (default UTC)')
    .option('--warmup <cmd>', 'command run on each new host before it counts as ready (repeatable, in order)', collect, [])
    .option('--health <cmd>', 'health check: run before a host counts as ready, every 30 s, and at each claim')
    .addOption(new Option('--on-empty <what>', 'what a claim does when no host is ready (default launch)').choices(['launch', 'fail']))
    .option('--tag <k=v>', "tag the pool's hosts (repeatable)", collect, [])
    .option('--cpus <n>', 'CPU limit of each host in cores')
    .option('--memory <MiB>', 'memory limit of each host in MiB')
    .option('--disk <MiB>', "size of the filesystem each host writes to, in MiB (default: the machine's disk, unbounded)")
    .option('--machine-port <port>', "a TCP port of the machine each host may connect to, besides its agent channel (repeatable)", collect, [])
    .option('--egress', "let each host open connections beyond the machine (NAT), except to the server's denied ranges")
    .option('--egress-allow <list>', 'egress to these only: IPv4 ranges and names (packages.example.com, *.mirror.example.org), comma-separated or repeated; implies --egress', collect, [])
    .option('--json', 'print JSON')
    .action(async (name: string, opts: CreateOptions) => {
      const egressAllow = splitList(opts.egressAllow);
      const cpus = positiveNumber(opts.cpus, '--cpus');
      const memoryMiB = wholeNumber(opts.memory, '--memory', 1);
      const diskMiB = wholeNumber(opts.disk, '--disk', DISK_MIN_MIB);
      const machinePorts = opts.machinePort.map((port) => wholeNumber(port, '--machine-port', 1) ?? 0);
      const maxSize = wholeNumber(opts.max, '--max', 0);
      const maxLaunching = wholeNumber(opts.maxLaunching, '--max-launching', 1);
      const maxIdleAge = wholeNumber(opts.maxIdleAge, '--max-idle-age', 1);
      const demandMax = wholeNumber(opts.demandMax, '--demand-max', 1);
      const demandWindow = wholeNumber(opts.demandWindow, '--demand-window', 10);
      const demandLeadTime = positiveNumber(opts.demandLeadTime, '--demand-lead-time');
      if ((demandWindow !== undefined || demandLeadTime !== undefined) && demandMax === undefined) throw new UsageError('--demand-window and --demand-lead-time need --demand-max');
      if (opts.timezone !== undefined && opts.schedule.length === 0) throw new UsageError('--timezone needs --schedule');
      const rules = opts.schedule.map(scheduleRule);
      const body = {
        name,
        ...(opts.image ? { image: opts.image } : {}),
        size: wholeNumber(opts.size, '--size', 0),
        ...(maxSize !== undefined ? { maxSize } : {}),
        ...(maxLaunching !== undefined ? { maxLaunching } : {}),
        ...(maxIdleAge !== undefined ? { maxIdleAge } : {}),
        ...(demandMax !== undefined ? { demand: { max: demandMax, ...(demandWindow !== undefined ? { window: demandWindow } : {}), ...(demandLeadTime !== undefined ? { leadTime: demandLeadTime } : {}) } } : {}),
        ...(rules.length ? { schedule: { rules, ...(opts.timezone !== undefined ? { timezone: opts.timezone } : {}) } } : {}),
        ...(opts.warmup.length ? { warmup: opts.warmup } : {}),
        ...(opts.health !== undefined ? { healthCheck: { command: opts.health } } : {}),
        ...(opts.onEmpty ? { onEmpty: opts.onEmpty } : {}),
        template: {
          ...(cpus !== undefined ? { cpus } : {}),
          ...(memoryMiB !== undefined ? { memoryMiB } : {}),
          ...(diskMiB !== undefined ? { diskMiB } : {}),
          ...(machinePorts.length ? { machinePorts } : {}),
          ...(opts.egress || egressAllow.length ? { egress: true } : {}),
          ...(egressAllow.length ? { egressAllow } : {}),
          tags: parseKeyValues(opts.tag, 'tag'),
        },
      };
      const view = await ctx.client().post<PoolStatusView>('/v1/pools', body);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      const demand = view.demand ? `, growing with demand up to ${view.demand.max}` : '';
      const target = view.status.targetSize;
      const scheduled = view.status.schedule?.rule != null ? ` (its schedule's rule ${view.status.schedule.rule + 1} holds now; otherwise ${view.size})` : '';
      printer.out(`pool ${view.name} created: filling to ${target} ready host${target === 1 ? '' : 's'}${scheduled}${demand} (watch it with \`berth pool show ${view.name}\`)\n`);
    });

  pool
    .command('ls')
    .description('list pools with their status')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { pools } = await ctx.client().get<{ pools: PoolStatusView[] }>('/v1/pools');
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(pools, null, 2)}\n`);
      if (pools.length === 0) return printer.out('no pools\n');
      printer.out(
        table(
          ['NAME', 'IMAGE', 'GEN', 'READY/SIZE', 'WARMING', 'CLAIMED', 'HITS', 'MISSES', 'STATUS'],
          pools.map((p) => [p.name, p.image, String(p.generation), `${p.status.ready}/${p.status.targetSize}`, String(p.status.warming), String(p.status.claimed), String(p.status.hits), String(p.status.misses), statusOf(p)]),
        ),
      );
    });

  pool
    .command('show')
    .description("show a pool: its spec, status, claim latency and hosts (--json: the pool, with its hosts under `hosts`)")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const path = `/v1/pools/${encodeURIComponent(name)}`;
      const view = await ctx.client().get<PoolStatusView>(path);
      const { hosts } = await ctx.client().get<{ hosts: PoolHostView[] }>(`${path}/hosts`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify({ ...view, hosts }, null, 2)}\n`);
      printPool(printer, view, hosts);
    });

  pool
    .command('scale')
    .description("change a pool's size (and its max or refill concurrency) without touching its hosts' image: growing launches at once, shrinking retires idle ready hosts")
    .argument('<name>')
    .option('--size <n>', 'ready hosts to keep')
    .option('--max <n>', 'most hosts the pool holds at once, warming and ready')
    .option('--max-launching <n>', 'hosts launched at once when refilling')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { size?: string; max?: string; maxLaunching?: string; json?: boolean }) => {
      const body = {
        ...(opts.size !== undefined ? { size: wholeNumber(opts.size, '--size', 0) } : {}),
        ...(opts.max !== undefined ? { maxSize: wholeNumber(opts.max, '--max', 0) } : {}),
        ...(opts.maxLaunching !== undefined ? { maxLaunching: wholeNumber(opts.maxLaunching, '--max-launching', 1) } : {}),
      };
      if (Object.keys(body).length === 0) throw new UsageError('nothing to change: give --size, --max or --max-launching');
      const view = await ctx.client().patch<PoolStatusView>(`/v1/pools/${encodeURIComponent(name)}`, body);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      const scheduled = view.status.targetSize !== view.size && view.status.schedule?.rule != null ? ` (its schedule keeps ${view.status.schedule.size} now)` : '';
      printer.out(`pool ${name}: size ${view.size}${scheduled}, max ${view.maxSize}, ${view.status.ready} ready (${statusOf(view)})\n`);
    });

  pool
    .command('rm')
    .description('remove a pool: its waiting hosts are terminated, claimed hosts stay with their groups')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const result = await ctx.client().delete<{ retired: number; keptClaimed: number }>(`/v1/pools/${encodeURIComponent(name)}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(result, null, 2)}\n`);
      const kept = result.keptClaimed
        ? `; ${result.keptClaimed === 1 ? '1 claimed host stays with its group' : `${result.keptClaimed} claimed hosts stay with their groups`} until \`berth release\``
        : '';
      printer.out(`pool ${name} removed: ${result.retired} waiting host${result.retired === 1 ? '' : 's'} terminated${kept}\n`);
    });
}

/** A schedule rule as the CLI takes it: CRON=N (the cron has spaces; N follows the last `=`). */
function scheduleRule(text: string): { cron: string; size: number } {
  const at = text.lastIndexOf('=');
  const size = at > 0 ? Number(text.slice(at + 1).trim()) : NaN;
  if (!Number.isInteger(size) || size < 0) throw new UsageError(`--schedule ${JSON.stringify(text)}: write CRON=N, e.g. "* 8-18 * * 1-5=10"`);
  return { cron: text.slice(0, at).trim(), size };
}

/** " (schedule: rule 1 until Mon 19:00, then 2)": what sets the size now, and until when. */
function scheduleNote(p: PoolStatusView): string {
  const s = p.status.schedule;
  if (!p.schedule || !s) return '';
  const now = s.rule === null ? `no rule holds, so ${p.size}` : `rule ${s.rule + 1}`;
  if (!s.next) return ` (schedule: ${now}, all week)`;
  const when = new Intl.DateTimeFormat('en-GB', { timeZone: p.schedule.timezone, weekday: 'short', hour: '2-digit', minute: '2-digit' }).format(new Date(s.next.at));
  return ` (schedule: ${now} until ${when}, then ${s.next.size})`;
}

/** `full`, `rolling`, or why the pool is below its size. */
function statusOf(p: PoolStatusView): string {
  const reason = p.status.full ? 'full' : p.status.notFullReason || 'filling';
  return p.status.rolling ? `rolling${p.status.full ? '' : `: ${reason}`}` : reason;
}

function printPool(printer: Printer, p: PoolStatusView, hosts: PoolHostView[]): void {
  const s = p.status;
  const lines = [
    `pool ${p.name}  generation ${p.generation}  image ${p.image}`,
    `  size ${p.size}, at most ${p.maxSize} hosts, launching ${p.maxLaunching} at a time, max idle age ${p.maxIdleAge === null ? '-' : `${p.maxIdleAge} s`}, on empty: ${p.onEmpty}`,
    `  demand: ${p.demand ? `up to ${p.demand.max} ready hosts, as many as the most claims within one refill time (${p.demand.leadTime === null ? 'measured' : `${p.demand.leadTime} s`}) over the last ${p.demand.window} s` : '- (fixed size)'}`,
    `  schedule: ${p.schedule ? `${p.schedule.rules.map((r) => `${r.size} while ${JSON.stringify(r.cron)}`).join('; ')}; otherwise ${p.size} (${p.schedule.timezone})` : '-'}`,
    `  warmup: ${p.warmup.length ? p.warmup.map((c) => JSON.stringify(c)).join(', ') : '-'}`,
    `  health check: ${p.healthCheck ? `${JSON.stringify(p.healthCheck.command)} every ${p.healthCheck.interval} s, timeout ${p.healthCheck.timeout} s` : '-'}`,
    `  template: ${templateOf(p.template) || '-'}`,
    `status: ${statusOf(p)}`,
    `  ready ${s.ready}/${s.targetSize}${scheduleNote(p)}${s.demand ? ` (demand: peak ${s.demand.peak} claims within ${s.demand.leadTimeS} s)` : ''}${s.reconnecting ? `, reconnecting ${s.reconnecting}` : ''}, warming ${s.warming}, claiming ${s.claiming}, claimed ${s.claimed}, quarantined ${s.quarantined}, retiring ${s.retiring}, stale ${s.stale}`,
    `  hits ${s.hits}, misses ${s.misses}, idle host-seconds ${s.idleHostSeconds}, consecutive failures ${s.consecutiveFailures}`,
    `  last failure: ${s.lastFailure ? `${s.lastFailure.reason} (${age(s.lastFailure.at)} ago)` : '-'}`,
    `  last claim: ${s.lastClaimAt ? `${age(s.lastClaimAt)} ago` : 'never (its ready hosts are pure cost)'}`,
  ];
  printer.out(`${lines.join('\n')}\n`);
  const buckets = s.claimLatency.filter((b) => b.count > 0);
  if (buckets.length) {
    printer.out('claim latency:\n');
    printer.out(table(['  LE', 'CLAIMS'], buckets.map((b) => [`  ${b.leMs === null ? '+Inf' : `${b.leMs} ms`}`, String(b.count)])));
  }
  if (hosts.length === 0) return printer.out('no hosts\n');
  printer.out(
    table(
      ['ID', 'SLOT', 'GEN', 'GROUP', 'IP', 'AGENT'],
      hosts.map((h) => [h.id, h.slot ?? '-', h.generation === null ? '-' : String(h.generation), h.group ?? '-', h.ip ?? '-', agentOf(h)]),
    ),
  );
}

function templateOf(template: Record<string, unknown>): string {
  const parts: string[] = [];
  // Limits first, tags last.
  for (const [key, value] of Object.entries(template).sort(([a], [b]) => Number(a === 'tags') - Number(b === 'tags'))) {
    if (key === 'tags') {
      const tags = formatTags((value ?? {}) as Record<string, string>);
      if (tags) parts.push(`tags ${tags}`);
    } else if (value !== undefined) {
      parts.push(`${key} ${typeof value === 'string' ? value : JSON.stringify(value)}`);
    }
  }
  return parts.join(', ');
}

export function agentOf(h: PoolHostView): string {
  return h.agent.connected ? 'connected' : h.agent.lastSeen ? `seen ${age(h.agent.lastSeen)} ago` : 'never';
}

/** A whole number option (`undefined` when not given); anything else is bad usage. */
export function wholeNumber(value: string | undefined, flag: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} must be a whole number${min > 0 ? ` of at least ${min}` : ' (0 or more)'}, not "${value}"`);
  return n;
}

/** A positive number option, fractions allowed (`undefined` when not given). */
export function positiveNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = value.trim() === '' ? NaN : Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number, not "${value}"`);
  return n;
}
