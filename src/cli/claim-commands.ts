import type { Command } from 'commander';
import { isBerthError } from '../core/errors.js';
import type { ClaimView, PoolHostView } from '../pools/views.js';
import { age, collect, formatTags, parseKeyValues, table, UsageError, type Printer } from './output.js';
import type { Context } from './context.js';
import { agentOf, positiveNumber, wholeNumber } from './pool-commands.js';

interface ClaimOptions {
  group?: string;
  init: string[];
  env: string[];
  tag: string[];
  idempotencyKey?: string;
  deadline?: string;
  pool?: string;
  limit?: string;
  json?: boolean;
}

export function registerClaimCommands(program: Command, ctx: Context): void {
  // `claim POOL` claims and `claim ls` lists: one command whose argument `ls` means the listing
  // (a subcommand would take the claim's own --group and --json away from `ls`).
  program
    .command('claim')
    .summary('claim a ready host of a pool for a group (`berth claim ls`: list claims)')
    .usage('<pool> --group G [options]\n       berth claim ls [--pool P] [--group G] [--limit N] [--json]')
    .description(
      'Claim a ready host of POOL for group G: the host is initialised (--init) and handed over with its timings.\n' +
        'Exits 1 if init failed on every host tried (nothing is left in the group), 2 on bad usage or an unknown pool.\n' +
        '`berth claim ls` lists claims instead, newest first (so a pool named "ls" can be claimed through the API only).',
    )
    .argument('<pool>', 'the pool to claim from, or `ls` to list claims')
    .option('--group <name>', 'the group (user, tenant or environment) that gets the host; with ls: only its claims')
    .option('--init <cmd>', 'command run on the host before the claim completes (repeatable, in order)', collect, [])
    .option('--env <k=v>', 'environment of the init commands (repeatable)', collect, [])
    .option('--tag <k=v>', 'tag the claimed host (repeatable)', collect, [])
    .option('--idempotency-key <key>', 'same key, same claim (and host): safe to retry')
    .option('--deadline <s>', "seconds the claim may take, retries and cold launch included (default 60; on AWS the driver's boot limit + 30)")
    .option('--pool <name>', 'with ls: only claims of this pool')
    .option('--limit <n>', 'with ls: how many (default 100)')
    .option('--json', 'print JSON')
    .action(async (pool: string, opts: ClaimOptions) => {
      if (pool === 'ls') return listClaims(ctx, opts);
      if (opts.pool !== undefined || opts.limit !== undefined) throw new UsageError('--pool and --limit go with `berth claim ls`; to claim, give the pool as the argument');
      if (!opts.group) throw new UsageError('no group: give --group NAME (who gets the host)');
      const deadline = positiveNumber(opts.deadline, '--deadline');
      const body = {
        group: opts.group,
        ...(opts.init.length ? { init: opts.init } : {}),
        ...(opts.env.length ? { env: parseKeyValues(opts.env, 'env') } : {}),
        tags: parseKeyValues(opts.tag, 'tag'),
        ...(opts.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}),
        ...(deadline !== undefined ? { deadline } : {}),
      };
      const printer = ctx.printer(opts.json);
      if (!printer.json) printer.err(`claiming a host of pool ${pool} for group ${opts.group}… `);
      let view: ClaimView;
      try {
        view = await ctx.client().post<ClaimView>(`/v1/pools/${encodeURIComponent(pool)}/claims`, body);
      } catch (err) {
        if (!printer.json) printer.err('\n');
        // Init failed on every host tried: the request was fine, the work was not (like a failed `berth run`).
        if (isBerthError(err) && err.code === 'claim_failed') {
          printer.err(`berth: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
          ctx.exitCode = 1;
          return;
        }
        throw err;
      }
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.err(`${view.hit ? 'hit' : 'miss (cold launch)'} in ${view.timings['totalMs'] ?? '?'} ms (${formatTimings(view.timings)})\n`);
      if (view.host) printClaimedHosts(printer, [view.host]);
    });

  program
    .command('release')
    .description('release a claimed host from its group; the host is terminated and the pool refills')
    .argument('<host>', 'host id')
    .option('--reuse', 'reset the host in place (new files, processes and agent credentials) and return it to its pool instead')
    .option('--json', 'print JSON')
    .action(async (hostId: string, opts: { reuse?: boolean; json?: boolean }) => {
      const view = await ctx.client().post<PoolHostView>(`/v1/hosts/${encodeURIComponent(hostId)}/release`, { reuse: Boolean(opts.reuse) });
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(view.slot === 'warming' ? `${view.id} released: being reset for pool ${view.pool ?? '?'}\n` : `${view.id} released: ${view.state}\n`);
    });

  const group = program.command('group').description('groups: who claimed hosts (users, tenants, environments)');
  group
    .command('ls')
    .description('list groups')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { groups } = await ctx.client().get<{ groups: { name: string; labels: Record<string, string>; createdAt: string }[] }>('/v1/groups');
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(groups, null, 2)}\n`);
      if (groups.length === 0) return printer.out('no groups\n');
      printer.out(table(['NAME', 'AGE', 'LABELS'], groups.map((g) => [g.name, age(g.createdAt), formatTags(g.labels)])));
    });
  group
    .command('hosts')
    .description("list a group's hosts")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const { hosts } = await ctx.client().get<{ hosts: PoolHostView[] }>(`/v1/groups/${encodeURIComponent(name)}/hosts`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(hosts, null, 2)}\n`);
      printClaimedHosts(printer, hosts);
    });
}

async function listClaims(ctx: Context, opts: ClaimOptions): Promise<void> {
  const claimOnly = [
    ['--init', opts.init.length > 0],
    ['--env', opts.env.length > 0],
    ['--tag', opts.tag.length > 0],
    ['--idempotency-key', opts.idempotencyKey !== undefined],
    ['--deadline', opts.deadline !== undefined],
  ] as const;
  const misplaced = claimOnly.filter(([, given]) => given).map(([flag]) => flag);
  if (misplaced.length) throw new UsageError(`${misplaced.join(', ')} ${misplaced.length === 1 ? 'goes' : 'go'} with a claim, not with \`berth claim ls\``);
  const limit = wholeNumber(opts.limit, '--limit', 1);
  const query = new URLSearchParams();
  if (opts.pool) query.set('pool', opts.pool);
  if (opts.group) query.set('group', opts.group);
  if (limit !== undefined) query.set('limit', String(limit));
  const { claims } = await ctx.client().get<{ claims: ClaimView[] }>(`/v1/claims${query.size ? `?${query.toString()}` : ''}`);
  const printer = ctx.printer(opts.json);
  if (printer.json) return printer.out(`${JSON.stringify(claims, null, 2)}\n`);
  if (claims.length === 0) return printer.out('no claims\n');
  printer.out(
    table(
      ['ID', 'POOL', 'GROUP', 'STATE', 'HIT', 'TOTAL', 'HOST', 'AGE'],
      claims.map((c) => [
        c.id,
        c.pool,
        c.group,
        c.state,
        c.hit === null ? '-' : c.hit ? 'hit' : 'miss',
        c.timings['totalMs'] !== undefined ? `${c.timings['totalMs']} ms` : '-',
        c.host?.id ?? '-',
        age(c.createdAt),
      ]),
    ),
  );
}

const TIMING_ORDER = ['pickMs', 'launchMs', 'initMs', 'totalMs'];

/** `pick 0.8 ms, init 12 ms, total 14 ms`: the claim's timings, in the order they happen. */
function formatTimings(timings: Record<string, number>): string {
  const rank = (key: string) => (TIMING_ORDER.includes(key) ? TIMING_ORDER.indexOf(key) : TIMING_ORDER.length - 0.5);
  return Object.entries(timings)
    .sort(([a], [b]) => rank(a) - rank(b))
    .map(([key, ms]) => `${key.replace(/Ms$/, '')} ${ms} ms`)
    .join(', ');
}

function printClaimedHosts(printer: Printer, hosts: PoolHostView[]): void {
  if (hosts.length === 0) return printer.out('no hosts\n');
  printer.out(
    table(
      ['ID', 'STATE', 'HOSTNAME', 'IP', 'POOL', 'GROUP', 'AGENT', 'TAGS'],
      hosts.map((h) => [h.id, h.state, h.hostname, h.ip ?? '-', h.pool ?? '-', h.group ?? '-', agentOf(h), formatTags(h.tags)]),
    ),
  );
}
