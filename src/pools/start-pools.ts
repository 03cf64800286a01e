/**
 * The server's pools: the reconciler that keeps them full, the claim service, the pool service of
 * the API, and on a fleet driver (AWS) the pools whose machines enrol from their Auto Scaling
 * groups. Everything enters through `deps`.
 */
import type { CommandService } from '../commands/command-service.js';
import { createHash } from 'node:crypto';
import type { AgentChannel, HostDriver } from '../drivers/types.js';
import type { HostService } from '../hosts/host-service.js';
import type { NetworkGroups } from '../hosts/network-groups.js';
import type { ServicesService } from '../services/services-service.js';
import type { StackSync } from '../services/stack-sync.js';
import type { ClaimsRepo } from '../store/claims-repo.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { ConfigHashKeys } from '../store/tokens-repo.js';
import type { EventSink } from '../events/types.js';
import { ClaimService } from './claim-service.js';
import { FleetPools } from './fleet-pools.js';
import { PoolService } from './pool-service.js';
import { PoolReconciler } from './reconciler.js';
import { poolSpecCheck } from './spec-check.js';

export interface StartPoolsDeps {
  driver: HostDriver;
  poolsRepo: PoolsRepo;
  hostsRepo: HostsRepo;
  claimsRepo: ClaimsRepo;
  hostService: HostService;
  commands: CommandService;
  services: ServicesService;
  stacks: StackSync;
  networkGroups: NetworkGroups;
  hashKeys: ConfigHashKeys;
  /** An image reference as hosts boot it (berth's images resolve to a base and layers). */
  resolveImage: (tenantId: string, ref: string) => Promise<{ base: string }>;
  isConnected: (hostId: string) => boolean;
  /** Where a fleet pool's machines enrol and then connect (the agent port). */
  enrolUrl: string;
  agentChannel: AgentChannel;
  bootTimeoutMs: number | undefined;
  backoffMs: number | undefined;
  scheduleClock: (() => Date) | undefined;
  events: EventSink;
  log: (line: string) => void;
}

export interface Pools {
  pools: PoolService;
  claims: ClaimService;
  reconciler: PoolReconciler;
  /** A fleet driver's pools (their machines enrol), else undefined. */
  fleet: FleetPools | undefined;
}

export function startPools(deps: StartPoolsDeps): Pools {
  const { driver, poolsRepo, hostsRepo, claimsRepo, hostService, commands, services, stacks, networkGroups, log } = deps;
  const bootTimeout = deps.bootTimeoutMs !== undefined ? { bootTimeoutMs: deps.bootTimeoutMs } : {};
  // The reconciler asks the fleet to ensure a pool's group; the fleet hands enrolled machines to the
  // reconciler: each is made first, then bound to the other.
  const late: { fleet?: FleetPools } = {};
  const reconciler = new PoolReconciler({
    pools: poolsRepo,
    hosts: hostsRepo,
    hostService,
    commands,
    log,
    servicesReady: async (tenantId, hostId, timeoutMs) => void (await services.awaitReady(tenantId, hostId, timeoutMs, `host ${hostId}`)),
    ...(deps.backoffMs !== undefined ? { backoffMs: deps.backoffMs } : {}),
    ...(deps.scheduleClock ? { scheduleClock: deps.scheduleClock } : {}),
    events: deps.events,
    ...bootTimeout,
    ...(driver.fleet ? { fleet: { ensure: (pool, signal) => (late.fleet ? late.fleet.ensure(pool, signal) : Promise.resolve()), bootVersion: () => bootVersion(deps.agentChannel) } } : {}),
    demand: {
      demandPeak: (tenantId, pool, windowS, spanS) => claimsRepo.demandPeak(tenantId, pool, windowS, spanS),
      medianLeadTimeS: (tenantId, pool) => hostsRepo.medianLeadTimeS(tenantId, pool),
    },
  });
  if (driver.fleet) {
    late.fleet = new FleetPools({
      fleet: driver.fleet,
      pools: poolsRepo,
      hostService,
      hashKeys: deps.hashKeys,
      enrolUrl: deps.enrolUrl,
      agentChannel: deps.agentChannel,
      onAdmitted: (pool, host) => reconciler.adoptEnrolled(pool, host),
      resolveImage: async (tenantId, ref) => (await deps.resolveImage(tenantId, ref)).base,
      known: async (hostId) => (await hostsRepo.getAnyTenant(hostId)) !== undefined,
      log,
    });
  }
  const claims = new ClaimService({
    pools: poolsRepo,
    claims: claimsRepo,
    hosts: hostsRepo,
    hostService,
    commands,
    reconciler,
    isConnected: deps.isConnected,
    log,
    onClaimed: async (host, groupMates) => {
      // First: a service-mode host's services may dial their dependencies on other hosts of the group.
      await networkGroups.joined(host, groupMates);
      services.pushTags(host.id, host.tags);
      await stacks.syncTagged(host);
    },
    ...(driver.fleet ? { fleet: driver.fleet } : {}),
    // A claim's cold launch waits for its agent as long as a refill's does (EC2: minutes, not 30 s).
    ...bootTimeout,
  });
  const fleet = late.fleet;
  const pools = new PoolService({
    pools: poolsRepo,
    claims: claimsRepo,
    hosts: hostsRepo,
    reconciler,
    isConnected: deps.isConnected,
    checkSpec: poolSpecCheck(driver, deps.resolveImage),
    log,
    ...(deps.scheduleClock ? { scheduleClock: deps.scheduleClock } : {}),
    ...(fleet ? { removeFleetPool: (name: string) => fleet.remove(name) } : {}),
  });
  return { pools, claims, reconciler, fleet };
}

/** A fleet's boot script carries the agents' CA: a CA rolled over is a new launch template. */
function bootVersion(channel: AgentChannel): string {
  return channel.ca ? createHash('sha256').update(channel.ca).digest('hex').slice(0, 16) : '';
}
