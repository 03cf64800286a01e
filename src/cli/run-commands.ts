import type { Command } from 'commander';
import type { CommandView } from '../commands/views.js';
import { collect, parseKeyValues, table, UsageError, type Printer } from './output.js';
import type { Context } from './context.js';

const DONE = new Set(['Success', 'Failed', 'TimedOut', 'Cancelled', 'Undeliverable', 'DeliveryTimedOut']);

export function registerRunCommands(program: Command, ctx: Context): void {
  program
    .command('run')
    .description('run shell commands on hosts (Run Command); exits 0 only if every host succeeded')
    .option('--host <id>', 'target host (repeatable)', collect, [])
    .option('--tag <k=v>', 'target every live host with this tag (repeatable; all must match)', collect, [])
    .option('--group <name>', "target every live host of this group (with --tag: the group's hosts with those tags)")
    .option('-c, --command <cmd>', 'a command; repeat for several (run in order in one shell, stopping at the first failure)', collect, [])
    .option('--timeout <s>', 'execution timeout in seconds (default 3600)', Number)
    .option('--kill-grace <s>', 'seconds between TERM and KILL when it times out or is cancelled (default 5)', Number)
    .option('--delivery-timeout <s>', 'seconds for the agent to accept it, from when it is sent (default 30)', Number)
    .option('--max-concurrency <n|n%>', 'at most this many hosts at once (a count, or a percentage of the targets); the rest wait their turn')
    .option('--max-errors <n|n%>', 'stop sending to further hosts once more than this many failed (a count or a percentage)')
    .option('--cwd <dir>', 'working directory (must exist)')
    .option('--env <k=v>', 'environment variable (repeatable)', collect, [])
    .option('--follow', 'print output live as the hosts produce it')
    .option('--no-wait', 'return at once with the command id')
    .option('--json', 'print JSON')
    .argument('[cmd...]', 'the command, after --: its words are joined with spaces and run by the shell')
    .action(async (words: string[], opts: RunOptions) => {
      const commands = [...opts.command, ...(words.length ? [words.join(' ')] : [])];
      if (commands.length === 0) throw new UsageError('nothing to run: give a command after -- or with -c');
      if (opts.host.length === 0 && opts.tag.length === 0 && !opts.group) throw new UsageError('no target: give --host ID, --tag k=v or --group NAME');
      for (const [name, value] of [['--timeout', opts.timeout], ['--delivery-timeout', opts.deliveryTimeout]] as const) {
        if (value !== undefined && !(value > 0)) throw new UsageError(`${name} must be a positive number of seconds`);
      }
      if (opts.killGrace !== undefined && !(opts.killGrace >= 0)) throw new UsageError('--kill-grace must be 0 or more seconds');
      const body = {
        targets: {
          ...(opts.host.length ? { hostIds: opts.host } : {}),
          ...(opts.tag.length ? { tags: parseKeyValues(opts.tag, 'tag') } : {}),
          ...(opts.group ? { group: opts.group } : {}),
        },
        parameters: {
          commands,
          ...(opts.cwd ? { workingDirectory: opts.cwd } : {}),
          ...(opts.timeout !== undefined ? { executionTimeout: opts.timeout } : {}),
          ...(opts.killGrace !== undefined ? { killGrace: opts.killGrace } : {}),
          ...(opts.env.length ? { env: parseKeyValues(opts.env, 'env') } : {}),
        },
        ...(opts.deliveryTimeout !== undefined ? { deliveryTimeout: opts.deliveryTimeout } : {}),
        ...(opts.maxConcurrency !== undefined ? { maxConcurrency: opts.maxConcurrency } : {}),
        ...(opts.maxErrors !== undefined ? { maxErrors: opts.maxErrors } : {}),
        // Briefly: a quick command answers within it; a long one over several hosts shows progress.
        ...(opts.wait && !opts.follow ? { wait: 2 } : {}),
      };
      const printer = ctx.printer(opts.json);
      const client = ctx.client();
      let view = await client.post<CommandView>('/v1/commands', body);
      if (opts.follow && !DONE.has(view.status)) view = await follow(ctx, view.id, printer, view.invocations.length > 1);
      // Over several hosts it can take long (rate control): say how far it got whenever that changes.
      const progress = view.invocations.length > 1 && !printer.json ? new RunProgress(printer) : undefined;
      while (opts.wait && !DONE.has(view.status)) {
        progress?.show(view);
        view = await client.get<CommandView>(`/v1/commands/${view.id}?wait=${progress ? 2 : 60}`);
      }
      printCommand(printer, view, { outputPrinted: Boolean(opts.follow) });
      ctx.exitCode = exitCodeOf(view, opts.wait);
    });

  const cmd = program.command('cmd').description('inspect and cancel commands');
  cmd
    .command('show')
    .description('show a command, its invocations, exit codes and output')
    .argument('<id>')
    .option('--wait <s>', 'wait up to S seconds for it to finish', Number)
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { wait?: number; json?: boolean }) => {
      const view = await ctx.client().get<CommandView>(`/v1/commands/${encodeURIComponent(id)}${opts.wait ? `?wait=${opts.wait}` : ''}`);
      printCommand(ctx.printer(opts.json), view, { outputPrinted: false });
      ctx.exitCode = exitCodeOf(view, true);
    });
  cmd
    .command('cancel')
    .description('cancel a command: TERM to every process it started, KILL after a grace period')
    .argument('<id>')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const view = await ctx.client().post<CommandView>(`/v1/commands/${encodeURIComponent(id)}/cancel`, {});
      printCommand(ctx.printer(opts.json), view, { outputPrinted: true });
    });
  cmd
    .command('ls')
    .description('list recent commands')
    .option('--limit <n>', 'how many', Number)
    .option('--json', 'print JSON')
    .action(async (opts: { limit?: number; json?: boolean }) => {
      const { commands } = await ctx.client().get<{ commands: CommandView[] }>(`/v1/commands${opts.limit ? `?limit=${opts.limit}` : ''}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(commands, null, 2)}\n`);
      printer.out(table(['ID', 'STATUS', 'CREATED', 'BY', 'COMMANDS'], commands.map((c) => [c.id, c.status, c.createdAt, c.createdBy?.name ?? 'berth', JSON.stringify(c.parameters['commands'])])));
    });
}

interface RunOptions {
  host: string[];
  tag: string[];
  group?: string;
  command: string[];
  timeout?: number;
  killGrace?: number;
  deliveryTimeout?: number;
  maxConcurrency?: string;
  maxErrors?: string;
  cwd?: string;
  env: string[];
  follow?: boolean;
  wait: boolean;
  json?: boolean;
}

async function follow(ctx: Context, id: string, printer: Printer, prefix: boolean): Promise<CommandView> {
  const printed = new Map<string, string>();
  const print = (hostId: string, stream: string, data: string) => {
    const key = `${hostId}/${stream}`;
    printed.set(key, (printed.get(key) ?? '') + data);
    if (printer.json) return;
    const text = prefix ? data.replace(/^(?=.)/gm, `[${hostId}] `) : data;
    if (stream === 'stderr') printer.err(text);
    else printer.out(text);
  };
  let final: CommandView | undefined;
  for await (const raw of ctx.client().stream(`/v1/commands/${id}/output`)) {
    const event = raw as { type: string; hostId?: string; stream?: string; data?: string; command?: CommandView };
    if (event.type === 'command' && event.command) final = event.command;
    else if (event.type === 'output' && event.data !== undefined) print(event.hostId ?? '?', event.stream ?? 'stdout', event.data);
  }
  final ??= await ctx.client().get<CommandView>(`/v1/commands/${id}`);
  // Whatever the live stream did not carry (it raced the end of the command) is in the result.
  for (const inv of final.invocations) {
    for (const stream of ['stdout', 'stderr'] as const) {
      const seen = printed.get(`${inv.hostId}/${stream}`) ?? '';
      const all = inv[stream];
      if (!inv.truncated && all.length > seen.length && all.startsWith(seen)) print(inv.hostId, stream, all.slice(seen.length));
    }
  }
  return final;
}

function printCommand(printer: Printer, view: CommandView, opts: { outputPrinted: boolean }): void {
  if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
  const single = view.invocations.length === 1;
  for (const inv of view.invocations) {
    if (!opts.outputPrinted) {
      if (!single) printer.out(`── ${inv.hostId} ──\n`);
      if (inv.stdout) printer.out(inv.stdout.endsWith('\n') ? inv.stdout : `${inv.stdout}\n`);
      if (inv.stderr) printer.err(inv.stderr.endsWith('\n') ? inv.stderr : `${inv.stderr}\n`);
    }
  }
  const rows = view.invocations.map((inv) => [inv.hostId, inv.status, `[${inv.exitCodes.join(',')}]`, inv.truncated ? 'truncated' : '', inv.statusDetail]);
  printer.err(`command ${view.id}: ${view.status}\n`);
  if (view.maxConcurrency !== null || view.maxErrors !== null) {
    const limits = [view.maxConcurrency !== null ? `maxConcurrency ${view.maxConcurrency}` : '', view.maxErrors !== null ? `maxErrors ${view.maxErrors}` : ''].filter(Boolean).join(', ');
    const { targets, sent, completed, errors } = view.counts;
    printer.err(`rate control: ${limits}; ${sent} of ${targets} sent, ${completed} completed, ${errors} error${errors === 1 ? '' : 's'}\n`);
  }
  if (!single || view.status !== 'Success') printer.err(table(['HOST', 'STATUS', 'EXIT CODES', 'OUTPUT', 'DETAIL'], rows));
}

/** One stderr line per change: hosts done of all, running, waiting their turn, errors. */
class RunProgress {
  private last = '';

  constructor(private readonly printer: Printer) {}

  show(view: CommandView): void {
    const running = view.invocations.filter((i) => i.sentAt !== null && !DONE.has(i.status)).length;
    const waiting = view.invocations.filter((i) => i.sentAt === null && !DONE.has(i.status)).length;
    const { completed, targets, errors } = view.counts;
    const line = `${completed}/${targets} hosts done, ${running} running${waiting > 0 ? `, ${waiting} waiting their turn` : ''}${errors > 0 ? `, ${errors} failed` : ''}`;
    if (line !== this.last) this.printer.err(`${line}\n`);
    this.last = line;
  }
}

function exitCodeOf(view: CommandView, waited: boolean): number {
  if (!waited && !DONE.has(view.status)) return 0;
  return view.status === 'Success' ? 0 : 1;
}
