/** `berth env create|ls|show|deploy|set|restart|scale|ttl|rm` (and up, sleep, wake, sleep-after): environments, each a URL that answers. */
import type { Command } from 'commander';
import type { EnvironmentView } from '../environments/views.js';
import { formatDurationMs } from '../core/duration.js';
import { age, collect, parseChanges, parseKeyValues, parseReplicas, table, UsageError, waitSeconds, type Printer } from './output.js';
import type { Context } from './context.js';
import { registerEnvShellCommand } from './shell-command.js';
import { registerEnvLogsCommand } from './env-logs.js';
import { formatTimings, withProgress } from './env-progress.js';
import { registerEnvSleepCommands } from './env-sleep-commands.js';
import { registerEnvUpCommand, slugPath } from './env-up-command.js';
import { registerEnvAccessCommands } from './env-access-commands.js';

interface CreateOptions {
  stack?: string;
  pool?: string;
  ref?: string;
  command?: string;
  mode: string;
  replicas: string[];
  user?: string;
  set: string[];
  ttl?: string;
  sleepAfter?: string;
  private?: boolean;
  wait?: string;
  json?: boolean;
}

/** The hosts an environment has now (whose services a change in place will move). */
async function hostsOf(ctx: Context, name: string): Promise<string[]> {
  return (await ctx.client().get<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`)).hosts.map((h) => h.hostId);
}

export function registerEnvCommands(program: Command, ctx: Context): void {
  const env = program.command('env').description('environments: a stack on claimed hosts, routed at NAME.<domain>');

  env
    .command('create')
    .description("create an environment: claim hosts from the stack's pool, start its services, route a URL to it")
    .argument('<name>', 'a DNS label: it becomes NAME.<domain>')
    .option('--stack <stack>', 'the stack it runs (berth apply)')
    .option('--pool <pool>', 'the pool its hosts come from (default: the pool named after the stack)')
    .option('--ref <ref>', 'the version it runs (BERTH_REF in every service), or a slug: a .tar/.tgz path or http(s) URL (#sha256=HEX optional) with the app and its Procfile')
    .option('--command <cmd>', "a slug's web command, when the slug has no Procfile (it listens on $PORT)")
    .option('--mode <mode>', 'review: the whole stack on one host; service: each service on its own hosts', 'review')
    .option('--replicas <n>', 'hosts per service (service mode) or review hosts behind the router (default 1); SERVICE=N gives a service its own count in service mode (repeatable)', collect, [])
    .option('--user <user>', 'who it is for')
    .option('--set <k=v>', 'env value for every service (repeatable)', collect, [])
    .option('--ttl <duration>', 'removed after this long: 90s, 30m, 2h, 7d')
    .option('--sleep-after <duration>', 'asleep after this long without a request (15m): its hosts go back to the pool, its next request wakes it')
    .option('--private', 'only requests with a berth token that may see it get through (berth env open NAME: a link for a browser)')
    .option('--wait <s>', 'seconds to wait for every service to be ready (default 120)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: CreateOptions) => {
      if (!opts.stack) throw new UsageError('no stack: give --stack NAME (see berth.yaml `stacks:`)');
      const counts = parseReplicas(opts.replicas);
      const wait = waitSeconds(opts.wait);
      const body = {
        name,
        stack: opts.stack,
        mode: opts.mode,
        ...counts,
        set: parseKeyValues(opts.set, 'set'),
        ...(opts.pool ? { pool: opts.pool } : {}),
        ...(opts.ref ? { ref: slugPath(opts.ref) } : {}),
        ...(opts.command ? { command: opts.command } : {}),
        ...(opts.user ? { user: opts.user } : {}),
        ...(opts.ttl ? { ttl: opts.ttl } : {}),
        ...(opts.sleepAfter ? { sleepAfter: opts.sleepAfter } : {}),
        ...(opts.private ? { private: true } : {}),
        ...(wait !== undefined ? { wait } : {}),
      };
      const printer = ctx.printer(opts.json);
      const view = await withProgress(ctx, printer, name, `creating environment ${name} (stack ${opts.stack}, ${opts.mode})`, [], () => ctx.client().post<EnvironmentView>('/v1/environments', body));
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.err(`ready in ${view.timings['totalMs'] ?? '?'} ms (${formatTimings(view.timings)})\n`);
      if (view.private) printer.err(`private: berth env open ${name} prints a link for a browser\n`);
      printer.out(`${view.url ?? '(no route)'}\n`);
    });

  env
    .command('ls')
    .description('list environments')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const { environments } = await ctx.client().get<{ environments: EnvironmentView[] }>('/v1/environments');
      if (printer.json) return printer.out(`${JSON.stringify(environments, null, 2)}\n`);
      if (environments.length === 0) return printer.out('no environments\n');
      printer.out(
        table(
          ['NAME', 'STACK', 'MODE', 'REF', 'STATE', 'HOSTS', 'HEALTHY', 'URL', 'AGE', 'EXPIRES', 'SLEEPS', 'ACCESS'],
          environments.map((e) => [
            e.name,
            e.stack,
            e.mode,
            e.ref ?? '-',
            e.state,
            String(e.hosts.length),
            e.backends ? `${e.backends.filter((b) => b.healthy).length}/${e.backends.length}` : '-',
            e.url ?? '-',
            age(e.createdAt),
            e.expiresAt ? `in ${until(e.expiresAt)}` : '-',
            e.sleepAfterMs === null ? '-' : `${formatDurationMs(e.sleepAfterMs)} idle`,
            e.private ? 'private' : 'public',
          ]),
        ),
      );
    });

  env
    .command('show')
    .description('an environment: its hosts, route, backends and timings')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const view = await ctx.client().get<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printEnvironment(printer, view);
    });

  registerEnvShellCommand(env, ctx);
  registerEnvLogsCommand(env, ctx);
  registerEnvSleepCommands(env, ctx);
  registerEnvUpCommand(env, ctx);
  registerEnvAccessCommands(env, ctx);

  env
    .command('deploy')
    .description('run another ref: new hosts first, the route switched once they answer, the old hosts released')
    .argument('<name>')
    .requiredOption('--ref <ref>', 'the version to run, or a slug (see env create)')
    .option('--command <cmd>', "a slug's web command, when the slug has no Procfile")
    .option('--wait <s>', 'seconds to wait for the new hosts (default 120)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { ref: string; command?: string; wait?: string; json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const body = { ref: slugPath(opts.ref), ...(opts.command ? { command: opts.command } : {}), ...(opts.wait !== undefined ? { wait: waitSeconds(opts.wait) } : {}) };
      const view = await withProgress(ctx, printer, name, `deploying ${opts.ref} to ${name}`, [], () => ctx.client().post<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}/deploy`, body));
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      if (view.state === 'sleeping') printer.err(`${name} is asleep: its next request (or berth env wake) runs ${opts.ref}\n`);
      else printer.err(`switched in ${view.timings['totalMs'] ?? '?'} ms (${formatTimings(view.timings)})\n`);
      printer.out(`${view.url ?? '(no route)'}\n`);
    });

  env
    .command('ttl')
    .description('keep an environment for this long from now (90s, 30m, 2h, 7d), or for good (none)')
    .argument('<name>')
    .argument('<duration>', 'a duration, or none')
    .option('--json', 'print JSON')
    .action(async (name: string, duration: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const ttl = duration === 'none' || duration === 'never' ? null : duration;
      const view = await ctx.client().patch<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`, { ttl });
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(view.expiresAt ? `${name} expires in ${until(view.expiresAt)} (${view.expiresAt})\n` : `${name} never expires\n`);
    });

  env
    .command('set')
    .description("change an environment's settings (env values of every service): host by host, by reload where the stack can, else restart; put back everywhere if a host's services do not come back ready")
    .argument('<name>')
    .argument('<changes...>', 'KEY=VALUE to set, KEY- to unset')
    .option('--wait <s>', "seconds each host's services get to be ready (default 120)")
    .option('--json', 'print JSON')
    .action(async (name: string, changes: string[], opts: { wait?: string; json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const { set, remove } = parseChanges(changes, 'a setting');
      const body = { set, unset: remove, ...(opts.wait !== undefined ? { wait: waitSeconds(opts.wait) } : {}) };
      const hosts = printer.json ? [] : await hostsOf(ctx, name);
      const view = await withProgress(ctx, printer, name, `changing ${name}'s settings`, hosts, () => ctx.client().patch<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}/settings`, body));
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(`${name} settings: ${view.settings.join(', ') || '-'}\n`);
    });

  env
    .command('restart')
    .description("restart an environment's services (or one): host by host, each host's new processes ready and back in the router's rotation before the next")
    .argument('<name>')
    .option('--service <service>', 'restart only this service')
    .option('--wait <s>', "seconds each host's restarted services get to be ready (default 120)")
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { service?: string; wait?: string; json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const body = { ...(opts.service ? { service: opts.service } : {}), ...(opts.wait !== undefined ? { wait: waitSeconds(opts.wait) } : {}) };
      const hosts = printer.json ? [] : await hostsOf(ctx, name);
      const view = await withProgress(ctx, printer, name, `restarting ${opts.service ?? 'the services of'} ${name}`, hosts, () => ctx.client().post<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}/restart`, body));
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(`${name}: ${view.stateReason}\n`);
    });

  env
    .command('scale')
    .description("another number of replicas, in place (hosts added or removed, the others untouched); in service mode a deploy of its ref on the new counts when other services' hosts are told the changed one's addresses")
    .argument('<name>')
    .argument('<replicas...>', 'N: review hosts behind the router, or hosts of every service; SERVICE=N (service mode): that service, the others as they are')
    .option('--wait <s>', "seconds new hosts' services get to be ready (default 120)")
    .option('--json', 'print JSON')
    .action(async (name: string, counts: string[], opts: { wait?: string; json?: boolean }) => {
      const change = parseReplicas(counts, 'replicas');
      const printer = ctx.printer(opts.json);
      const body = { ...change, ...(opts.wait !== undefined ? { wait: waitSeconds(opts.wait) } : {}) };
      const hosts = printer.json ? [] : await hostsOf(ctx, name);
      const view = await withProgress(ctx, printer, name, `scaling ${name} to ${counts.join(' ')}`, hosts, () => ctx.client().post<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}/scale`, body));
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      // Which hosts came and went says whether it scaled in place or deployed anew.
      const now = view.hosts.map((h) => h.hostId);
      const moves = [`${now.filter((id) => !hosts.includes(id)).length} new`, `${hosts.filter((id) => !now.includes(id)).length} released`].filter((m) => !m.startsWith('0 '));
      const asleep = view.state === 'sleeping' ? ' (asleep: from its next wake)' : '';
      printer.out(`${name}: ${replicaLine(view)}, ${now.length} host${now.length === 1 ? '' : 's'}${moves.length > 0 ? ` (${moves.join(', ')})` : ''}${asleep}\n`);
    });

  env
    .command('rm')
    .description('remove environments: routes go, hosts are released (reset into their pool or terminated, as the pool says)')
    .argument('<name...>')
    .option('--json', 'print JSON')
    .action(async (names: string[], opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const removed: EnvironmentView[] = [];
      try {
        for (const name of names) {
          removed.push(await ctx.client().delete<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`));
          if (!printer.json) printer.out(`${name} removed\n`);
        }
      } finally {
        // Also when a later name failed: the ones before it are gone all the same.
        if (printer.json) printer.out(`${JSON.stringify(removed, null, 2)}\n`);
      }
    });
}

function until(iso: string): string {
  const s = Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86_400)}d`;
}

/** `2 replicas`, `2 replicas (web 3, worker 1)`. */
function replicaLine(e: Pick<EnvironmentView, 'replicas' | 'serviceReplicas'>): string {
  const own = Object.entries(e.serviceReplicas).map(([service, n]) => `${service} ${n}`);
  return `${e.replicas} replica${e.replicas === 1 ? '' : 's'}${own.length > 0 ? ` (${own.join(', ')})` : ''}`;
}

function sleepLine(e: EnvironmentView): string {
  if (e.sleepAfterMs === null) return e.state === 'sleeping' ? 'asleep (put to sleep by hand); its next request wakes it' : 'never';
  const after = `after ${formatDurationMs(e.sleepAfterMs)} without a request`;
  return `${after}; last request ${e.lastRequestAt ? `${age(e.lastRequestAt)} ago` : 'none since the server started'}`;
}

function printEnvironment(printer: Printer, e: EnvironmentView): void {
  printer.out(
    `${e.name}  ${e.state}${e.stateReason ? ` (${e.stateReason})` : ''}\n` +
      `  url:      ${e.url ?? '-'}\n` +
      `  stack:    ${e.stack} (${e.mode}, ${replicaLine(e)}) from pool ${e.pool}, ref ${e.ref ?? '-'}${e.slugDigest ? ` (slug sha256 ${e.slugDigest.slice(0, 12)})` : ''}\n` +
      `  user:     ${e.user ?? '-'}   settings: ${e.settings.join(', ') || '-'}   expires: ${e.expiresAt ?? 'never'}\n` +
      `  sleeps:   ${sleepLine(e)}   access: ${e.private ? `private (berth env open ${e.name})` : 'public'}\n` +
      `  timings:  ${e.operation ?? 'last'}: ${formatTimings(e.timings)}, total ${e.timings['totalMs'] ?? '?'} ms\n`,
  );
  printer.out(table(['HOST', 'SERVICE', 'GENERATION'], e.hosts.map((h) => [h.hostId, h.service ?? '(all)', String(h.generation)])));
  if (e.backends) {
    printer.out(table(['BACKEND', 'URL', 'HEALTHY', 'REQUESTS', 'FAILURES', 'LAST ERROR'], e.backends.map((b) => [b.id, b.url, b.healthy ? 'yes' : 'no', String(b.requests), String(b.failures), b.lastError ?? '-'])));
  }
}
