/**
 * `berth down`: every host berth runs on this machine removed, with the bridge, firewall tables and
 * cgroups its server set up (src/server/take-down.ts), while what was declared stays in the store
 * for the next `berth up`. `--purge` removes the data dir too: the machine as it was before berth.
 * Hosts outlive their server by design, so without this a person who tried berth had to start the
 * server again and remove environments, pools and hosts one by one. On a data dir whose server ran
 * the AWS driver (driver-record.ts), the same for its instances: see docs/aws.md.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, realpathSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { BerthError } from '../core/errors.js';
import { DataDir } from '../server/data-dir.js';
import type { TakeDownReport } from '../server/take-down.js';
import type { Context } from './context.js';
import { recordedDriver } from './driver-record.js';
import { UsageError, type Printer } from './output.js';
import { LOCAL_NETWORK_DEFAULTS, startAwsServer, startLocalServer } from './server-command.js';

interface DownOptions {
  driver?: string;
  purge?: boolean;
  bridge?: string;
  subnet?: string;
  name?: string;
  json?: boolean;
}

export function registerDownCommand(program: Command, ctx: Context, env: NodeJS.ProcessEnv): void {
  program
    .command('down')
    .description(
      "remove every host berth runs on this machine, and the bridge, firewall tables and cgroups of its server (which must be stopped), or for an AWS server its instances (its pools' groups drained); pools, stacks, environments and images stay for the next start (--purge: the data dir goes too)",
    )
    .option('--driver <driver>', "the driver of the server taken down: local or aws (default: the one it last ran; AWS: with the options it ran with, credentials from the SDK's chain)")
    .option('--purge', "also remove the data dir: its store, images, tokens and logs (a PostgreSQL database of BERTH_DATABASE_URL is kept); AWS: the pools' Auto Scaling groups and launch templates too")
    .option('--bridge <name>', `the bridge of the server taken down (default: the one it last ran with, else ${LOCAL_NETWORK_DEFAULTS.bridge})`)
    .option('--subnet <cidr>', `its subnet (default: the one it last ran with, else ${LOCAL_NETWORK_DEFAULTS.subnet})`)
    .option('--name <name>', `its instance name (default: the one it last ran with, else ${LOCAL_NETWORK_DEFAULTS.name})`)
    .option('--json', 'print JSON')
    .action(async (opts: DownOptions) => {
      const printer = ctx.printer(opts.json);
      const path = resolve(ctx.dataDir());
      if (!existsSync(path)) {
        if (printer.json) return printer.out(`${JSON.stringify({ dataDir: path, removed: [], failed: [], interrupted: false, machine: 'none', purged: false }, null, 2)}\n`);
        return printer.out(`nothing to take down: there is no data dir at ${path}\n`);
      }
      const dataDir = new DataDir(path);
      const pid = dataDir.runningServerPid();
      if (pid) throw new BerthError('conflict', `a berth server (pid ${pid}) is running on ${path}`, `Stop it first (Ctrl-C where it runs, or kill ${pid}); its hosts keep running until berth down removes them.`);
      if (opts.purge) assertPurgeable(path);
      const recorded = recordedDriver(path);
      const driver = opts.driver ?? recorded?.driver ?? 'local';
      if (driver !== 'local' && driver !== 'aws') throw new UsageError(`--driver must be local or aws (got ${driver})`);
      const aws = driver === 'aws' && recorded?.aws ? { ...recorded.aws, name: opts.name ?? recorded.aws.name } : undefined;
      if (driver === 'aws' && !aws) throw new BerthError('validation_failed', `no AWS server has run on ${path} since berth began recording its options`, 'Start it once (berth server --driver aws with its options) and stop it, then run berth down again; or remove its pools with berth pool rm.');
      // Loaded here, not at start-up (see startup.test.ts).
      const { recordedNetwork } = await import('../drivers/local/network-record.js');
      const last = recordedNetwork(join(path, 'hosts'));
      const network = {
        bridge: opts.bridge ?? last?.bridge ?? LOCAL_NETWORK_DEFAULTS.bridge,
        subnet: opts.subnet ?? last?.subnet ?? LOCAL_NETWORK_DEFAULTS.subnet,
        name: opts.name ?? last?.name ?? LOCAL_NETWORK_DEFAULTS.name,
      };
      printer.err(`taking berth down (data dir ${path}, ${aws ? `AWS, instances named ${aws.name}` : `bridge ${network.bridge}`})…\n`);
      // Every port is a free one: this server only removes hosts, and must not need the usual ports free.
      const serverOptions = { port: '0', agentPort: '0', routerPort: '0', routerHost: '127.0.0.1', host: '127.0.0.1', domain: 'localhost', dns: 'none', ...network };
      // Ctrl-C: the hosts under way are finished, the server stopped properly (its store closed), and
      // the next run goes on from there; killed outright, PGlite could be left mid-write.
      const interrupt = new AbortController();
      const onInterrupt = (): void => {
        printer.err('  interrupted: finishing the hosts under way…\n');
        interrupt.abort();
      };
      process.once('SIGINT', onInterrupt);
      let report: TakeDownReport;
      try {
        const say = (step: string): void => printer.err(`  ${step}…\n`);
        const extras = { runLoops: false, log: (line: string) => printer.err(`  ${line}\n`) };
        const server = aws
          ? await startAwsServer(path, { ...serverOptions, ...aws, driver: 'aws', agentAdvertise: aws.agentAdvertise ?? '127.0.0.1' }, env, say, extras)
          : await startLocalServer(path, serverOptions, env, say, extras);
        try {
          report = await server.takeDown((step) => {
            if (step.kind === 'found') printer.err(`  removing ${step.hosts} host(s)…\n`);
            else printer.err(`  ${step.error ? `could not remove ${step.id}: ${step.error}` : `removed ${step.id}`} (${step.done}/${step.total})\n`);
          }, { signal: interrupt.signal, ...(opts.purge ? { purge: true } : {}) });
        } finally {
          await server.stop();
        }
      } finally {
        process.off('SIGINT', onInterrupt);
      }
      const unfinished = report.failed.length > 0 || report.interrupted;
      if (report.failed.length > 0) {
        ctx.exitCode = 1;
        printer.err(`berth: ${report.failed.length} host(s) could not be removed; the bridge and cgroups stay for them${opts.purge ? ', and so does the data dir' : ''}\n  hint: See why above, then run berth down again.\n`);
      } else if (report.interrupted) {
        ctx.exitCode = 130;
        printer.err(`berth: interrupted with ${report.removed.length} host(s) removed; the others, the bridge and cgroups${opts.purge ? ' and the data dir' : ''} are still there\n  hint: Run berth down again to finish.\n`);
      }
      const purged = Boolean(opts.purge) && !unfinished && (await purge(path, printer));
      const machine = report.machineRemoved === undefined ? 'none' : report.machineRemoved ? 'removed' : 'kept';
      const where = aws ? { driver, name: aws.name, drainedPools: report.drainedPools, removedOnAws: report.removedOnBackend } : { driver, ...network };
      if (printer.json) return printer.out(`${JSON.stringify({ dataDir: path, ...where, removed: report.removed, failed: report.failed, interrupted: report.interrupted, machine, purged }, null, 2)}\n`);
      if (unfinished) return;
      const machineWhat = aws ? ', and the security groups berth made for groups of hosts' : `, and bridge ${network.bridge} with its firewall tables and cgroups`;
      const what = `${report.removed.length} host(s) removed${machine === 'removed' ? machineWhat : ''}${
        report.removedOnBackend.length > 0 ? `, and on AWS: ${report.removedOnBackend.join(', ')}` : report.drainedPools.length > 0 ? `; the Auto Scaling group of each pool (${report.drainedPools.join(', ')}) keeps no instance until the server starts again` : ''
      }`;
      if (purged) printer.out(`berth is down: ${what}; data dir ${path} removed${env['BERTH_DATABASE_URL'] ? ' (the database of BERTH_DATABASE_URL is kept)' : ''}\n`);
      else printer.out(`berth is down: ${what}. Pools, stacks, environments and images are kept: ${aws ? 'berth server --driver aws (with its options)' : 'berth up'} brings them back (berth down --purge removes them)\n`);
    });
}

/** Refuses to purge a directory that is not plainly a berth data dir (a mistyped --data-dir must not cost a home). */
function assertPurgeable(path: string): void {
  const real = realpathSync(path);
  const isDataDir = ['token', 'db', 'hosts'].some((entry) => existsSync(join(real, entry)));
  const home = existsSync(homedir()) ? realpathSync(homedir()) : homedir();
  const hint = 'Give the data dir a berth server ran with (--data-dir), or run berth down without --purge.';
  if (real === '/' || real === home) throw new BerthError('validation_failed', `${path} is ${real === '/' ? 'the root directory' : 'your home directory'}, so --purge will not remove it`, hint);
  if (!isDataDir) throw new BerthError('validation_failed', `${path} does not look like a berth data dir (no token, db/ or hosts/ in it), so --purge will not remove it`, hint);
}

/**
 * Removes the data dir once nothing is mounted below it: a recursive removal would otherwise go
 * through a mount into what it shows (an image view's lower layers, the machine's root for '/').
 */
async function purge(path: string, printer: Printer): Promise<boolean> {
  const real = realpathSync(path);
  // Loaded here, not at start-up (see startup.test.ts).
  const { mountPoints } = await import('../drivers/local/overlay.js');
  const below = (): string[] => [...mountPoints()].filter((point) => point === real || point.startsWith(`${real}/`));
  // Deepest first; lazily, as a bake view a killed server left may still be busy for a moment.
  for (const point of below().sort((a, b) => b.length - a.length)) execFileSync('umount', ['-l', point]);
  const left = below();
  if (left.length > 0) {
    throw new BerthError('internal', `cannot remove ${path}: ${left.join(', ')} is still mounted`, 'Unmount it (umount -l PATH), then run berth down --purge again.');
  }
  printer.err(`  removing ${path}…\n`);
  rmSync(real, { recursive: true, force: true });
  return true;
}
