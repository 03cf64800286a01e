/**
 * Pools on Auto Scaling, the seeds' design: each pool is a group launching `size` instances from
 * the pool's own launch template, whose boot script carries the pool's enrolment (not a host's
 * identity: one script serves every instance). An instance enrols when its agent starts; the
 * control plane admits it only if it is in the pool's group. A claim moves it out (DetachInstances
 * without decrement: the pool's group launches the replacement at once) into the claiming group's
 * group. Terminations go through the groups, so a group never replaces what berth removed on
 * purpose and always replaces what it should.
 */
import { DescribeInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { BerthError } from '../../core/errors.js';
import type { FleetPool, OperationOptions, PoolFleet } from '../types.js';
import { isAmiId, type CommandChannel, type ResolvedAwsConfig } from './config.js';
import type { AwsGroups } from './groups.js';
import { deleteLaunchTemplate } from './launch-template.js';
import { RootVolumes } from './root-volume.js';
import { awsCall, callTally } from './sdk.js';
import { buildFleetUserData, caHint, USER_DATA_LIMIT } from './user-data.js';

/** A pool's own AWS settings (checked by the pool schema), over the driver's. */
/** A pool's `template.aws.warmPool` (checked by the pool schema). */
interface WarmPoolSettings {
  state: 'Stopped' | 'Running' | 'Hibernated';
  minSize?: number;
  maxPreparedCapacity?: number;
  reuseOnScaleIn?: boolean;
}

interface PoolSettings {
  instanceType?: string;
  instanceProfile?: string;
  subnetIds?: string[];
  securityGroupIds?: string[];
  warmPool?: WarmPoolSettings;
  commandChannel?: CommandChannel;
}

function poolSettings(pool: FleetPool): PoolSettings {
  const s = pool.settings ?? {};
  const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const list = (v: unknown): string[] | undefined => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined);
  const out: PoolSettings = {};
  const channel = s['commandChannel'];
  if (channel === 'agent' || channel === 'ssm') out.commandChannel = channel;
  // Checked by the pool schema; only its shape is trusted here.
  const warm = s['warmPool'];
  if (warm && typeof warm === 'object' && ['Stopped', 'Running', 'Hibernated'].includes((warm as { state?: unknown }).state as string)) out.warmPool = warm as WarmPoolSettings;
  const instanceType = text(s['instanceType']);
  const instanceProfile = text(s['instanceProfile']);
  const subnetIds = list(s['subnetIds']);
  const securityGroupIds = list(s['securityGroupIds']);
  if (instanceType) out.instanceType = instanceType;
  if (instanceProfile) out.instanceProfile = instanceProfile;
  if (subnetIds) out.subnetIds = subnetIds;
  if (securityGroupIds) out.securityGroupIds = securityGroupIds;
  return out;
}

/** Lifecycle states of an instance that may enrol: the agent can start before the group marks it InService. */
const ADMISSIBLE = ['Pending', 'Pending:Wait', 'Pending:Proceed', 'InService'];

export class AwsFleet implements PoolFleet {
  /** Each pool's command channel, as its settings were last seen (ensurePool, discover). */
  private readonly channels = new Map<string, CommandChannel>();

  private readonly rootVolumes: RootVolumes;

  constructor(
    private readonly cfg: ResolvedAwsConfig,
    private readonly ec2: EC2Client,
    readonly groups: AwsGroups,
  ) {
    this.rootVolumes = new RootVolumes(ec2, cfg);
  }

  templateName(pool: string): string {
    return `${this.cfg.name}-pool-${pool}`;
  }

  async ensurePool(pool: FleetPool, opts?: OperationOptions): Promise<void> {
    if (pool.image !== '/' && !isAmiId(pool.image)) {
      throw new BerthError('validation_failed', `pool ${pool.name}'s image ${JSON.stringify(pool.image)} is not an AMI`, "On AWS a pool's image is an AMI id (ami-…), or / for the driver's own AMI.", { pool: pool.name });
    }
    const ssm = this.channelOf(pool) === 'ssm';
    const userData = buildFleetUserData(pool.enrolment, pool.tags, ssm ? null : this.cfg.agentCommand);
    if (Buffer.byteLength(userData) > USER_DATA_LIMIT) {
      throw new BerthError('validation_failed', `pool ${pool.name}'s boot script is over EC2's 16 KiB`, `Use fewer or shorter tags in the pool template${caHint(pool.enrolment.ca)}.`, { pool: pool.name });
    }
    const settings = poolSettings(pool);
    const [rootVolume] = (await this.rootVolumes.mappings(pool.image === '/' ? this.cfg.imageId : pool.image, pool.resources.diskMiB, opts)) ?? [];
    await this.groups.ensurePoolGroup(
      pool.name,
      pool.size,
      1,
      opts,
      {
        name: this.templateName(pool.name),
        ...(pool.image === '/' ? {} : { imageId: pool.image }),
        ...(settings.instanceType ? { instanceType: settings.instanceType } : {}),
        ...(settings.instanceProfile ? { instanceProfile: settings.instanceProfile } : {}),
        ...(settings.securityGroupIds ? { securityGroupIds: settings.securityGroupIds } : {}),
        ...(rootVolume ? { rootVolume } : {}),
        userData,
      },
      settings.subnetIds,
      pool.tags,
    );
    if (settings.warmPool) await this.groups.putWarmPool(this.groups.poolGroupName(pool.name), settings.warmPool, opts);
  }

  /** The pool's command channel: its own setting, else the driver's. Remembered for admit. */
  private channelOf(pool: FleetPool): CommandChannel {
    const channel = poolSettings(pool).commandChannel ?? this.cfg.commandChannel;
    this.channels.set(pool.name, channel);
    return channel;
  }

  /**
   * 1 call for a pool whose hosts run no berth agent (the `ssm` channel), none otherwise: the
   * instances in service in the pool's group, which the control plane admits itself since no agent
   * of theirs will ask to enrol.
   */
  async discover(pool: FleetPool, opts?: OperationOptions): Promise<string[]> {
    if (this.channelOf(pool) !== 'ssm') return [];
    return this.groups.instancesOf(this.groups.poolGroupName(pool.name), opts);
  }

  /** 2 calls, off the claim path: the instance's group, then its address. */
  async admit(pool: string, machineId: string, opts?: OperationOptions): Promise<{ ip: string; driverData: Record<string, unknown> }> {
    const expected = this.groups.poolGroupName(pool);
    const where = /^i-[0-9a-f]{8,17}$/.test(machineId) ? await this.groups.membership(machineId, opts) : undefined;
    if (where?.group === expected && where.lifecycleState.startsWith('Warmed:')) {
      // A warm pool's instance (running or resuming there) is not in service: not a host yet. Its
      // agent asks again (503 is retried) and enrols once the group puts it in service.
      throw new BerthError('driver_unavailable', `instance ${machineId} is ${where.lifecycleState} in the warm pool of ${expected}`, 'It enrols when it enters service; nothing to do.', { pool, instanceId: machineId });
    }
    if (!where || where.group !== expected || !ADMISSIBLE.includes(where.lifecycleState)) {
      const why = where ? `it is ${where.lifecycleState} in ${where.group}` : 'it is in no Auto Scaling group';
      throw new BerthError('forbidden', `instance ${machineId} may not enrol in pool ${pool}: ${why}, not in ${expected}`, 'Only instances launched by the pool\'s own group enrol as its hosts.', { pool, instanceId: machineId });
    }
    const out = await awsCall(this.ec2, this.cfg, { operation: 'DescribeInstances', instanceId: machineId }, opts, (abortSignal) =>
      this.ec2.send(new DescribeInstancesCommand({ InstanceIds: [machineId] }), { abortSignal }),
    );
    const instance = out.Reservations?.[0]?.Instances?.[0];
    const ip = instance?.PrivateIpAddress;
    if (!ip) throw new BerthError('conflict', `instance ${machineId} has no private address yet`, 'Its agent retries the enrolment.', { instanceId: machineId });
    const channel = this.channels.get(pool) === 'ssm' ? { channel: 'ssm' } : {};
    // The AMI it booted: AMI retention keeps what live hosts run, and a pool's group may still run an older one.
    const image = instance.ImageId ? { imageId: instance.ImageId } : {};
    return { ip, driverData: { instanceId: machineId, launchedAt: (instance.LaunchTime ?? new Date()).toISOString(), fleet: true, group: expected, ...channel, ...image } };
  }

  /** 2–3 calls (a new claiming group: CreateAutoScalingGroup, then Detach + Attach). */
  async moveToGroup(pool: string, group: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<{ driverData: Record<string, unknown>; calls: Record<string, number> }> {
    // A host launched on its own (a claim's cold launch) is in no group: nothing to move.
    if (driverData['fleet'] !== true) return { driverData, calls: {} };
    const instanceId = driverData['instanceId'];
    if (typeof instanceId !== 'string') throw new BerthError('internal', `a host of pool ${pool} has no instance id`, 'Release it and claim again.', { pool });
    const calls = new Map<string, number>();
    const userGroup = await callTally.run(calls, async () => {
      const name = await this.groups.userGroupForClaim(group, this.templateName(pool), opts);
      await this.groups.moveInstance(instanceId, this.groups.poolGroupName(pool), name, opts);
      return name;
    });
    this.groups.tagOwner(instanceId, group);
    return { driverData: { ...driverData, group: userGroup }, calls: Object.fromEntries(calls) };
  }

  async sweepGroups(keep: Set<string>, opts?: OperationOptions): Promise<string[]> {
    return this.groups.sweepUserGroups(keep, this.sweepQuietMs, opts);
  }

  /** How long a claiming group's group must have been idle before the sweep removes it (tests shorten it). */
  sweepQuietMs = 10 * 60_000;

  /**
   * The group (its instances with it), then the pool's launch template: a region holds 5,000, and a
   * pool per branch would use them up. Claiming groups made from it keep their instances; they
   * never launch, so they need no template.
   */
  async removePool(pool: string, opts?: OperationOptions): Promise<void> {
    await this.groups.removeGroup(this.groups.poolGroupName(pool), opts);
    await deleteLaunchTemplate(this.ec2, this.cfg, this.templateName(pool), opts);
  }

  drainPool(pool: string, opts?: OperationOptions): Promise<boolean> {
    return this.groups.drainPoolGroup(pool, opts);
  }

  /** The pools' groups and launch templates, and every claiming group left empty (no quiet time: nothing claims any more). */
  async purge(pools: string[], opts?: OperationOptions): Promise<string[]> {
    const removed: string[] = [];
    for (const pool of pools) {
      await this.removePool(pool, opts);
      removed.push(`Auto Scaling group ${this.groups.poolGroupName(pool)}`, `launch template ${this.templateName(pool)}`);
    }
    removed.push(...(await this.groups.sweepUserGroups(new Set(), 0, opts)).map((name) => `Auto Scaling group ${name}`));
    return removed;
  }
}
