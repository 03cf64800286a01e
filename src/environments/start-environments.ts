/**
 * The server's environments: the router (listening once this returns), the environment service
 * over the claims, and on AWS the load balancing of `service` mode. Environments the previous
 * server left are recovered here: their routes come back, unfinished ones are cleaned up.
 */
import type { HostDriver } from '../drivers/types.js';
import type { AwsDriver } from '../drivers/aws/aws-driver.js';
import { RouterRequestCounts } from '../metrics/metrics.js';
import type { ClaimService } from '../pools/claim-service.js';
import { EnvironmentRouter } from '../router/router.js';
import { CertificateWatcher, routerTlsUse, type TlsPair } from '../server/tls-files.js';
import type { ServerConfig } from '../server/server-config.js';
import type { ServicesService } from '../services/services-service.js';
import { startSlugRetention } from '../slugs/slug-retention.js';
import type { SlugStore } from '../slugs/slug-store.js';
import { DEFAULT_GC_AFTER_MS, GC_EVERY_MS } from '../images/start-images.js';
import type { Store } from '../store/store.js';
import { EnvironmentsRepo } from '../store/environments-repo.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { StacksRepo } from '../store/stacks-repo.js';
import type { EventBus } from '../events/event-bus.js';
import { EnvironmentService } from './environment-service.js';
import { EnvironmentAccess, type AccessDeps } from './access.js';
import { ConfigHashKeys } from '../store/tokens-repo.js';

export interface StartEnvironmentsDeps {
  db: Store['db'];
  events: EventBus;
  stacks: StacksRepo;
  pools: PoolsRepo;
  hosts: HostsRepo;
  claims: ClaimService;
  /** Changes a claimed host's tags (HostService.changeTags): environments' settings. */
  changeHostTags: (tenantId: string, hostId: string, change: { set: Record<string, string>; remove: string[] }) => Promise<unknown>;
  services: ServicesService;
  slugs: SlugStore;
  /** Where hosts fetch a slug from (the agent port's files). */
  slugUrl: (digest: string) => string;
  /** Who a token is: private environments let in only those that may see them. */
  tokens: AccessDeps['tokens'];
  log: (line: string) => void;
  progress: (line: string) => void;
  /** HTTPS for the router: the pair loaded at start (server/tls-files.ts); its files are watched from then on. */
  routerTls?: TlsPair;
}

export interface Environments {
  environments: EnvironmentService;
  router: EnvironmentRouter;
  /** The router's responses, for /metrics. */
  routerRequests: RouterRequestCounts;
  /** The certificate the router serves now, when it serves HTTPS. */
  routerCertificate?: () => TlsPair;
}

function isAwsDriver(driver: HostDriver): driver is AwsDriver {
  return driver.name === 'aws' && typeof (driver as Partial<AwsDriver>).resolvedConfig === 'function';
}

export async function startEnvironments(config: Pick<ServerConfig, 'driver' | 'router' | 'imageGcAfterMs' | 'runLoops'>, deps: StartEnvironmentsDeps): Promise<Environments> {
  const { claims, services, slugs, log } = deps;
  // Service mode on AWS: each service's hosts in an ELBv2 target group. Loaded only then: the
  // AWS SDK would cost every local server its start-up time.
  const loadBalancing = isAwsDriver(config.driver)
    ? new (await import('../drivers/aws/service-load-balancing.js')).AwsServiceLoadBalancing(config.driver.resolvedConfig(), { log })
    : undefined;
  const routerRequests = new RouterRequestCounts();
  const tenantKeys = new ConfigHashKeys(deps.db);
  const router = new EnvironmentRouter({ domain: config.router?.domain ?? 'localhost', log, onResponse: routerRequests.observe });
  const envs = new EnvironmentsRepo(deps.db, deps.events);
  const environments = new EnvironmentService({
    envs,
    stacks: deps.stacks,
    pools: deps.pools,
    hosts: deps.hosts,
    placement: {
      claim: (tenantId, pool, input, signal, opts) => claims.claim(tenantId, pool, input, signal, opts),
      awaitServicesReady: (tenantId, hostId, timeoutMs, label) => services.awaitReady(tenantId, hostId, timeoutMs, label),
    },
    release: (tenantId, hostId, opts) => claims.release(tenantId, hostId, opts),
    changeHostTags: deps.changeHostTags,
    services,
    slugs: { prepare: (ref, signal, pinned) => slugs.prepare(ref, signal, pinned), urlFor: (slug) => deps.slugUrl(slug.digest) },
    router,
    log,
    ...(config.router?.healthIntervalMs !== undefined ? { healthIntervalMs: config.router.healthIntervalMs } : {}),
    ...(loadBalancing ? { loadBalancing } : {}),
    access: new EnvironmentAccess({ tokens: deps.tokens, tenantKey: (tenantId) => tenantKeys.of(tenantId) }),
  });
  let routerCertificate: (() => TlsPair) | undefined;
  try {
    const host = config.router?.host ?? '127.0.0.1';
    const { routerTls } = deps;
    await router.listen({ port: config.router?.port ?? 7080, host, ...(routerTls ? { tls: routerTls } : {}) });
    if (routerTls && config.router?.tls) {
      const watcher = new CertificateWatcher(config.router.tls, routerTlsUse(router.domain), routerTls, (pair) => router.setCertificate(pair), log);
      watcher.start();
      router.whenClosed(() => watcher.stop());
      routerCertificate = () => watcher.pair;
      if (config.router.redirectPort !== undefined) await router.listenRedirect({ port: config.router.redirectPort, host });
    }
  } catch (err) {
    await router.close();
    throw err;
  }
  const gcAfterMs = config.imageGcAfterMs ?? DEFAULT_GC_AFTER_MS;
  if (gcAfterMs > 0 && config.runLoops !== false) {
    router.whenClosed(startSlugRetention({ slugs, inUse: () => envs.slugDigests(), log }, { unusedForMs: gcAfterMs, everyMs: Math.min(gcAfterMs, GC_EVERY_MS) }));
  }
  // A host of a group gone for good may be an environment's: it is replaced at once (heal.ts).
  const unsubscribe = deps.events.subscribe((event) => {
    if (event.kind === 'host' && event.group && (event.state === 'terminating' || event.state === 'failed')) environments.healSoon();
  });
  router.whenClosed(unsubscribe);
  deps.progress('restoring environments and their routes');
  const recovered = await environments.recover().catch(async (err: unknown) => {
    await router.close();
    throw err;
  });
  if (recovered.routed.length + recovered.cleaned.length > 0) log(`recovered after restart: ${recovered.routed.length} environment route(s) restored, ${recovered.cleaned.length} unfinished environment(s) cleaned up`);
  return { environments, router, routerRequests, ...(routerCertificate ? { routerCertificate } : {}) };
}
