/** `berth doctor`: can this machine run local hosts, and which of their optional features does it have; or can berth run hosts on AWS. */
import { join } from 'node:path';
import type { Command } from 'commander';
import type { MachineCheck } from '../drivers/local/doctor.js';
import type { Context } from './context.js';
import { agentBundleDir } from './paths.js';
import { table, UsageError } from './output.js';
import { errorMessage } from '../core/errors.js';
import { DataDir } from '../server/data-dir.js';
import { awsDriverConfig, LOCAL_NETWORK_DEFAULTS, withAwsOptions, type AwsServerOptions } from './server-command.js';
import { recordedDriver, type AwsRecord } from './driver-record.js';

const MARK = { ok: 'ok', warn: 'WARN', fail: 'FAIL' } as const;

const LEFT_HOSTS = 'hosts';

/** How the verdict reads for each driver; `leftCheck`: the check saying what runs while its server is stopped. */
const VERDICT = {
  local: { can: 'this machine can run local hosts', cannot: 'this machine cannot run local hosts', warned: 'optional feature(s) missing', left: 'hosts of a stopped server still run', all: ', with every feature', leftCheck: LEFT_HOSTS },
  aws: { can: 'berth can run hosts on AWS with these options', cannot: 'berth cannot run hosts on AWS with these options', warned: 'warning(s)', left: 'instances run while the server is stopped', all: '', leftCheck: 'instances' },
} as const;

/** The checks as a table, then what to do about each one that is not ok, then the verdict. */
export function doctorReport(checks: readonly MachineCheck[], driver: 'local' | 'aws' = 'local'): string {
  const words = VERDICT[driver];
  const failed = checks.filter((c) => c.status === 'fail').length;
  const hostsFailed = checks.some((c) => c.status === 'fail' && c.name !== 'database');
  const warned = checks.filter((c) => c.status === 'warn' && c.name !== words.leftCheck).length;
  const leftHosts = checks.some((c) => c.status === 'warn' && c.name === words.leftCheck);
  const todo = checks.filter((c) => c.hint).map((c) => `  ${c.name}: ${c.hint ?? ''}\n`);
  const notes = [...(warned > 0 ? [`${warned} ${words.warned}`] : []), ...(leftHosts ? [words.left] : [])];
  const verdict = failed > 0 ? `${failed} check(s) failed${hostsFailed ? `: ${words.cannot} until they are fixed` : ''}` : notes.length > 0 ? `${words.can}; ${notes.join('; ')}` : `${words.can}${words.all}`;
  return `${table(['', 'CHECK', 'RESULT'], checks.map((c) => [MARK[c.status], c.name, c.detail]))}${todo.length > 0 ? `\nwhat to do:\n${todo.join('')}` : ''}\n${verdict}\n`;
}

type DoctorOptions = Omit<AwsServerOptions, 'driver'> & { bridge?: string; subnet?: string; json?: boolean; name?: string };

/** AWS: the options the data dir's server last ran with (driver-record.ts), those given overriding them. */
async function awsChecks(path: string, opts: DoctorOptions, recorded: AwsRecord | undefined): Promise<MachineCheck[]> {
  const given = Object.fromEntries(Object.entries(opts).filter(([key, value]) => key.startsWith('aws') && typeof value === 'string'));
  const merged = { ...recorded, ...given, name: opts.name ?? recorded?.name ?? 'berth' };
  if (!merged.awsImage || !merged.awsInstanceType) {
    throw new UsageError(`no AWS server has run on ${path}: give the options it will run with (--aws-image AMI --aws-instance-type TYPE, and --aws-subnets, --aws-region... as for berth server)`);
  }
  // Loaded here only: the AWS SDK costs every other command its start-up time.
  const [{ checkAws }, { resolveAwsConfig }] = await Promise.all([import('../drivers/aws/doctor.js'), import('../drivers/aws/config.js')]);
  const cfg = resolveAwsConfig(awsDriverConfig({ ...merged, awsImage: merged.awsImage, awsInstanceType: merged.awsInstanceType }));
  return checkAws({ cfg, serverPid: new DataDir(path).runningServerPid() });
}

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
  withAwsOptions(
    program
      .command('doctor')
      .description(
        "check that this machine can run local hosts (namespaces, cgroups, overlayfs, the bridge subnet) and which optional features it has, or with --driver aws that berth can run hosts on AWS (credentials, AMI, instance type, subnets, security groups, the pools' groups and their last launch, instances left running); with BERTH_DATABASE_URL which server holds that database; exit 1 if something fails",
      )
      .option('--driver <driver>', "local or aws (default: the driver the data dir's server last ran; AWS: with its options, those given here overriding them)")
      .option('--name <name>', "AWS: the installation's name (default: the one the server ran with, else berth)")
      .option('--bridge <name>', `the bridge berth server will own (default: the one the data dir's server last ran with, else ${LOCAL_NETWORK_DEFAULTS.bridge})`)
      .option('--subnet <cidr>', `the bridge's subnet (default: the one the data dir's server last ran with, else ${LOCAL_NETWORK_DEFAULTS.subnet})`)
      .option('--json', 'print JSON'),
  ).action(async (opts: DoctorOptions & { driver?: string }) => {
    const path = ctx.dataDir();
    const recorded = recordedDriver(path);
    const driver = opts.driver ?? recorded?.driver ?? 'local';
    if (driver !== 'local' && driver !== 'aws') throw new UsageError(`--driver must be local or aws (got ${driver})`);
    let checks: MachineCheck[];
    if (driver === 'aws') checks = await awsChecks(path, opts, recorded?.aws);
    else {
      // Loaded here only: the driver's modules are the server's, not every command's.
      const [{ checkMachine }, { recordedNetwork, hostDirCount }] = await Promise.all([import('../drivers/local/doctor.js'), import('../drivers/local/network-record.js')]);
      const last = recordedNetwork(join(path, 'hosts'));
      const bridge = opts.bridge ?? last?.bridge ?? LOCAL_NETWORK_DEFAULTS.bridge;
      const subnet = opts.subnet ?? last?.subnet ?? LOCAL_NETWORK_DEFAULTS.subnet;
      checks = await checkMachine({ stateDir: `${path}/hosts`, agentDir: agentBundleDir(), bridge, subnet });
      checks.push(leftHostsCheck(path, hostDirCount(join(path, 'hosts'))));
    }
    if (env['BERTH_DATABASE_URL']) checks.push(await databaseCheck(env['BERTH_DATABASE_URL']));
    const printer = ctx.printer(opts.json);
    printer.out(printer.json ? `${JSON.stringify(checks, null, 2)}\n` : doctorReport(checks, driver));
    if (checks.some((c) => c.status === 'fail')) ctx.exitCode = 1;
  });
}
