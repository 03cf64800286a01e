import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { BerthServer, ServerConfig } from '../server/berth-server.js';
import { EventBus } from '../events/event-bus.js';
import { eventLog, resolveLogFormat } from '../events/format.js';
import { agentBundleDir, agentCommand } from './paths.js';
import type { Context } from './context.js';
import { UsageError } from './output.js';
import { parseDurationMs } from '../core/duration.js';
import { BerthError, errorMessage } from '../core/errors.js';
import type { LocalNetwork } from '../drivers/local/network-record.js';
import type { AwsDriverConfig } from '../drivers/aws/config.js';
import { awsRecord, recordDriver } from './driver-record.js';

/** `berth server --driver aws`: where and what to launch; credentials and region come from the SDK's standard chain. */
export interface AwsServerOptions {
  driver: string;
  awsImage?: string;
  awsInstanceType?: string;
  awsRegion?: string;
  awsEndpoint?: string;
  awsSubnets?: string;
  awsSecurityGroups?: string;
  awsInstanceProfile?: string;
  awsCommandChannel?: string;
  awsSsmEndpoint?: string;
  agentAdvertise?: string;
  agentListen?: string;
}

export interface ServerOptions {
  port: string;
  agentPort: string;
  routerPort: string;
  routerHost: string;
  tlsCert?: string;
  tlsKey?: string;
  agentTlsCert?: string;
  agentTlsKey?: string;
  agentTlsCa?: string;
  routerTlsCert?: string;
  routerTlsKey?: string;
  routerRedirectPort?: string;
  domain: string;
  host: string;
  bridge?: string;
  subnet?: string;
  egressDeny?: string;
  dns?: string;
  image?: string;
  name: string;
}

/** What the command running the server adds: its log and the bus it logs. */
type ServerExtras = Pick<ServerConfig, 'events' | 'log' | 'hostHourPrice' | 'shellIdleTimeoutMs' | 'recordShells' | 'auditRetentionMs' | 'standby' | 'runLoops' | 'amiImages'>;

/** Where a local server's hosts live on the machine unless told otherwise. */
export const LOCAL_NETWORK_DEFAULTS: LocalNetwork = { bridge: 'berth0', subnet: '10.213.0.0/16', name: 'berth' };

/** The options of a local server (`berth server`, `berth up`). */
export function withServerOptions(command: Command): Command {
  return command
    .option('--port <port>', 'API port', '7070')
    .option('--host <addr>', 'API listen address', '127.0.0.1')
    .option('--tls-cert <file>', 'serve the API and dashboard over HTTPS with this certificate (PEM, its chain after it); a renewal is served without a restart')
    .option('--tls-key <file>', "the API certificate's private key (PEM)")
    .option('--agent-port <port>', 'port of the agent channel on the bridge address', '7071')
    .option('--agent-tls-cert <file>', 'serve the agent channel over TLS (wss://; enrolment and downloads over https://) with this certificate (PEM, covering the address agents dial); a renewal is served without a restart')
    .option('--agent-tls-key <file>', "the agent channel certificate's private key (PEM)")
    .option('--agent-tls-ca <file>', "the CA (PEM) hosts are told to trust for it (default: the certificate itself when self-signed, else the public CAs)")
    .option('--router-port <port>', "the environments' router: NAME.<domain>:PORT reaches environment NAME", '7080')
    .option('--router-host <addr>', "the router's listen address", '127.0.0.1')
    .option('--router-tls-cert <file>', 'serve the router over HTTPS with this certificate (PEM, for *.<domain>, its chain after it); a renewal of the files is served without a restart')
    .option('--router-tls-key <file>', "the certificate's private key (PEM)")
    .option('--router-redirect-port <port>', 'with HTTPS: plain HTTP on this port, redirecting every request to HTTPS')
    .option('--domain <domain>', 'environments answer at NAME.<domain> (*.localhost resolves to this machine in browsers)', 'localhost')
    .option('--bridge <name>', 'Linux bridge berth owns for its hosts', LOCAL_NETWORK_DEFAULTS.bridge)
    .option('--subnet <cidr>', 'private IPv4 subnet of the bridge', LOCAL_NETWORK_DEFAULTS.subnet)
    .option('--egress-deny <cidrs>', "comma-separated IPv4 ranges that hosts with egress may not reach ('none': no range; default: private, shared, link-local and multicast ranges)")
    .option('--dns <servers>', "comma-separated name servers (IP or IP:port) that hosts with egress resolve names through, relayed at the bridge address ('none': no name service; default: this machine's, from /etc/resolv.conf)")
    .option('--name <name>', 'instance name: prefixes the cgroups and network namespaces of its hosts, so several servers can share a machine', LOCAL_NETWORK_DEFAULTS.name)
    .option('--image <image>', "default image of hosts: an image name, or a root filesystem directory (default: this machine's root)", '/');
}

/** The agent channel's certificate files, from `--agent-tls-cert/--agent-tls-key [--agent-tls-ca]` (exit 2 when incomplete). */
export function agentTlsConfig(opts: ServerOptions): Pick<ServerConfig, 'agentTls'> {
  if ((opts.agentTlsCert === undefined) !== (opts.agentTlsKey === undefined)) throw new BerthError('validation_failed', '--agent-tls-cert and --agent-tls-key go together', 'Give both for an agent channel over TLS (the certificate and its key, PEM files), or neither.');
  if (opts.agentTlsCa !== undefined && opts.agentTlsCert === undefined) throw new BerthError('validation_failed', '--agent-tls-ca names the CA of --agent-tls-cert: give the certificate and its key too', 'Or leave --agent-tls-ca out for a plain agent channel.');
  if (!opts.agentTlsCert || !opts.agentTlsKey) return {};
  return { agentTls: { certFile: resolve(opts.agentTlsCert), keyFile: resolve(opts.agentTlsKey), ...(opts.agentTlsCa ? { caFile: resolve(opts.agentTlsCa) } : {}) } };
}

/** The API's certificate files, from `--tls-cert/--tls-key` (one without the other: exit 2). */
export function apiTlsConfig(opts: ServerOptions): Pick<ServerConfig, 'tls'> {
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new BerthError('validation_failed', '--tls-cert and --tls-key go together', 'Give both for an API over HTTPS (the certificate and its key, PEM files), or neither.');
  return opts.tlsCert && opts.tlsKey ? { tls: { certFile: resolve(opts.tlsCert), keyFile: resolve(opts.tlsKey) } } : {};
}

/** The router's part of the server's config, from its options (a half-given TLS pair: exit 2). */
export function routerConfig(opts: ServerOptions): NonNullable<ServerConfig['router']> {
  const bad = (message: string, hint: string) => new BerthError('validation_failed', message, hint);
  if ((opts.routerTlsCert === undefined) !== (opts.routerTlsKey === undefined)) throw bad('--router-tls-cert and --router-tls-key go together', 'Give both for HTTPS (the certificate and its key, PEM files), or neither for plain HTTP.');
  if (opts.routerRedirectPort !== undefined && opts.routerTlsCert === undefined) throw bad('--router-redirect-port redirects to HTTPS: give --router-tls-cert and --router-tls-key too', 'Or leave --router-redirect-port out: without a certificate the router serves plain HTTP on --router-port.');
  const redirectPort = opts.routerRedirectPort === undefined ? undefined : Number(opts.routerRedirectPort);
  if (redirectPort !== undefined && !(Number.isInteger(redirectPort) && redirectPort >= 0 && redirectPort < 65536)) throw bad(`--router-redirect-port ${opts.routerRedirectPort ?? ''} is not a port`, 'Give a port number, 80 for instance.');
  return {
    port: Number(opts.routerPort),
    host: opts.routerHost,
    domain: opts.domain,
    ...(opts.routerTlsCert && opts.routerTlsKey ? { tls: { certFile: resolve(opts.routerTlsCert), keyFile: resolve(opts.routerTlsKey) } } : {}),
    ...(redirectPort !== undefined ? { redirectPort } : {}),
  };
}

/** A control plane with the local driver on this machine, as `berth server` runs it. */
export async function startLocalServer(dataDir: string, opts: ServerOptions, env: NodeJS.ProcessEnv, progress: (step: string) => void, extras: ServerExtras = {}): Promise<BerthServer> {
  const agentDir = agentBundleDir();
  // The server and its drivers are loaded only by the commands that run one: every other command
  // is a small HTTP client, and loading them cost each of its runs half a second.
  const [{ BerthServer }, { LocalDriver, machineNameServers }] = await Promise.all([import('../server/berth-server.js'), import('../drivers/local/index.js')]);
  const driver = new LocalDriver({
    stateDir: `${dataDir}/hosts`,
    agentDir,
    agentCommand: agentCommand(),
    ...(opts.bridge ? { bridge: opts.bridge } : {}),
    ...(opts.subnet ? { subnet: opts.subnet } : {}),
    agentPort: Number(opts.agentPort),
    ...(opts.egressDeny !== undefined ? { egressDeny: opts.egressDeny === 'none' ? [] : opts.egressDeny.split(',').map((c) => c.trim()).filter(Boolean) } : {}),
    nameServers: opts.dns === 'none' ? [] : opts.dns !== undefined ? opts.dns.split(',').map((s) => s.trim()).filter(Boolean) : machineNameServers(),
    cgroupName: opts.name,
    // With this machine's root as the image, hosts would otherwise see the data dir (token, store).
    hiddenPaths: [dataDir],
  });
  const server = await BerthServer.start({
    dataDir,
    host: opts.host,
    port: Number(opts.port),
    agentPort: Number(opts.agentPort),
    router: routerConfig(opts),
    ...apiTlsConfig(opts),
    ...agentTlsConfig(opts),
    databaseUrl: env['BERTH_DATABASE_URL'],
    driver,
    agentDir,
    toolRunner: driver.run,
    ...(opts.image ? { defaultImage: opts.image } : {}),
    progress,
    ...extras,
  });
  // After the start (bad options change nothing); berth down's own server must not replace the record it read.
  if (extras.runLoops !== false) recordDriver(dataDir, { driver: 'local' });
  return server;
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** The AWS driver's configuration from `--aws-*` options (`berth server`, `berth doctor`). */
export function awsDriverConfig(opts: Omit<AwsServerOptions, 'driver'> & { awsImage: string; awsInstanceType: string; name: string }): AwsDriverConfig {
  const list = (value: string | undefined): string[] => (value ? value.split(',').map((s) => s.trim()).filter(Boolean) : []);
  const channel = opts.awsCommandChannel ?? 'agent';
  if (channel !== 'agent' && channel !== 'ssm') throw new UsageError(`--aws-command-channel must be agent or ssm (got ${channel})`);
  return {
    imageId: opts.awsImage,
    instanceType: opts.awsInstanceType,
    name: opts.name,
    ...(opts.awsRegion ? { region: opts.awsRegion } : {}),
    ...(opts.awsEndpoint ? { endpoint: opts.awsEndpoint } : {}),
    subnetIds: list(opts.awsSubnets),
    securityGroupIds: list(opts.awsSecurityGroups),
    ...(opts.awsInstanceProfile ? { instanceProfile: opts.awsInstanceProfile } : {}),
    ...(opts.agentListen ? { agentListenHost: opts.agentListen } : {}),
    commandChannel: channel,
    ...(opts.awsSsmEndpoint ? { ssmEndpoint: opts.awsSsmEndpoint } : {}),
  };
}

/** The `--aws-*` options that say where hosts run, as `berth server --driver aws` and `berth doctor --driver aws` take them. */
export function withAwsOptions(command: Command): Command {
  return command
    .option('--aws-image <ami>', 'AWS: the AMI hosts boot (it must hold Node and the berth agent)')
    .option('--aws-instance-type <type>', 'AWS: instance type, e.g. t3.micro')
    .option('--aws-region <region>', "AWS: region (default: the SDK's standard chain)")
    .option('--aws-endpoint <url>', 'AWS: another endpoint, e.g. an emulator such as moto')
    .option('--aws-subnets <ids>', "AWS: comma-separated subnet ids hosts are spread over (default: the default VPC's)")
    .option('--aws-security-groups <ids>', 'AWS: comma-separated security group ids of every host')
    .option('--aws-instance-profile <name>', 'AWS: IAM instance profile of every host (name or ARN)')
    .option('--aws-command-channel <channel>', "AWS: how commands reach hosts: agent (berth's agent, the default) or ssm (the AMI's SSM agent, AWS-RunShellScript; no berth agent runs)")
    .option('--aws-ssm-endpoint <url>', 'AWS: another endpoint for SSM alone (a VPC endpoint, an emulator)');
}

/**
 * A control plane whose pools are EC2 Auto Scaling groups (see src/drivers/aws/README.md). Its
 * agent channel listens on every address (instances reach it over the VPC) unless told otherwise,
 * and instances dial `--agent-advertise`.
 */
export async function startAwsServer(dataDir: string, opts: ServerOptions & AwsServerOptions, env: NodeJS.ProcessEnv, progress: (step: string) => void, extras: ServerExtras = {}): Promise<BerthServer> {
  if (!opts.awsImage || !opts.awsInstanceType) throw new UsageError('--driver aws needs --aws-image AMI and --aws-instance-type TYPE');
  if (!opts.agentAdvertise) throw new UsageError('--driver aws needs --agent-advertise ADDR: the address instances dial to reach this server (e.g. its private IP)');
  // Loaded only here: the AWS SDK costs every other command its start-up time.
  const [{ BerthServer }, { AwsDriver }] = await Promise.all([import('../server/berth-server.js'), import('../drivers/aws/aws-driver.js')]);
  const driver = new AwsDriver(awsDriverConfig({ ...opts, awsImage: opts.awsImage, awsInstanceType: opts.awsInstanceType }));
  const server = await BerthServer.start({
    dataDir,
    host: opts.host,
    port: Number(opts.port),
    agentPort: Number(opts.agentPort),
    agentAdvertiseHost: opts.agentAdvertise,
    router: routerConfig(opts),
    ...apiTlsConfig(opts),
    ...agentTlsConfig(opts),
    databaseUrl: env['BERTH_DATABASE_URL'],
    driver,
    agentDir: agentBundleDir(),
    defaultImage: '/',
    progress,
    ...extras,
  });
  if (extras.runLoops !== false) recordDriver(dataDir, { driver: 'aws', aws: awsRecord(opts) });
  return server;
}

export function registerServerCommand(program: Command, ctx: Context, env: NodeJS.ProcessEnv): void {
  withAwsOptions(
    withServerOptions(program.command('server').description('run the control plane (API, agent channel, and the local driver, or the AWS driver) in the foreground')).option(
      '--driver <driver>',
      'where hosts run: local (Linux namespaces on this machine) or aws (EC2 Auto Scaling; needs the --aws-* options)',
      'local',
    ),
  )
    .option('--agent-listen <addr>', 'AWS: the address the agent channel listens on (default: every address)')
    .option('--agent-advertise <addr>', 'the address hosts dial for the agent channel (AWS: this server\'s address in the VPC)')
    .option('--host-hour-price <amount>', "what one host costs an hour, for the dashboard's idle cost (e.g. 0.0104 for a t4g.micro; default: host-hours only)")
    .option('--currency <code>', 'currency of --host-hour-price', 'USD')
    .option('--shell-idle-timeout <duration>', "end shell sessions with no byte either way for this long: 20m, 1h ('none', the default: never)", 'none')
    .option('--record-shells', "record every shell session's output (not what is typed), timed, in the data dir: `berth shell recordings`, asciinema's format")
    .option('--standby', 'PostgreSQL: while another server holds the database, wait, and start when it lets go (a second machine ready to take over; a server whose database another took stops)')
    .option('--audit-retention <duration>', 'keep the audit log (`berth audit`: who changed what through the API) this long', '90d')
    .option('--image-gc-after <duration>', "every hour, remove local builds no longer current that no live host runs, layers no build uses once this old (a failed bake's wait for its next try), and cached artifacts and slugs no environment runs unused this long; 'none': only `berth image gc` does", '24h')
    .option('--aws-ami-keep <n>', 'AWS: how many AMIs of each image berth image build keeps, newest first (besides those a current image, a live host or a pool runs)', '3')
    .option('--log-format <format>', 'stderr: json (a JSON object a line: every state change, and messages), text (readable lines), or auto (text on a terminal, else json)', 'auto')
    .action(async (opts: ServerOptions & AwsServerOptions & { logFormat: string; hostHourPrice?: string; currency: string; shellIdleTimeout: string; recordShells?: boolean; auditRetention: string; standby?: boolean; awsAmiKeep: string; imageGcAfter: string }) => {
      if (opts.driver !== 'local' && opts.driver !== 'aws') throw new UsageError(`--driver must be local or aws (got ${opts.driver})`);
      const format = resolveLogFormat(opts.logFormat, process.stderr.isTTY === true);
      if (!format) throw new UsageError(`--log-format must be json, text or auto (got ${opts.logFormat})`);
      const price = opts.hostHourPrice === undefined ? undefined : Number(opts.hostHourPrice);
      if (price !== undefined && !(Number.isFinite(price) && price >= 0)) throw new UsageError(`--host-hour-price must be an amount, e.g. 0.0104 (got ${opts.hostHourPrice})`);
      if (!/^[A-Za-z$€£¥]{1,5}$/.test(opts.currency)) throw new UsageError(`--currency must be a currency code such as USD or EUR (got ${opts.currency})`);
      let shellIdleTimeoutMs: number | undefined;
      try {
        shellIdleTimeoutMs = opts.shellIdleTimeout === 'none' ? undefined : parseDurationMs(opts.shellIdleTimeout, '--shell-idle-timeout');
      } catch (err) {
        throw new BerthError('validation_failed', errorMessage(err), 'Write it as 90s, 30m or 2h, or none for no idle timeout.');
      }
      const auditRetentionMs = parseDurationMs(opts.auditRetention, '--audit-retention');
      let imageGcAfterMs = 0;
      try {
        if (opts.imageGcAfter !== 'none') imageGcAfterMs = parseDurationMs(opts.imageGcAfter, '--image-gc-after');
      } catch (err) {
        throw new BerthError('validation_failed', errorMessage(err), 'Write it as 12h or 7d, or none to collect only with berth image gc.');
      }
      const amiKeep = Number(opts.awsAmiKeep);
      if (!Number.isInteger(amiKeep) || amiKeep < 1) throw new BerthError('validation_failed', `--aws-ami-keep must be a whole number of at least 1 (got ${opts.awsAmiKeep})`, "Give how many AMIs of each image to keep, e.g. 3 (those a current image, a live host or a pool runs are kept anyway).");
      if (opts.standby && !env['BERTH_DATABASE_URL']) throw new BerthError('validation_failed', '--standby waits for a PostgreSQL database another server holds: set BERTH_DATABASE_URL', 'The embedded store has one server, on its data dir: a standby needs PostgreSQL (berth store copy --to moves an installation there).');
      const dataDir = ctx.dataDir();
      // Every state change is logged, from the first (recovery at start-up) on.
      const logger = eventLog(format, (text) => void process.stderr.write(text));
      const events = new EventBus();
      events.subscribe((event) => logger.event(event));
      const extras = {
        events,
        log: (line: string) => logger.line(line),
        ...(price !== undefined ? { hostHourPrice: { amount: price, currency: opts.currency } } : {}),
        ...(shellIdleTimeoutMs !== undefined ? { shellIdleTimeoutMs } : {}),
        ...(opts.recordShells ? { recordShells: true } : {}),
        auditRetentionMs,
        imageGcAfterMs,
        ...(opts.standby ? { standby: true } : {}),
        ...(opts.driver === 'aws' ? { amiImages: { keep: amiKeep } } : {}),
      };
      const progress = (step: string): void => (format === 'json' ? logger.line(step) : void process.stderr.write(`berth server: ${step}…\n`));
      const server = opts.driver === 'aws' ? await startAwsServer(dataDir, opts, env, progress, extras) : await startLocalServer(dataDir, opts, env, progress, extras);
      if (format === 'json') {
        logger.line('berth server started', { url: server.url, store: server.store.kind, dataDir, agentUrl: server.agentUrl, router: server.router.urlFor('NAME') ?? null, recovered: { adopted: server.recovered.adopted.length, cleaned: server.recovered.cleaned.length } });
      } else process.stderr.write(
        `berth server ${server.url}  (store: ${server.store.kind}, data dir: ${dataDir})\n` +
          `  API docs:  ${server.url}/docs   token: ${dataDir}/token\n` +
          `  dashboard: ${server.url}/dashboard   (berth dashboard prints it with the token)\n` +
          `  agents:    ${server.agentUrl}\n` +
          `  router:    ${server.router.urlFor('NAME') ?? '-'}  (environments: berth env create NAME --stack STACK)\n` +
          (server.recovered.adopted.length + server.recovered.cleaned.length
            ? `  recovered: adopted ${server.recovered.adopted.length} host(s), cleaned up ${server.recovered.cleaned.length}\n`
            : '') +
          `  try:       berth host launch && berth host ls\n`,
      );
      const fenced = await Promise.race([untilStopped().then(() => undefined), server.fenced]);
      const stopping = fenced
        ? `berth server stopped: another server took its database (${fenced}); hosts keep running under that one`
        : 'berth server stopping (hosts keep running and are adopted at the next start; `berth down` removes them)';
      if (format === 'json') logger.line(stopping);
      else process.stderr.write(`${stopping}\n`);
      await server.stop();
      if (fenced) process.exitCode = 1;
    });
}
