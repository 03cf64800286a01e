/**
 * `berth env sleep|wake|sleep-after`: environments that hold no host while nobody uses them. Asleep,
 * an environment's hosts are back in the pool; its next request through the router (or `env wake`)
 * claims hosts for it again, as a create does, and is answered once its services are ready.
 */
import type { Command } from 'commander';
import { formatDurationMs } from '../core/duration.js';
import type { EnvironmentView } from '../environments/views.js';
import type { Context } from './context.js';
import { formatTimings, withProgress } from './env-progress.js';
import { waitSeconds } from './output.js';

export function registerEnvSleepCommands(env: Command, ctx: Context): void {
  env
    .command('sleep')
    .description('put environments to sleep now: their hosts go back to the pool, their next request wakes them')
    .argument('<name...>')
    .option('--json', 'print JSON')
    .action(async (names: string[], opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const asleep: EnvironmentView[] = [];
      try {
        for (const name of names) {
          const view = await ctx.client().post<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}/sleep`, {});
          asleep.push(view);
          if (!printer.json) printer.out(`${name} asleep: its hosts went back to pool ${view.pool}; its next request wakes it (${view.url ?? 'no route'})\n`);
        }
      } finally {
        // Also when a later name failed: the ones before it sleep all the same.
        if (printer.json) printer.out(`${JSON.stringify(asleep, null, 2)}\n`);
      }
    });

  env
    .command('wake')
    .description('wake a sleeping environment now, as its next request would: hosts claimed, services started, routed')
    .argument('<name>')
    .option('--wait <s>', 'seconds to wait for its services to be ready (default 120)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { wait?: string; json?: boolean }) => {
      const wait = waitSeconds(opts.wait);
      const printer = ctx.printer(opts.json);
      const body = wait !== undefined ? { wait } : {};
      const before = printer.json ? undefined : await ctx.client().get<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`);
      if (before && before.state !== 'sleeping') {
        printer.err(`${name} is ${before.state}, not asleep\n`);
        return printer.out(`${before.url ?? '(no route)'}\n`);
      }
      const view = await withProgress(ctx, printer, name, `waking ${name}`, [], () => ctx.client().post<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}/wake`, body));
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.err(`awake in ${view.timings['totalMs'] ?? '?'} ms (${formatTimings(view.timings)})\n`);
      printer.out(`${view.url ?? '(no route)'}\n`);
    });

  env
    .command('sleep-after')
    .description('let an environment sleep after this long without a request (30s, 15m, 2h), or never')
    .argument('<name>')
    .argument('<duration>', 'a duration, or never')
    .option('--json', 'print JSON')
    .action(async (name: string, duration: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const sleepAfter = duration === 'never' || duration === 'none' ? null : duration;
      const view = await ctx.client().patch<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`, { sleepAfter });
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(view.sleepAfterMs === null ? `${name} never sleeps\n` : `${name} sleeps after ${formatDurationMs(view.sleepAfterMs)} without a request\n`);
    });
}
