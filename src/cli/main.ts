/**
 * The `berth` CLI. Exit codes: 0 ok, 1 failed (including a command that did not succeed), 2 bad usage
 * (rejected by the CLI or answered 4xx by the server).
 */
import { registerEnvCommands } from './env-commands.js';
import { registerUpCommand } from './up-command.js';
import { Command, CommanderError } from 'commander';
import { isBerthError } from '../core/errors.js';
import { defaultDataDir } from '../server/data-dir.js';
import { registerApplyCommand } from './apply-command.js';
import { registerClaimCommands } from './claim-commands.js';
import { createContext } from './context.js';
import { registerHostCommands } from './host-commands.js';
import { registerImageCommands } from './image-commands.js';
import { UsageError } from './output.js';
import { registerPoolCommands } from './pool-commands.js';
import { registerRunCommands } from './run-commands.js';
import { registerServerCommand } from './server-command.js';
import { registerDriverCommand } from './driver-command.js';
import { registerSvcCommands } from './svc-commands.js';
import { registerConfigCommands } from './config-commands.js';
import { registerEventsCommand } from './events-command.js';
import { registerDashboardCommand } from './dashboard-command.js';
import { registerDoctorCommand } from './doctor-command.js';
import { registerShellCommands } from './shell-command.js';
import { registerTokenCommands } from './token-commands.js';
import { registerAuditCommand } from './audit-command.js';
import { registerStoreCommand } from './store-command.js';
import { registerDownCommand } from './down-command.js';

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const program = new Command('berth')
    .description('ready, isolated hosts in milliseconds')
    .version('0.1.0')
    .option('--data-dir <dir>', 'data dir of the local server (default: $BERTH_DATA_DIR or ~/.berth)')
    .exitOverride()
    .showHelpAfterError();
  const ctx = createContext(env, () => program.opts<{ dataDir?: string }>().dataDir ?? env['BERTH_DATA_DIR'] ?? defaultDataDir());

  registerServerCommand(program, ctx, env);
  registerUpCommand(program, ctx, env);
  registerDownCommand(program, ctx, env);
  registerHostCommands(program, ctx);
  registerRunCommands(program, ctx);
  registerShellCommands(program, ctx);
  registerPoolCommands(program, ctx);
  registerClaimCommands(program, ctx);
  registerApplyCommand(program, ctx);
  registerSvcCommands(program, ctx);
  registerConfigCommands(program, ctx);
  registerImageCommands(program, ctx);
  registerEnvCommands(program, ctx);
  registerDriverCommand(program, ctx);
  registerEventsCommand(program, ctx);
  registerDashboardCommand(program, ctx);
  registerDoctorCommand(program, ctx, env);
  registerTokenCommands(program, ctx);
  registerAuditCommand(program, ctx);
  registerStoreCommand(program, ctx);
  program
    .command('agent')
    .description('run the host agent (started by every host; not for interactive use)')
    .option('--identity <file>', 'identity file', '/etc/berth/agent.json')
    .option('--state-dir <dir>', 'agent state dir (kept while the host lives)', '/run/berth/agent')
    .action(async (opts: { identity: string; stateDir: string }) => {
      const { runAgent } = await import('../agent/main.js');
      runAgent(['--identity', opts.identity, '--state-dir', opts.stateDir]);
      await new Promise<never>(() => {});
    });

  try {
    await program.parseAsync(argv);
    return ctx.exitCode;
  } catch (err) {
    return reportError(err);
  }
}

function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
    return 2;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`berth: ${err.message}\n`);
    return 2;
  }
  if (isBerthError(err)) {
    process.stderr.write(`berth: ${err.message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
    return err.status >= 400 && err.status < 500 ? 2 : 1;
  }
  process.stderr.write(`berth: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}
