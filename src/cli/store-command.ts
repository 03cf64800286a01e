/**
 * `berth store copy --to postgres://…`: moves a data dir's embedded store into PostgreSQL, for an
 * installation that outgrew one machine's store (several servers, backups, a managed database). It
 * runs with the server stopped (it takes the data dir's lock), shows each table as it goes, and
 * marks the data dir so that a server started on it without the database refuses the stale copy.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { DataDir } from '../server/data-dir.js';
import type { Store } from '../store/store.js';
import type { Context } from './context.js';
import { UsageError } from './output.js';

/** The URL without its password, to print and to remember. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

export function registerStoreCommand(program: Command, ctx: Context): void {
  const store = program.command('store').description("the server's store: the embedded PGlite in the data dir, or PostgreSQL");
  store
    .command('copy')
    .description("copy the data dir's embedded store into an empty PostgreSQL database (the server stopped); then start the server with BERTH_DATABASE_URL")
    .requiredOption('--to <url>', 'the PostgreSQL database: postgres://user:pass@host:5432/db')
    .option('--json', 'print JSON')
    .action(async (opts: { to: string; json?: boolean }) => {
      if (!/^postgres(ql)?:\/\//.test(opts.to)) throw new UsageError(`--to ${redactedUrl(opts.to)}: give a PostgreSQL URL, postgres://user:pass@host:5432/db`);
      const printer = ctx.printer(opts.json);
      const path = ctx.dataDir();
      if (!existsSync(join(path, 'db'))) throw new UsageError(`${path} holds no embedded store (no db/ in it): give the server's data dir with --data-dir`);
      const dataDir = new DataDir(path);
      dataDir.assertStoreHere();
      // Loaded here, not at start-up: every other command is a small HTTP client (see startup.test.ts).
      const [{ openStore }, { copyStore }] = await Promise.all([import('../store/store.js'), import('../store/store-copy.js')]);
      dataDir.lock();
      let source: Store | undefined;
      let target: Store | undefined;
      try {
        printer.err(`opening the embedded store in ${path}…\n`);
        source = await openStore({ dataDir: path });
        printer.err(`connecting to ${redactedUrl(opts.to)}…\n`);
        target = await openStore({ databaseUrl: opts.to, poolSize: 1 });
        const started = performance.now();
        const live = process.stderr.isTTY;
        const tables = await copyStore(source, target, (table, rows, done) => {
          if (done) printer.err(`${live ? '\r' : ''}  ${table.padEnd(20)} ${rows} rows\n`);
          else if (live) printer.err(`\r  ${table.padEnd(20)} ${rows} rows…`);
        });
        dataDir.markStoreMoved(redactedUrl(opts.to));
        const total = tables.reduce((sum, t) => sum + t.rows, 0);
        const seconds = (performance.now() - started) / 1000;
        if (printer.json) return printer.out(`${JSON.stringify({ to: redactedUrl(opts.to), rows: total, seconds: Math.round(seconds * 100) / 100, tables }, null, 2)}\n`);
        printer.out(`copied ${total} rows in ${seconds.toFixed(1)} s to ${redactedUrl(opts.to)}\n`);
        printer.out(`next: BERTH_DATABASE_URL='${redactedUrl(opts.to)}' berth server --data-dir ${path} (with the password); hosts still running are adopted\n`);
      } finally {
        await target?.close();
        await source?.close();
        dataDir.unlock();
      }
    });
}
