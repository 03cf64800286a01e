/** `berth audit`: who changed what through the API (admin). */
import type { Command } from 'commander';
import { parseDurationMs } from '../core/duration.js';
import type { AuditRecord } from '../audit/audit-log.js';
import type { Context } from './context.js';
import { table, UsageError } from './output.js';

export function registerAuditCommand(program: Command, ctx: Context): void {
  program
    .command('audit')
    .description('who changed what through the API: every call that changes something (refused ones too), terminals opened, recordings read; newest first')
    .option('--token <name>', 'only the calls made with this token')
    .option('--since <duration>', 'only the last 30m, 12h, 7d…')
    .option('--failed', 'only refused or failed calls (status 400 and above)')
    .option('--limit <n>', 'at most this many', '100')
    .option('--json', 'print JSON')
    .action(async (opts: { token?: string; since?: string; failed?: boolean; limit: string; json?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new UsageError(`--limit must be a whole number from 1 to 10000 (got ${opts.limit})`);
      const query = new URLSearchParams({ limit: String(limit) });
      if (opts.token !== undefined) query.set('token', opts.token);
      if (opts.since !== undefined) query.set('since', new Date(Date.now() - parseDurationMs(opts.since, '--since')).toISOString());
      if (opts.failed) query.set('failed', 'true');
      const printer = ctx.printer(opts.json);
      const { entries } = await ctx.client().get<{ entries: AuditRecord[] }>(`/v1/audit?${query.toString()}`);
      if (printer.json) return printer.out(`${JSON.stringify(entries, null, 2)}\n`);
      if (entries.length === 0) return printer.err('no calls recorded for that\n');
      printer.out(
        table(
          ['AT', 'TOKEN', 'STATUS', 'MS', 'CALL'],
          entries.map((e) => [e.at.replace('T', ' ').slice(0, 19), e.tokenName ?? '(unknown token)', String(e.status), e.durationMs.toFixed(1), `${e.method} ${e.path}`]),
        ),
      );
    });
}
