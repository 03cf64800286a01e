/**
 * `berth env open NAME` and `berth env access NAME private|public`: who may see an environment. A
 * private one answers only requests with a berth token that may see it (X-Berth-Token), or a
 * browser that opened the link `env open` prints (good for 5 minutes; it leaves a cookie good for 12
 * hours that only that environment's address gets).
 */
import type { Command } from 'commander';
import type { EnvironmentView } from '../environments/views.js';
import type { Context } from './context.js';
import { UsageError } from './output.js';

export function registerEnvAccessCommands(env: Command, ctx: Context): void {
  env
    .command('open')
    .description("print the address to open an environment in a browser: for a private one, a link good for 5 minutes that lets this token's holder in")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const link = await ctx.client().post<{ url: string; expiresAt: string | null }>(`/v1/environments/${encodeURIComponent(name)}/access`, {});
      if (printer.json) return printer.out(`${JSON.stringify(link, null, 2)}\n`);
      if (link.expiresAt) printer.err(`${name} is private: open this link within 5 minutes (it lets you in for 12 hours; do not share it)\n`);
      printer.out(`${link.url}\n`);
    });

  env
    .command('access')
    .description('make an environment private (only tokens that may see it get through) or public')
    .argument('<name>')
    .argument('<access>', 'private or public')
    .option('--json', 'print JSON')
    .action(async (name: string, access: string, opts: { json?: boolean }) => {
      if (access !== 'private' && access !== 'public') throw new UsageError(`access ${JSON.stringify(access)}: give private or public`);
      const printer = ctx.printer(opts.json);
      const view = await ctx.client().patch<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`, { private: access === 'private' });
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(view.private ? `${name} is private: berth env open ${name} prints a link to it\n` : `${name} is public\n`);
    });
}
