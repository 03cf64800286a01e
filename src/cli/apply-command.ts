/**
 * `berth apply -f berth.yaml`: creates or changes the pools and stacks a file declares (apply-file.ts,
 * loaded when the command runs).
 */
import type { Command } from 'commander';
import type { Context } from './context.js';
import { waitSeconds } from './output.js';

export function registerApplyCommand(program: Command, ctx: Context): void {
  program
    .command('apply')
    .summary('create or change the pools and stacks a berth.yaml declares')
    .description(
      'Create or change the pools a berth.yaml declares (`pools:` list; see README); prints created, updated, rolled (a new image or template: hosts are replaced) or unchanged for each. The whole file is checked before anything is sent; pools the file does not name are left alone',
    )
    .requiredOption('-f, --file <file>', 'the berth.yaml')
    .option('--wait [s]', "then wait until every pool the file declares is full of its current generation (its ready hosts there, its roll complete), showing progress; seconds, default 300")
    .option('--json', 'print JSON')
    .action(async (opts: { file: string; wait?: string | true; json?: boolean }) => {
      const waitS = opts.wait === true ? 300 : waitSeconds(opts.wait);
      const { applyFile } = await import('./apply-file.js');
      await applyFile(ctx, opts.file, ctx.printer(opts.json), waitS === undefined ? {} : { waitMs: waitS * 1000 });
    });
}

