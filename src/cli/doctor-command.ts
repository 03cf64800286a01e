/** `berth doctor`: can this machine run local hosts, and which of their optional features does it have. */
import type { Command } from 'commander';
import type { MachineCheck } from '../drivers/local/doctor.js';
import type { Context } from './context.js';
import { agentBundleDir } from './paths.js';
import { table } from './output.js';
import { errorMessage } from '../core/errors.js';

const MARK = { ok: 'ok', warn: 'WARN', fail: 'FAIL' } as const;

/** The checks as a table, then what to do about each one that is not ok, then the verdict. */
export function doctorReport(checks: readonly MachineCheck[]): string {
  const failed = checks.filter((c) => c.status === 'fail').length;
  const machineFailed = checks.some((c) => c.status === 'fail' && c.name !== 'database');
  const warned = checks.filter((c) => c.status === 'warn').length;
  const todo = checks.filter((c) => c.hint).map((c) => `  ${c.name}: ${c.hint ?? ''}\n`);
  const verdict =
    failed > 0
      ? `${failed} check(s) failed${machineFailed ? ': this machine cannot run local hosts until they are fixed' : ''}`
      : warned > 0
        ? `this machine can run local hosts; ${warned} optional feature(s) missing`
        : 'this machine can run local hosts, with every feature';
  return `${table(['', 'CHECK', 'RESULT'], checks.map((c) => [MARK[c.status], c.name, c.detail]))}${todo.length > 0 ? `\nwhat to do:\n${todo.join('')}` : ''}\n${verdict}\n`;
}

/** BERTH_DATABASE_URL: can it be reached, and which server holds it (of a server and its standby, the active one). */
async function databaseCheck(url: string): Promise<MachineCheck> {
  const [pg, { databaseHolder }] = await Promise.all([import('pg'), import('../store/database-lock.js')]);
  const where = (() => {
    try {
      const u = new URL(url);
      return `PostgreSQL at ${u.host}${u.pathname}`;
    } catch {
      return 'PostgreSQL';
    }
  })();
  try {
    const holder = await databaseHolder(pg.default.Client, url);
    return { name: 'database', status: 'ok', detail: holder ? `${where}, held by ${holder}` : `${where}, no server holds it` };
  } catch (err) {
    return { name: 'database', status: 'fail', detail: `${where} cannot be reached: ${errorMessage(err)}`, hint: 'Check BERTH_DATABASE_URL (postgres://user:pass@host:5432/db) and that the server is running.' };
  }
}

export function registerDoctorCommand(program: Command, ctx: Context, env: NodeJS.ProcessEnv): void {
  program
    .command('doctor')
    .description('check that this machine can run local hosts (namespaces, cgroups, overlayfs, the bridge subnet) and which optional features it has, and with BERTH_DATABASE_URL which server holds that database; exit 1 if something fails')
    .option('--bridge <name>', 'the bridge berth server will own', 'berth0')
    .option('--subnet <cidr>', "the bridge's subnet", '10.213.0.0/16')
    .option('--json', 'print JSON')
    .action(async (opts: { bridge: string; subnet: string; json?: boolean }) => {
      // Loaded here only: the driver's modules are the server's, not every command's.
      const { checkMachine } = await import('../drivers/local/doctor.js');
      const checks = await checkMachine({ stateDir: `${ctx.dataDir()}/hosts`, agentDir: agentBundleDir(), bridge: opts.bridge, subnet: opts.subnet });
      if (env['BERTH_DATABASE_URL']) checks.push(await databaseCheck(env['BERTH_DATABASE_URL']));
      const printer = ctx.printer(opts.json);
      printer.out(printer.json ? `${JSON.stringify(checks, null, 2)}\n` : doctorReport(checks));
      if (checks.some((c) => c.status === 'fail')) ctx.exitCode = 1;
    });
}
