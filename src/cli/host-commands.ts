import type { Command } from 'commander';
import type { HostView } from '../hosts/views.js';
import { age, collect, formatTags, parseChanges, parseKeyValues, splitList, table, type Printer } from './output.js';
import type { Context } from './context.js';
import { registerHostStatsCommand } from './host-stats-command.js';
import { registerHostShellCommand } from './shell-command.js';

export function registerHostCommands(program: Command, ctx: Context): void {
  const host = program.command('host').description('launch, list and remove hosts');

  host
    .command('launch')
    .description('launch a host and wait until its agent is connected')
    .option('--image <image>', "an image name (`berth image ls`) or a root filesystem directory (default: this machine's root)")
    .option('--tag <k=v>', 'tag the host (repeatable)', collect, [])
    .option('--hostname <name>', 'hostname inside the host (default: its id)')
    .option('--cpus <n>', 'CPU limit in cores', Number)
    .option('--memory <MiB>', 'memory limit in MiB', Number)
    .option('--pids <n>', 'process limit', Number)
    .option('--disk <MiB>', 'size of the filesystem the host writes to, in MiB (default: the machine\'s disk, unbounded)', Number)
    .option('--machine-port <port>', "a TCP port of the machine (at the host's gateway) the host may connect to, besides its agent channel (repeatable)", collect, [])
    .option('--egress', "let the host open connections beyond the machine (NAT), except to the server's denied ranges")
    .option('--egress-allow <list>', 'egress to these only: IPv4 ranges and names (packages.example.com, *.mirror.example.org), comma-separated or repeated; implies --egress', collect, [])
    .option('--json', 'print JSON')
    .action(async (opts: { image?: string; tag: string[]; hostname?: string; cpus?: number; memory?: number; pids?: number; disk?: number; machinePort: string[]; egress?: boolean; egressAllow: string[]; json?: boolean }) => {
      const egressAllow = splitList(opts.egressAllow);
      const resources = {
        ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
        ...(opts.memory !== undefined ? { memoryMiB: opts.memory } : {}),
        ...(opts.pids !== undefined ? { pids: opts.pids } : {}),
        ...(opts.disk !== undefined ? { diskMiB: opts.disk } : {}),
        ...(opts.machinePort.length ? { machinePorts: opts.machinePort.map(Number) } : {}),
        ...(opts.egress || egressAllow.length ? { egress: true } : {}),
        ...(egressAllow.length ? { egressAllow } : {}),
      };
      const body = {
        ...(opts.image ? { image: opts.image } : {}),
        ...(opts.hostname ? { hostname: opts.hostname } : {}),
        tags: parseKeyValues(opts.tag, 'tag'),
        ...(Object.keys(resources).length ? { resources } : {}),
      };
      const printer = ctx.printer(opts.json);
      if (!printer.json) printer.err('launching host… ');
      const started = Date.now();
      const view = await ctx.client().post<HostView>('/v1/hosts', body);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.err(`ready in ${Date.now() - started} ms\n`);
      printHosts(printer, [view]);
    });

  host
    .command('ls')
    .description('list hosts (live and failed; --all adds terminated ones)')
    .option('--all', 'include terminated hosts')
    .option('--tag <k=v>', 'only hosts with this tag (repeatable)', collect, [])
    .option('--json', 'print JSON')
    .action(async (opts: { all?: boolean; tag: string[]; json?: boolean }) => {
      parseKeyValues(opts.tag, 'tag');
      const query = new URLSearchParams();
      if (opts.all) query.set('all', 'true');
      for (const t of opts.tag) query.append('tag', t);
      const { hosts } = await ctx.client().get<{ hosts: HostView[] }>(`/v1/hosts${query.size ? `?${query.toString()}` : ''}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(hosts, null, 2)}\n`);
      printHosts(printer, hosts);
    });

  host
    .command('show')
    .description('a host: state, address, image, pool and group, tags, limits and network reach, agent, open shells')
    .argument('<id>', 'host id')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const client = ctx.client();
      const view = await client.get<HostView>(`/v1/hosts/${encodeURIComponent(id)}`);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      const { sessions } = await client.get<{ sessions: unknown[] }>(`/v1/shells?host=${encodeURIComponent(id)}`);
      printer.out(describeHost(view, sessions.length));
    });

  host
    .command('reset')
    .description('make a host fresh: services stopped, every process killed, its changes discarded, booted again (services rerun)')
    .argument('<id>', 'host id')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const view = await ctx.client().post<HostView>(`/v1/hosts/${encodeURIComponent(id)}/reset`, {});
      if (printer.json) printer.out(`${JSON.stringify(view, null, 2)}\n`);
      else printer.out(`${id} reset (${view.state})\n`);
    });

  host
    .command('tag')
    .description("change a running host's tags: KEY=VALUE sets, KEY- removes; its stack's services converge")
    .argument('<id>', 'host id')
    .argument('<changes...>', 'KEY=VALUE to set, KEY- to remove')
    .option('--json', 'print JSON')
    .action(async (id: string, changes: string[], opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const view = await ctx.client().patch<HostView>(`/v1/hosts/${encodeURIComponent(id)}/tags`, parseChanges(changes, 'a tag'));
      if (printer.json) printer.out(`${JSON.stringify(view, null, 2)}\n`);
      else printer.out(`${id} tags: ${formatTags(view.tags)}\n`);
    });

  host
    .command('rm')
    .description('terminate hosts; nothing of them is left on the machine')
    .argument('<id...>', 'host ids')
    .option('--json', 'print JSON')
    .action(async (ids: string[], opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const removed: HostView[] = [];
      for (const id of ids) {
        removed.push(await ctx.client().delete<HostView>(`/v1/hosts/${encodeURIComponent(id)}`));
        if (!printer.json) printer.out(`${id} terminated\n`);
      }
      if (printer.json) printer.out(`${JSON.stringify(removed, null, 2)}\n`);
    });

  registerHostStatsCommand(host, ctx);
  registerHostShellCommand(host, ctx);
}

function printHosts(printer: Printer, hosts: HostView[]): void {
  if (hosts.length === 0) return printer.out('no hosts\n');
  printer.out(
    table(
      ['ID', 'STATE', 'HOSTNAME', 'IP', 'POOL', 'GROUP', 'AGENT', 'AGE', 'TAGS'],
      hosts.map((h) => [h.id, h.state, h.hostname, h.ip ?? '-', h.pool ?? '-', h.group ?? '-', h.agent.connected ? 'connected' : h.agent.lastSeen ? `seen ${age(h.agent.lastSeen)} ago` : 'never', age(h.createdAt), formatTags(h.tags)]),
    ),
  );
}

/** `berth host show`: one labelled line per aspect, empty ones left out. */
export function describeHost(h: HostView, openShells: number): string {
  const r = h.resources;
  const limits = [
    r['cpus'] !== undefined ? `${String(r['cpus'])} CPU` : '',
    r['memoryMiB'] !== undefined ? `${String(r['memoryMiB'])} MiB memory` : '',
    r['pids'] !== undefined ? `${String(r['pids'])} processes` : '',
    r['diskMiB'] !== undefined ? `a disk of its own of ${String(r['diskMiB'])} MiB` : '',
  ].filter(Boolean);
  const allow = Array.isArray(r['egressAllow']) ? r['egressAllow'].map(String) : [];
  const egress = r['egress'] === true ? (allow.length > 0 ? `only to ${allow.join(', ')}` : 'beyond the machine (NAT), except denied ranges') : 'none (the machine and its group only)';
  const ports = Array.isArray(r['machinePorts']) && r['machinePorts'].length > 0 ? r['machinePorts'].join(', ') : '';
  const agent = h.agent.connected ? `connected${h.agent.version ? ` (agent ${h.agent.version})` : ''}` : h.agent.lastSeen ? `away, last seen ${age(h.agent.lastSeen)} ago` : 'never connected';
  const lines: [string, string][] = [
    ['state', `${h.state}${h.stateReason ? ` (${h.stateReason})` : ''}`],
    ['hostname', h.hostname],
    ['ip', h.ip ?? '-'],
    ['image', h.imageId ? `${h.image} (${h.imageId})` : h.image],
    ['driver', h.driver],
    ['pool', h.pool ?? ''],
    ['group', h.group ?? ''],
    ['tags', formatTags(h.tags)],
    ['limits', limits.join(', ')],
    ['egress', egress],
    ['machine ports', ports],
    ['agent', agent],
    ['created', `${h.createdAt}${h.readyAt ? `, ready ${h.readyAt}` : ''}${h.terminatedAt ? `, terminated ${h.terminatedAt}` : ''}`],
    ['shells', openShells > 0 ? `${openShells} open (berth shell ls --host ${h.id})` : ''],
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  return `${h.id}\n${lines.filter(([, v]) => v !== '').map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n')}\n`;
}
