/** `berth config show`: the effective config of a stack host's services, with where each value came from. */
import type { Command } from 'commander';
import type { HostConfigView } from '../services/stack-sync.js';
import type { Context } from './context.js';
import { table, UsageError } from './output.js';

export function registerConfigCommands(program: Command, ctx: Context): void {
  const config = program.command('config').description("a stack host's layered service config");
  config
    .command('show')
    .description('every variable of each service with its source (common < environment < service < inline < host override); secret values masked')
    .argument('[service]', 'only this service')
    .option('--host <id>', 'the host')
    .option('--show-secrets', 'print secret values too')
    .option('--json', 'print JSON')
    .action(async (service: string | undefined, opts: { host?: string; showSecrets?: boolean; json?: boolean }) => {
      if (!opts.host) throw new UsageError('which host? give --host ID');
      const query = new URLSearchParams({ ...(service ? { service } : {}), ...(opts.showSecrets ? { showSecrets: 'true' } : {}) });
      const view = await ctx.client().get<HostConfigView>(`/v1/hosts/${encodeURIComponent(opts.host)}/config?${query.toString()}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(`host ${view.hostId}: stack ${view.stack}, mode ${view.mode}\n`);
      for (const problem of view.problems) printer.err(`problem: ${problem}\n`);
      for (const [name, cfg] of Object.entries(view.services)) {
        printer.out(`\n${name}  (config ${cfg.hash})\n`);
        const rows = Object.keys(cfg.env)
          .sort()
          .map((key) => [key, cfg.env[key] ?? '', cfg.sources[key] ?? '']);
        printer.out(table(['VARIABLE', 'VALUE', 'FROM'], rows));
        if (cfg.unset.length) printer.out(`unset: ${cfg.unset.join(', ')}\n`);
      }
    });
}
