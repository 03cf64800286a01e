/** `berth driver`: which driver the server runs and, for AWS, the API calls it made by operation. */
import type { Command } from 'commander';
import type { Context } from './context.js';
import { table } from './output.js';

interface DriverView {
  name: string;
  calls?: Record<string, number>;
  attempts?: Record<string, number>;
}

export function registerDriverCommand(program: Command, ctx: Context): void {
  program
    .command('driver')
    .description("the server's driver; for AWS, its API calls so far by operation (attempts include retries: the cost of throttling)")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const view = await ctx.client().get<DriverView>('/v1/driver');
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(`driver: ${view.name}\n`);
      if (!view.calls) return;
      const ops = Object.keys({ ...view.calls, ...view.attempts }).sort();
      printer.out(table(['OPERATION', 'CALLS', 'ATTEMPTS'], ops.map((op) => [op, String(view.calls?.[op] ?? 0), String(view.attempts?.[op] ?? 0)])));
    });
}
