/**
 * `berth dashboard [--json]`: the dashboard's address with the token, checked against the server
 * first, to open in a browser (the token then moves into a cookie and out of the address bar).
 */
import type { Command } from 'commander';
import type { Context } from './context.js';

export function registerDashboardCommand(program: Command, ctx: Context): void {
  program
    .command('dashboard')
    .description("print the web dashboard's address, with the API token, to open in a browser")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const client = ctx.client();
      // Fails with the usual hint when the server is down or the token is refused.
      const pools = await client.get<{ pools: unknown[] }>('/v1/pools');
      const url = client.dashboardUrl();
      if (opts.json) process.stdout.write(`${JSON.stringify({ url, pools: pools.pools.length })}\n`);
      else process.stdout.write(`Open in a browser (the token moves into a cookie on the first visit):\n  ${url}\n`);
    });
}
