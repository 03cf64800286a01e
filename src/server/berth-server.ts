/**
 * Process wiring of the control plane: store, driver, agent gateway, services, HTTP API and the
 * periodic loops. Everything enters through the config; nothing reads globals.
 */
import type { FastifyInstance } from 'fastify';
import { CommandService } from '../commands/command-service.js';
import { CommandDispatcher } from '../commands/dispatch.js';
import { LiveOutput } from '../commands/live-output.js';
import { errorMessage, listenError } from '../core/errors.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import type { BackendAgents, HostDriver } from '../drivers/types.js';
import { AgentGateway } from '../agents/gateway.js';
import { HostService } from '../hosts/host-service.js';
import { CommandsRepo } from '../store/commands-repo.js';
import { HostsRepo } from '../store/hosts-repo.js';
import type { Store } from '../store/store.js';
import { openServerStore, startLoops, stopStep, TaskLoops } from './server-runtime.js';
import { agentHandlersFor, type LateServices } from './agent-handlers.js';
import { AgentStats } from '../hosts/agent-stats.js';
import { bootImageResolver } from './boot-images.js';
import { ConfigHashKeys } from '../store/tokens-repo.js';
import { startAccess } from '../tokens/access.js';
import type { AuditLog } from '../audit/audit-log.js';
import { AGENT_ENROL_PATH, AGENT_PATH } from '../protocol/messages.js';
import { AgentChannels } from '../agents/agent-channels.js';
import { NetworkGroups } from '../hosts/network-groups.js';
import type { PoolService } from '../pools/pool-service.js';
import type { ClaimService } from '../pools/claim-service.js';
import type { PoolReconciler } from '../pools/reconciler.js';
import { startPools } from '../pools/start-pools.js';
import type { FleetPools } from '../pools/fleet-pools.js';
import { ClaimsRepo } from '../store/claims-repo.js';
import { PoolsRepo } from '../store/pools-repo.js';
import { ImagesRepo } from '../store/images-repo.js';
import type { ImageService } from '../images/image-service.js';
import { startImages } from '../images/start-images.js';
import { ServicesService } from '../services/services-service.js';
import { StackSync } from '../services/stack-sync.js';
import { StacksRepo } from '../store/stacks-repo.js';
import type { EnvironmentService } from '../environments/environment-service.js';
import { startEnvironments } from '../environments/start-environments.js';
import type { EnvironmentRouter } from '../router/router.js';
import { API_TLS_USE, CertificateWatcher, loadTlsPair, routerTlsUse, ServedCertificates } from './tls-files.js';
import { coverDialHost, loadAgentTls } from './agent-tls.js';
import { normaliseDomain } from '../router/host-name.js';
import { SlugStore } from '../slugs/slug-store.js';
import { DataDir } from './data-dir.js';
import type { ServerConfig } from './server-config.js';
import { takeDown, type TakeDownReport, type TakeDownStep } from './take-down.js';

export type { ServerConfig } from './server-config.js';
import { MetricsCollector } from '../metrics/metrics.js';
import { ApiRequestCounts } from '../metrics/api-usage.js';
import { buildApp, setApiCertificate } from './http/app.js';
import { EventBus } from '../events/event-bus.js';
import { createDashboard } from '../dashboard/create-dashboard.js';
import { ShellBroker } from '../shells/shell-broker.js';
import { ShellRecorder } from '../shells/shell-recorder.js';
import { serveShells } from '../shells/shell-endpoint.js';

export const VERSION = '0.1.0';

export interface PoolServices {
  pools: PoolService;
  claims: ClaimService;
  reconciler: PoolReconciler;
}

export class BerthServer {
  private readonly loops = new TaskLoops();
  private stopped = false;
  /** The driver's backend agents (SSM) report to this server until it stops. */
  private backendAgents: BackendAgents | undefined;
  private driver: HostDriver | undefined;
  private stopShells: (() => void) | undefined;
  private stopTls: (() => void) | undefined;
  private audit: AuditLog | undefined;
  private log: (line: string) => void = () => {};
  private poolNames: () => Promise<string[]> = () => Promise.resolve([]);
  /** Resolves, naming it, when another server took this one's database and this one stopped (see DatabaseLockOptions.onTaken). */
  fenced: Promise<string> = new Promise(() => {});

  private constructor(
    readonly url: string,
    readonly agentUrl: string,
    /** The data dir's own token (it changes when rotated: POST /v1/tokens/rotate-data-dir). */
    public token: string,
    readonly store: Store,
    readonly hosts: HostService,
    readonly commands: CommandService,
    private readonly app: FastifyInstance,
    private readonly gateway: AgentGateway,
    private readonly dataDir: DataDir,
    readonly recovered: { adopted: string[]; cleaned: string[] },
    readonly pools: PoolServices,
    readonly images: ImageService,
    readonly environments: EnvironmentService,
    readonly router: EnvironmentRouter,
    readonly events: EventBus,
  ) {}

  static async start(config: ServerConfig): Promise<BerthServer> {
    const log = config.log ?? ((line: string) => process.stderr.write(`berth: ${line}\n`));
    const progress = config.progress ?? (() => {});
    // A certificate that cannot serve stops the start before anything is done.
    const routerTls = config.router?.tls ? loadTlsPair(config.router.tls, routerTlsUse(normaliseDomain(config.router.domain ?? 'localhost'))) : undefined;
    const apiTls = config.tls ? loadTlsPair(config.tls, API_TLS_USE) : undefined;
    const agentTls = config.agentTls ? await loadAgentTls(config.agentTls) : undefined;
    const dataDir = new DataDir(config.dataDir);
    if (!config.databaseUrl) dataDir.assertStoreHere();
    dataDir.lock();
    progress(`preparing the ${config.driver.name} driver`);
    const driverInfo = await config.driver.init();
    const bootTimeoutMs = config.bootTimeoutMs ?? driverInfo.bootTimeoutMs;
    let fence: (holder: string) => void = () => {};
    const fenced = new Promise<string>((resolve) => (fence = resolve));
    let store: Store;
    try {
      if (agentTls) coverDialHost(agentTls, config.agentAdvertiseHost ?? driverInfo.agentListenHost);
      progress(config.databaseUrl ? 'connecting to PostgreSQL' : 'opening the embedded store (the first start creates it, a few seconds)');
      store = await openServerStore(config, apiTls, log, progress, fence);
    } catch (err) {
      dataDir.unlock(); // refused before anything else: a start that failed holds nothing
      throw err;
    }
    const events = config.events ?? new EventBus();
    // What a start that fails half-way must close again, or its listeners keep the process alive.
    const undo: (() => unknown)[] = [];
    try {
      const access = await startAccess(store.db, { dataDir, auditRetentionMs: config.auditRetentionMs, log });
      const { tokens: tokenService, audit } = access;
      undo.push(() => audit.close());
      const hostsRepo = new HostsRepo(store.db, events);
      const commandsRepo = new CommandsRepo(store.db, events);
      const live = new LiveOutput(64 * 1024);

      // The gateway and the services refer to each other: the gateway's handlers find the services here.
      const late: LateServices & { images?: ImageService; fleet?: FleetPools } = {};
      const report = (what: string) => (err: unknown) => log(`${what}: ${errorMessage(err)}`);
      const slugs = new SlugStore(`${dataDir.path}/slugs`);
      const agentHandlers = agentHandlersFor(late, report);
      const switchUrl: { url?: string } = {}; // known once the gateway listens
      const agentHost = driverInfo.agentListenHost;
      const agentPort = config.agentPort ?? 7071;
      const gateway = new AgentGateway(
        {
          host: agentHost,
          port: agentPort,
          heartbeatIntervalMs: config.heartbeatIntervalMs ?? 5000,
          log,
          // Agents launched before the channel had TLS are told to switch to it (wss://, same address).
          ...(agentTls ? { tls: agentTls.pair, trust: () => agentTls.ca, switchTo: () => (switchUrl.url ? { url: switchUrl.url, ca: agentTls.ca } : undefined) } : {}),
          files: (urlPath) => slugs.fileFor(urlPath),
          ...(config.driver.fleet
            ? { enrol: (body: unknown) => (late.fleet ? late.fleet.enrol(body) : Promise.reject(new Error('enrolment before the server started'))) }
            : {}),
        },
        { authenticate: (hostId, token) => late.hosts?.authenticate(hostId, token) ?? Promise.resolve(undefined), ...agentHandlers },
      );
      // Hosts whose commands go through the backend's own agent (SSM) report to the same handlers.
      config.driver.agents?.start(agentHandlers);
      const agents = new AgentChannels(gateway, config.driver.agents);
      // A driver that cannot measure its hosts (EC2) asks their agents instead.
      const agentStats = config.driver.stats ? undefined : (late.agentStats = new AgentStats({ send: (hostId, msg) => agents.send(hostId, msg) }));
      const listening = await gateway.listen().catch((err: unknown) => {
        throw listenError(err, 'the agent channel', `${agentHost}:${agentPort}`, 'Stop what holds that port, or start berth with another --agent-port.');
      });
      undo.push(() => gateway.close());
      const agentAddress = { ...listening, host: config.agentAdvertiseHost ?? listening.host };
      // One port serves the channel, enrolment and the files hosts fetch; over TLS when it has a certificate.
      const agentBase = `${agentTls ? 'https' : 'http'}://${agentAddress.host}:${agentAddress.port}`;
      const agentUrl = `${agentBase.replace(/^http/, 'ws')}${AGENT_PATH}`;
      switchUrl.url = agentUrl;
      const agentChannel = { url: agentUrl, get ca() { return agentTls?.ca; } }; // a CA rolled over is given to hosts launched after

      const shellRecorder = config.recordShells ? new ShellRecorder({ dir: `${dataDir.path}/shells` }) : undefined;
      const shells = new ShellBroker({
        hosts: hostsRepo,
        agents,
        events,
        ...(config.shellIdleTimeoutMs ? { idleTimeoutMs: config.shellIdleTimeoutMs } : {}),
        ...(shellRecorder ? { recorder: shellRecorder } : {}),
      });
      late.shells = shells;
      const commands = new CommandService({ commands: commandsRepo, hosts: hostsRepo, agents, live, events });
      const dispatcher = new CommandDispatcher({ service: commands, commands: commandsRepo, agents, live, log });
      late.dispatcher = dispatcher;
      const hashKeys = new ConfigHashKeys(store.db);
      const services = new ServicesService({ hosts: hostsRepo, agents, hashKeys, log, events });
      late.services = services;
      const stacksRepo = new StacksRepo(store.db);
      const stacks = new StackSync({ stacks: stacksRepo, hosts: hostsRepo, services, hashKeys, log });
      late.stacks = stacks;
      const bootImages = bootImageResolver(config.driver.name, () => late.images);
      const networkGroups = new NetworkGroups({ driver: config.driver, hosts: hostsRepo, log });
      const hostsService = new HostService({
        hosts: hostsRepo,
        driver: config.driver,
        agents,
        agentChannel,
        defaultImage: config.defaultImage ?? '/',
        defaultResources: config.defaultResources ?? { cpus: 1, memoryMiB: 1024, pids: 512 },
        onHostGone: (hostId, detail) => {
          late.services?.onHostGone(hostId);
          shells.onAgentGone(hostId);
          networkGroups.left(hostId);
          return dispatcher.failOpenForHost(hostId, detail);
        },
        images: bootImages,
        onTagsChanged: async (row) => {
          services.pushTags(row.id, row.tags);
          await stacks.syncTagged(row);
        },
        onResetInGroup: (row) => networkGroups.joined(row),
        ...(agentStats ? { agentStats } : {}),
        onMachine: (host) => agents.attach(host),
        ...(bootTimeoutMs !== undefined ? { bootTimeoutMs } : {}),
        log,
      });
      late.hosts = hostsService;
      undo.push(() => hostsService.stop());
      const poolsRepo = new PoolsRepo(store.db, events);
      // On AWS an image build runs on a builder instance, whose files come from the agent port.
      const aws = { hostsRepo, agentChannel, publishTar: (path: string) => slugs.publishTar(path), fileUrl: (path: string) => `${agentBase}${path}` };
      const images = await startImages(config, dataDir.path, { hosts: hostsService, commands, live, poolsRepo, imagesRepo: new ImagesRepo(store.db), log, aws });
      late.images = images;
      undo.push(() => images.close());
      const claimsRepo = new ClaimsRepo(store.db, events);
      const isConnected = (hostId: string) => agents.isConnected(hostId);
      const { pools: poolService, claims, reconciler, fleet } = startPools({
        driver: config.driver, poolsRepo, hostsRepo, claimsRepo, hostService: hostsService, commands, services, stacks, networkGroups, hashKeys,
        resolveImage: (tenantId, ref) => bootImages.resolve(tenantId, ref),
        isConnected,
        enrolUrl: `${agentBase}${AGENT_ENROL_PATH}`,
        agentChannel,
        bootTimeoutMs,
        backoffMs: config.poolBackoffMs,
        scheduleClock: config.scheduleClock,
        events,
        log,
      });
      late.fleet = fleet;
      progress('adopting hosts that outlived the previous server');
      const failedClaims = await claims.recover();
      const recovered = await hostsService.recover();
      await networkGroups.syncAll();
      if (config.driver.agents) {
        for (const row of await hostsRepo.listInStates(LIVE_HOST_STATES)) agents.attach({ id: row.id, tenantId: row.tenant_id, driverData: row.driver_data });
      }
      const retired = await reconciler.recover();
      const bakeHosts = await images.recover(await hostsRepo.listInStates(LIVE_HOST_STATES));
      if (bakeHosts > 0) log(`recovered after restart: terminated ${bakeHosts} host(s) of bakes the previous server was running`);
      if (recovered.adopted.length + recovered.cleaned.length + failedClaims + retired > 0) {
        log(`recovered after restart: adopted ${recovered.adopted.length} host(s), cleaned up ${recovered.cleaned.length}, failed ${failedClaims} unfinished claim(s), retiring ${retired} pool host(s) of unknown state`);
      }

      const { environments, router, routerRequests, routerCertificate } = await startEnvironments(config, {
        db: store.db, events, stacks: stacksRepo, pools: poolsRepo, hosts: hostsRepo, claims, services, slugs,
        changeHostTags: (tenantId, hostId, change) => hostsService.changeTags(tenantId, hostId, change),
        slugUrl: (digest) => `${agentBase}/slugs/${digest}.tar`,
        tokens: tokenService,
        log,
        progress,
        ...(routerTls ? { routerTls } : {}),
      });
      undo.push(() => router.close(), () => environments.stop());

      const apiRequests = new ApiRequestCounts();
      const certificates = new ServedCertificates();
      if (routerCertificate) certificates.add('router', routerCertificate);
      const metrics = new MetricsCollector({
        certificates: () => certificates.list(),
        apiRequests,
        db: store.db,
        routerRequests,
        services,
        poolTarget: (tenantId, pool) => reconciler.progressOf(tenantId, pool).target,
        shells: (tenantId) => shells.totalsFor(tenantId),
        ...(config.driver.nameServiceCounts ? { nameService: () => config.driver.nameServiceCounts?.() } : {}),
        hostStats: (tenantId: string) => hostsService.runningStats(tenantId),
      });
      const dashboard = createDashboard({ db: store.db, events, metrics, pools: poolService, hosts: hostsService, environments, commands, hostHourPrice: config.hostHourPrice });
      const app = await buildApp({
        hosts: hostsService,
        commands,
        pools: { pools: poolService, claims, poolsRepo, hostsRepo, isConnected },
        images,
        services,
        stacks,
        environments,
        tokens: tokenService,
        rotateDataDirToken: () => access.rotateDataDirToken(),
        audit,
        apiRequests,
        scopeLookups: {
          hostGroups: (tenantId, ids) => hostsRepo.groupsOf(tenantId, ids),
          commandSender: async (tenantId, id) => (await commandsRepo.get(tenantId, id))?.command.created_by_token,
          claimGroup: async (tenantId, id) => (await claimsRepo.get(tenantId, id))?.group_name,
        },
        health: () => Promise.resolve({ store: store.kind, driver: config.driver.name, agentsConnected: agents.connectedHostIds().length }),
        driver: () => ({
          name: config.driver.name,
          ...(config.driver.callCounts ? { calls: config.driver.callCounts() } : {}),
          ...(config.driver.attemptCounts ? { attempts: config.driver.attemptCounts() } : {}),
        }),
        version: VERSION,
        logger: config.logger ?? false,
        metrics,
        events,
        dashboard: dashboard.feed,
        shells: { broker: shells, ...(shellRecorder ? { recorder: shellRecorder } : {}) },
        ...(config.eventsHeartbeatMs !== undefined ? { eventsHeartbeatMs: config.eventsHeartbeatMs } : {}),
        ...(apiTls ? { tls: apiTls } : {}),
      });
      undo.push(() => app.close());
      const stopShells = serveShells(app.server, { broker: shells, authenticate: (token) => tokenService.authenticate(token), hostGroups: (tenantId, ids) => hostsRepo.groupsOf(tenantId, ids), audit, log });
      const apiAddress = { host: config.host ?? '127.0.0.1', port: config.port ?? 7070 };
      const listened = await app.listen(apiAddress).catch((err: unknown) => {
        throw listenError(err, 'the API', `${apiAddress.host}:${apiAddress.port}`, 'Stop what holds that port, or start berth with another --port (or --host).');
      });
      // Fastify names the address after the options it was given, which do not say https (see buildApp).
      const address = apiTls ? listened.replace(/^http:/, 'https:') : listened;
      const server = new BerthServer(address, agentUrl, access.dataDirToken(), store, hostsService, commands, app, gateway, dataDir, recovered, { pools: poolService, claims, reconciler }, images, environments, router, events);
      server.backendAgents = config.driver.agents;
      server.audit = audit;
      access.onRotated = (next) => (server.token = next);
      server.stopShells = () => {
        shells.closeAll();
        shellRecorder?.close();
        stopShells();
      };
      server.driver = config.driver;
      server.log = log;
      server.poolNames = async () => [...new Set((await poolsRepo.list()).map((pool) => pool.name))];
      server.fenced = fenced.then(async (holder) => (await server.stop(), holder));
      if (apiTls && config.tls) certificates.watch('api', new CertificateWatcher(config.tls, API_TLS_USE, apiTls, (pair) => setApiCertificate(app, pair), log));
      if (agentTls) certificates.watch('agent', agentTls.watch(agentAddress.host, gateway, log));
      server.stopTls = () => certificates.stop();
      dataDir.writeServerInfo({ url: address, pid: process.pid, agentUrl, startedAt: new Date().toISOString(), ...(config.tls ? { tlsCertFile: config.tls.certFile } : {}) });
      if (config.runLoops === false) return server;
      startLoops(server.loops, config, {
        sweepCommands: () => dispatcher.sweep(),
        monitorHosts: () => hostsService.monitor(),
        syncNetworkGroups: () => networkGroups.syncAll(),
        reconcilePools: () => reconciler.kickAll(),
        sampleLevels: dashboard.sampleLevels,
        sweepOrphans: async () => {
          await hostsService.sweepOrphans();
          if (config.driver.fleet?.sweepGroups) await config.driver.fleet.sweepGroups(new Set(await hostsRepo.groupsWithLiveHosts()));
        },
        // Pools whose machines run no berth agent (SSM): their group's machines are admitted from here.
        ...(fleet && config.driver.fleet?.discover ? { discoverFleet: async () => void (await Promise.all((await poolsRepo.list()).map((pool) => fleet.discover(pool)))) } : {}),
      }, report);
      await reconciler.kickAll();
      environments.startSweeper(config.envSweepIntervalMs ?? 5000);
      return server;
    } catch (err) {
      for (const close of undo.reverse()) await Promise.resolve().then(close).catch(() => undefined);
      await config.driver.agents?.close();
      await config.driver.stopServing?.();
      await store.close();
      dataDir.unlock();
      throw err;
    }
  }

  /** Stops serving. Hosts keep running (they are adopted at the next start). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.loops.stop();
    this.environments.stop();
    this.hosts.stop();
    this.stopShells?.();
    this.stopTls?.();
    const step = (name: string, run: () => unknown) => stopStep(name, run, this.log);
    await step('the router', () => this.router.close());
    await step("the pools' reconciler", () => this.pools.reconciler.stop());
    await step('the API (its open requests and connections)', () => this.app.close());
    await step('the audit log', () => this.audit?.close());
    await step('image builds', () => this.images.close().catch(() => undefined));
    await step("the backend's agents", () => this.backendAgents?.close());
    await step("the driver's services", () => this.driver?.stopServing?.());
    await step('the agent channel', () => this.gateway.close());
    await step('the store', () => this.store.close());
    this.dataDir.unlock();
  }

  /**
   * `berth down`: every host of this store terminated, then what the driver set up on the machine
   * (take-down.ts). For a server started with `runLoops: false`; it is stopped after.
   */
  takeDown(progress: (step: TakeDownStep) => void, opts: { purge?: boolean; signal?: AbortSignal } = {}): Promise<TakeDownReport> {
    if (!this.driver) throw new Error('takeDown before the server started');
    return takeDown({ hosts: this.hosts, reconciler: this.pools.reconciler, environments: this.environments, images: this.images, driver: this.driver, poolNames: this.poolNames }, progress, opts);
  }
}

