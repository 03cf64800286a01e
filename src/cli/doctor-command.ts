/** `berth doctor`: can this machine run local hosts, and which of their optional features does it have. */
import { join } from 'node:path';
import type { Command } from 'commander';
import type { MachineCheck } from '../drivers/local/doctor.js';
import type { Context } from './context.js';
import { agentBundleDir } from './paths.js';
import { table } from './output.js';
import { errorMessage } from '../core/errors.js';
import { DataDir } from '../server/data-dir.js';
import { LOCAL_NETWORK_DEFAULTS } from './server-command.js';

const MARK = { ok: 'ok', warn: 'WARN', fail: 'FAIL' } as const;

/** The checks as a table, then what to do about each one that is not ok, then the verdict. */
export function doctorReport(checks: readonly MachineCheck[]): string {
  const failed = checks.filter((c) => c.status === 'fail').length;
  const machineFailed = checks.some((c) => c.status === 'fail' && c.name !== 'database');
  const warned = checks.filter((c) => c.status === 'warn' && c.name !== LEFT_HOSTS).length;
  const leftHosts = checks.some((c) => c.status === 'warn' && c.name === LEFT_HOSTS);
  const todo = checks.filter((c) => c.hint).map((c) => `  ${c.name}: ${c.hint ?? ''}\n`);
  const verdict =
    failed > 0
      ? `${failed} check(s) failed${machineFailed ? ': this machine cannot run local hosts until they are fixed' : ''}`
      : warned > 0 || leftHosts
        ? `this machine can run local hosts; ${[...(warned > 0 ? [`${warned} optional feature(s) missing`] : []), ...(leftHosts ? ['hosts of a stopped server still run'] : [])].join('; ')}`
        : 'this machine can run local hosts, with every feature';
  return `${table(['', 'CHECK', 'RESULT'], checks.map((c) => [MARK[c.status], c.name, c.detail]))}${todo.length > 0 ? `\nwhat to do:\n${todo.join('')}` : ''}\n${verdict}\n`;
}

const LEFT_HOSTS = 'hosts';

/**
 * Hosts outlive their server by design: a stopped server's are adopted at its next start. Said here
 * because a person who only tried berth may not know they still run (and use memory).
 */
function leftHostsCheck(path: string, count: number): MachineCheck {
  if (count === 0) return { name: LEFT_HOSTS, status: 'ok', detail: `none on this machine from ${path}` };
  const pid = new DataDir(path).runningServerPid();
  if (pid) return { name: LEFT_HOSTS, status: 'ok', detail: `${count}, run by the server of ${path} (pid ${pid})` };
  return { name: LEFT_HOSTS, status: 'warn', detail: `${count} still running from ${path}, whose server is stopped`, hint: 'Start the server (berth server, berth up) and it adopts them, or remove them all with berth down.' };
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
    .option('--bridge <name>', `the bridge berth server will own (default: the one the data dir's server last ran with, else ${LOCAL_NETWORK_DEFAULTS.bridge})`)
    .option('--subnet <cidr>', `the bridge's subnet (default: the one the data dir's server last ran with, else ${LOCAL_NETWORK_DEFAULTS.subnet})`)
    .option('--json', 'print JSON')
    .action(async (opts: { bridge?: string; subnet?: string; json?: boolean }) => {
      // Loaded here only: the driver's modules are the server's, not every command's.
      const [{ checkMachine }, { recordedNetwork, hostDirCount }] = await Promise.all([import('../drivers/local/doctor.js'), import('../drivers/local/network-record.js')]);
      const path = ctx.dataDir();
      const last = recordedNetwork(join(path, 'hosts'));
      const bridge = opts.bridge ?? last?.bridge ?? LOCAL_NETWORK_DEFAULTS.bridge;
      const subnet = opts.subnet ?? last?.subnet ?? LOCAL_NETWORK_DEFAULTS.subnet;
      const checks = await checkMachine({ stateDir: `${path}/hosts`, agentDir: agentBundleDir(), bridge, subnet });
      checks.push(leftHostsCheck(path, hostDirCount(join(path, 'hosts'))));
      if (env['BERTH_DATABASE_URL']) checks.push(await databaseCheck(env['BERTH_DATABASE_URL']));
      const printer = ctx.printer(opts.json);
      printer.out(printer.json ? `${JSON.stringify(checks, null, 2)}\n` : doctorReport(checks));
      if (checks.some((c) => c.status === 'fail')) ctx.exitCode = 1;
    });
}
