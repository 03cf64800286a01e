import type { Command } from 'commander';
import { LocalDriver } from '../drivers/local/index.js';
import { BerthServer } from '../server/berth-server.js';
import { agentBundleDir, agentCommand } from './paths.js';
import type { Context } from './context.js';

export interface ServerOptions {
  port: string;
  agentPort: string;
  routerPort: string;
  routerHost: string;
  domain: string;
  host: string;
  bridge?: string;
  subnet?: string;
  image?: string;
  name: string;
}

/** The options of a local server (`berth server`, `berth up`). */
export function withServerOptions(command: Command): Command {
  return command
    .option('--port <port>', 'API port', '7070')
    .option('--host <addr>', 'API listen address', '127.0.0.1')
    .option('--agent-port <port>', 'port of the agent channel on the bridge address', '7071')
    .option('--router-port <port>', "the environments' router: NAME.<domain>:PORT reaches environment NAME", '7080')
    .option('--router-host <addr>', "the router's listen address", '127.0.0.1')
    .option('--domain <domain>', 'environments answer at NAME.<domain> (*.localhost resolves to this machine in browsers)', 'localhost')
    .option('--bridge <name>', 'Linux bridge berth owns for its hosts', 'berth0')
    .option('--subnet <cidr>', 'private IPv4 subnet of the bridge', '10.213.0.0/16')
    .option('--name <name>', 'instance name: prefixes the cgroups and network namespaces of its hosts, so several servers can share a machine', 'berth')
    .option('--image <image>', "default image of hosts: an image name, or a root filesystem directory (default: this machine's root)", '/');
}

/** A control plane with the local driver on this machine, as `berth server` runs it. */
export async function startLocalServer(dataDir: string, opts: ServerOptions, env: NodeJS.ProcessEnv, progress: (step: string) => void): Promise<BerthServer> {
  const agentDir = agentBundleDir();
  const driver = new LocalDriver({
    stateDir: `${dataDir}/hosts`,
    agentDir,
    agentCommand: agentCommand(),
    ...(opts.bridge ? { bridge: opts.bridge } : {}),
    ...(opts.subnet ? { subnet: opts.subnet } : {}),
    cgroupName: opts.name,
    // With this machine's root as the image, hosts would otherwise see the data dir (token, store).
    hiddenPaths: [dataDir],
  });
  return BerthServer.start({
    dataDir,
    host: opts.host,
    port: Number(opts.port),
    agentPort: Number(opts.agentPort),
    router: { port: Number(opts.routerPort), host: opts.routerHost, domain: opts.domain },
    databaseUrl: env['BERTH_DATABASE_URL'],
    driver,
    agentDir,
    toolRunner: driver.run,
    ...(opts.image ? { defaultImage: opts.image } : {}),
    progress,
  });
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

export function registerServerCommand(program: Command, ctx: Context, env: NodeJS.ProcessEnv): void {
  withServerOptions(program.command('server').description('run the control plane (API, agent channel, local driver) in the foreground')).action(async (opts: ServerOptions) => {
    const dataDir = ctx.dataDir();
    const server = await startLocalServer(dataDir, opts, env, (step) => process.stderr.write(`berth server: ${step}…\n`));
    process.stderr.write(
      `berth server ${server.url}  (store: ${server.store.kind}, data dir: ${dataDir})\n` +
        `  API docs:  ${server.url}/docs   token: ${dataDir}/token\n` +
        `  agents:    ${server.agentUrl}\n` +
        `  router:    ${server.router.urlFor('NAME') ?? '-'}  (environments: berth env create NAME --stack STACK)\n` +
        (server.recovered.adopted.length + server.recovered.cleaned.length
          ? `  recovered: adopted ${server.recovered.adopted.length} host(s), cleaned up ${server.recovered.cleaned.length}\n`
          : '') +
        `  try:       berth host launch && berth host ls\n`,
    );
    await untilStopped();
    process.stderr.write('berth server stopping (hosts keep running and are adopted at the next start)\n');
    await server.stop();
  });
}
