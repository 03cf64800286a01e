/**
 * Pools on a fleet driver (see PoolFleet): the backend's group launches and replaces a pool's
 * machines; each one enrols here with the pool's enrolment secret and its machine id, is admitted
 * only if the driver finds it in the pool's group, and gets its own host identity (the per-host
 * token of every other host). From then on it is warmed, checked and claimed like any pool host.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { BerthError, errorMessage } from '../core/errors.js';
import { agentBootstrap, type AgentChannel, type FleetPool, type PoolFleet } from '../drivers/types.js';
import type { HostService, RegisteredHost } from '../hosts/host-service.js';
import { enrolRequest, type AgentIdentity } from '../protocol/messages.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { PoolRow } from '../store/schema.js';
import type { ConfigHashKeys } from '../store/tokens-repo.js';
import { launchRequest } from './readiness.js';

/** Host ids of fleet hosts: the machine's id made a berth id (`i-0abc…` → `h-0abc…`). */
export function fleetHostId(machineId: string): string {
  return `h-${machineId.replace(/^i-/, '')}`;
}

export interface FleetPoolsDeps {
  fleet: PoolFleet;
  pools: PoolsRepo;
  hostService: HostService;
  hashKeys: ConfigHashKeys;
  /** The agent channel's enrolment URL, as machines reach it. */
  enrolUrl: string;
  /** The agent channel, as machines reach it. */
  agentChannel: AgentChannel;
  /** Whether a host of this id exists (admitted before), in any state. */
  known: (hostId: string) => Promise<boolean>;
  /** An admitted host is the reconciler's to warm up from here. */
  onAdmitted: (pool: PoolRow, host: RegisteredHost) => void;
  /** What a pool's image name boots on the backend (an image → its AMI); default: the name as it is. */
  resolveImage?: (tenantId: string, ref: string) => Promise<string>;
  log: (line: string) => void;
}

export class FleetPools {
  constructor(private readonly deps: FleetPoolsDeps) {}

  /**
   * The pool's enrolment secret: derived (HMAC under the tenant's key) from the pool's name and
   * creation time, so nothing more is stored, and a pool removed and made again has a new one.
   */
  async enrolmentToken(pool: PoolRow): Promise<string> {
    const key = await this.deps.hashKeys.of(pool.tenant_id);
    return createHmac('sha256', key).update(`berth-pool-enrolment\0${pool.name}\0${new Date(pool.created_at).toISOString()}`).digest('base64url');
  }

  /** Makes the pool's group hold `size` machines of the pool's current template. */
  async ensure(pool: PoolRow, signal?: AbortSignal): Promise<void> {
    await this.deps.fleet.ensurePool(await this.fleetPool(pool), signal ? { signal } : {});
  }

  /**
   * Admits the machines of the pool's group that will not enrol by themselves (no berth agent: see
   * PoolFleet.discover). Their generation is the pool's: a machine cannot say which template it booted.
   */
  async discover(pool: PoolRow, signal?: AbortSignal): Promise<string[]> {
    if (!this.deps.fleet.discover) return [];
    const machines = await this.deps.fleet.discover(await this.fleetPool(pool), signal ? { signal } : {});
    const admitted: string[] = [];
    for (const machineId of machines) {
      if (await this.deps.known(fleetHostId(machineId))) continue;
      try {
        admitted.push((await this.admitMachine(pool, machineId, pool.generation)).id);
      } catch (err) {
        this.deps.log(`pool ${pool.name}: machine ${machineId} could not be admitted: ${errorMessage(err)}`);
      }
    }
    return admitted;
  }

  private async fleetPool(pool: PoolRow): Promise<FleetPool> {
    const { image: ref, tags, resources } = launchRequest(pool);
    // Resolved at each ensure: a new build of the image starts a new generation, which comes here.
    const image = this.deps.resolveImage ? await this.deps.resolveImage(pool.tenant_id, ref) : ref;
    return { name: pool.name, size: pool.size, image, tags, resources, ...(pool.template.aws ? { settings: { ...pool.template.aws } } : {}), enrolment: { url: this.deps.enrolUrl, tenantId: pool.tenant_id, pool: pool.name, token: await this.enrolmentToken(pool), generation: pool.generation, ...(this.deps.agentChannel.ca ? { ca: this.deps.agentChannel.ca } : {}) } };
  }

  async remove(pool: string): Promise<void> {
    await this.deps.fleet.removePool(pool);
  }

  /** An enrolment request, as the agent channel received it. */
  async enrol(body: unknown): Promise<AgentIdentity> {
    const parsed = enrolRequest.safeParse(body);
    if (!parsed.success) throw new BerthError('bad_request', 'the enrolment request is malformed', 'Send the enrolment file as written by the boot script, with the machine id.');
    const req = parsed.data;
    const refused = new BerthError('forbidden', `enrolment in pool ${req.pool} refused`, 'The enrolment secret is not the pool\'s (was the pool removed and made again?); the machine should be terminated.', { pool: req.pool });
    const pool = await this.deps.pools.get(req.tenantId, req.pool).catch(() => undefined);
    if (!pool) throw refused;
    const given = Buffer.from(req.token);
    const expected = Buffer.from(await this.enrolmentToken(pool));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw refused;
    const host = await this.admitMachine(pool, req.machineId, req.generation ?? pool.generation);
    return agentBootstrap(this.deps.agentChannel, host.id, host.token);
  }

  private async admitMachine(pool: PoolRow, machineId: string, generation: number): Promise<RegisteredHost> {
    const machine = await this.deps.fleet.admit(pool.name, machineId);
    const id = fleetHostId(machineId);
    const host = await this.deps.hostService.admit(pool.tenant_id, { ...launchRequest(pool), hostname: id }, { name: pool.name, generation, slot: 'warming' }, { id, ...machine });
    this.deps.log(`pool ${pool.name}: machine ${machineId} enrolled as host ${id}`);
    this.deps.onAdmitted(pool, host);
    return host;
  }
}
