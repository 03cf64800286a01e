/** `berth svc`: a host's supervised services. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { CommandView } from '../commands/views.js';
import type { HostServicesView } from '../services/services-service.js';
import type { Context } from './context.js';
import { followCommands, startFollower } from './follow-commands.js';
import { age, table, UsageError, type Printer } from './output.js';

interface HostOption {
  host?: string;
  json?: boolean;
}

export function registerSvcCommands(program: Command, ctx: Context): void {
  const svc = program.command('svc').description("a host's supervised services");
  const host = (opts: HostOption): string => {
    if (!opts.host) throw new UsageError('which host? give --host ID');
    return encodeURIComponent(opts.host);
  };

  svc
    .command('ls')
    .description('each service with its state, restarts, pid and last exit')
    .option('--host <id>', 'the host')
    .option('--json', 'print JSON')
    .action(async (opts: HostOption) => {
      printServices(ctx.printer(opts.json), await ctx.client().get<HostServicesView>(`/v1/hosts/${host(opts)}/services`));
    });

  svc
    .command('set')
    .description("set a host's services from a file (`services:` list; YAML or JSON); only changed ones restart")
    .requiredOption('-f, --file <file>', 'the file')
    .option('--host <id>', 'the host')
    .option('--wait <s>', 'wait up to S seconds for every service to be ready or failed', Number)
    .option('--json', 'print JSON')
    .action(async (opts: HostOption & { file: string; wait?: number }) => {
      // Loaded here only: the YAML parser costs every other command its start-up time.
      const { parse: parseYaml } = await import('yaml');
      const doc = parseYaml(readFileSync(opts.file, 'utf8')) as { services?: unknown } | null;
      if (!doc || !Array.isArray(doc.services)) throw new UsageError(`${opts.file} has no services: list`);
      const query = opts.wait ? `?wait=${opts.wait}` : '';
      const view = await ctx.client().put<HostServicesView>(`/v1/hosts/${host(opts)}/services${query}`, { services: doc.services });
      printServices(ctx.printer(opts.json), view);
      if (view.services.some((s) => s.status?.state === 'failed')) ctx.exitCode = 1;
    });

  for (const action of ['start', 'stop', 'restart'] as const) {
    svc
      .command(action)
      .description(`${action} a service`)
      .argument('<name>')
      .option('--host <id>', 'the host')
      .option('--json', 'print JSON')
      .action(async (name: string, opts: HostOption) => {
        const view = await ctx.client().post<HostServicesView>(`/v1/hosts/${host(opts)}/services/${encodeURIComponent(name)}/${action}`, {});
        printServices(ctx.printer(opts.json), view);
      });
  }

  svc
    .command('logs')
    .description("a service's log (timestamped lines; rotated files are <name>.log.1, .2, …)")
    .argument('<name>')
    .option('--host <id>', 'the host')
    .option('-n, --lines <n>', 'lines from the end', Number, 100)
    .option('-f, --follow', 'keep printing new lines, across rotation (Ctrl-C ends)')
    .action(async (name: string, opts: HostOption & { lines: number; follow?: boolean }) => {
      if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(name)) throw new UsageError(`${JSON.stringify(name)} is not a service name`);
      // The protocol module (and its schemas) only when this command runs.
      const { SERVICE_LOG_DIR } = await import('../protocol/messages.js');
      const file = `${SERVICE_LOG_DIR}/${name}.log`;
      const lines = Math.max(0, Math.floor(opts.lines));
      const client = ctx.client();
      const hostId = decodeURIComponent(host(opts));
      if (opts.follow) {
        const follower = await startFollower(client, hostId, file, lines);
        await followCommands(client, [follower.id], (_, chunk) => void (chunk.stream === 'stderr' ? process.stderr : process.stdout).write(chunk.data));
        return;
      }
      const body = { targets: { hostIds: [hostId] }, parameters: { commands: [`tail -n ${lines} ${file}`], executionTimeout: 60 }, wait: 60 };
      const inv = (await client.post<CommandView>('/v1/commands', body)).invocations[0];
      process.stdout.write(inv?.stdout ?? '');
      if (inv?.status !== 'Success') {
        process.stderr.write(inv?.stderr || `berth: reading ${file} failed (${inv?.status ?? 'no invocation'})\n`);
        ctx.exitCode = 1;
      }
    });
}

function printServices(printer: Printer, view: HostServicesView): void {
  if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
  const rows = view.services.map((s) => {
    const st = s.status;
    const exit = st?.lastExit ? (st.lastExit.signal ?? (st.lastExit.code === null ? 'unknown' : `code ${st.lastExit.code}`)) : '-';
    const pending = st && st.configHash !== s.configHash ? ' (converging)' : '';
    return [s.name, `${st?.state ?? 'unknown'}${pending}`, String(st?.restarts ?? 0), st?.pid ? String(st.pid) : '-', exit, age(st?.since ?? null), st?.reason ?? ''];
  });
  printer.out(table(['NAME', 'STATE', 'RESTARTS', 'PID', 'LAST EXIT', 'SINCE', 'REASON'], rows));
  if (!view.agentConnected) printer.err(`host ${view.hostId}: its agent is not connected; states are as last reported\n`);
}
