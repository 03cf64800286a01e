/**
 * The seeds' Auto Scaling design: one group per pool keeps `size` warm instances from the driver's
 * launch template; one group per claiming group holds what its claims took. A claim moves an
 * InService instance from the pool's group to the user's: DetachInstances without decrementing the
 * pool's desired capacity (so the pool launches the replacement itself), then AttachInstances. The
 * database claim stays the lock that picks the instance (fleet.ts is the driver's PoolFleet on this).
 */
import {
  DescribeAutoScalingInstancesCommand,
  CreateAutoScalingGroupCommand,
  DeleteAutoScalingGroupCommand,
  DeleteWarmPoolCommand,
  DescribeAutoScalingGroupsCommand,
  DetachInstancesCommand,
  PutWarmPoolCommand,
  SuspendProcessesCommand,
  TerminateInstanceInAutoScalingGroupCommand,
  UpdateAutoScalingGroupCommand,
  type AutoScalingClient,
  type AutoScalingGroup,
} from '@aws-sdk/client-auto-scaling';
import { CreateTagsCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { BerthError, errorMessage } from '../../core/errors.js';
import type { OperationOptions } from '../types.js';
import { resolveAwsConfig, TAG_MANAGED_BY, type AwsDriverConfig, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { ensureLaunchTemplate, type TemplateVariant } from './launch-template.js';
import { ClaimingGroups } from './claiming-groups.js';
import { checkPart, TAG_GROUP, TAG_POOL } from './group-names.js';
import { awsCall, CallCounter, callTally, createAutoScalingClient, createEc2Client, type CallInfo, type RequestHandler } from './sdk.js';

export { TAG_GROUP, TAG_POOL } from './group-names.js';
export type { MovedInstanceState } from './claiming-groups.js';

/**
 * AZRebalance terminates instances to even out zones: it could kill a warm instance a claim is
 * detaching, or a claimed host. berth places hosts itself, so groups never rebalance.
 */
const SUSPENDED = ['AZRebalance'];
export interface AwsGroupsOptions {
  /** For tests: an SDK request handler instead of the network (used by both clients). */
  requestHandler?: RequestHandler;
}

export class AwsGroups {
  private readonly cfg: ResolvedAwsConfig;
  private readonly ec2: EC2Client;
  private readonly asg: AutoScalingClient;
  private readonly counter = new CallCounter();
  private template: Promise<string> | undefined;
  /** Claiming groups' groups and the moves into them (claiming-groups.ts). */
  private readonly claiming: ClaimingGroups;

  constructor(config: AwsDriverConfig, options: AwsGroupsOptions = {}) {
    this.cfg = resolveAwsConfig(config);
    this.ec2 = createEc2Client(this.cfg, options.requestHandler);
    this.asg = createAutoScalingClient(this.cfg, options.requestHandler);
    this.counter.attach(this.ec2);
    this.counter.attach(this.asg);
    this.claiming = new ClaimingGroups({
      cfg: this.cfg,
      asg: this.asg,
      call: (info, opts, run) => this.call(info, opts, run),
      describe: (name, opts) => this.describe(name, opts),
      ensureGroup: (name, want, tag, opts, update) => this.ensureGroup(name, want, tag, opts, update),
      removeGroup: (name, opts) => this.removeGroup(name, opts),
    });
  }

  /** AWS calls so far, per operation (EC2 and Auto Scaling; retries not counted). */
  callCounts(): Record<string, number> {
    return this.counter.callCounts();
  }

  attemptCounts(): Record<string, number> {
    return this.counter.attemptCounts();
  }

  poolGroupName(pool: string): string {
    return `${this.cfg.name}-pool-${checkPart('pool', pool)}`;
  }

  userGroupName(group: string): string {
    return this.claiming.userGroupName(group);
  }

  /** See ClaimingGroups.userGroupForClaim. */
  userGroupForClaim(group: string, templateName: string, opts?: OperationOptions): Promise<string> {
    return this.claiming.userGroupForClaim(group, templateName, opts);
  }

  /** See ClaimingGroups.sweepUserGroups. */
  sweepUserGroups(keep: Set<string>, quietMs?: number, opts?: OperationOptions): Promise<string[]> {
    return this.claiming.sweepUserGroups(keep, quietMs, opts);
  }

  /** See ClaimingGroups.ensureUserGroup. */
  ensureUserGroup(group: string, opts?: OperationOptions): Promise<string> {
    return this.claiming.ensureUserGroup(group, opts);
  }

  /** See ClaimingGroups.moveInstance: the AWS part of a claim. */
  moveInstance(instanceId: string, fromPoolGroup: string, toUserGroup: string, opts?: OperationOptions): Promise<void> {
    return this.claiming.moveInstance(instanceId, fromPoolGroup, toUserGroup, opts);
  }

  /**
   * The pool's group with desired = min = size and max = size + headroom. Headroom (≥ 1) is where a
   * failed claim puts its instance back while the replacement already runs. 1 describe, then
   * create + suspend (new), update (changed) or nothing; plus the launch template's calls once.
   */
  async ensurePoolGroup(pool: string, size: number, headroom = 1, opts?: OperationOptions, template?: TemplateVariant, subnetIds?: string[], instanceTags: Record<string, string> = {}): Promise<string> {
    const name = this.poolGroupName(pool);
    if (!Number.isInteger(size) || size < 0) throw new BerthError('validation_failed', `pool ${pool}'s size must be a whole number ≥ 0 (got ${size})`, 'Set the pool size.');
    if (!Number.isInteger(headroom) || headroom < 1) throw new BerthError('validation_failed', `pool ${pool}'s headroom must be a whole number ≥ 1 (got ${headroom})`, 'A failed claim needs room to put its instance back.');
    // A pool's own template (its boot script): a changed one becomes a new version, which the
    // group's next launches use ($Latest).
    const templateName = template ? await ensureLaunchTemplate(this.ec2, this.cfg, opts, template) : undefined;
    await this.ensureGroup(name, { min: size, max: size + headroom, desired: size }, { Key: TAG_POOL, Value: pool }, opts, true, templateName, subnetIds, instanceTags);
    return name;
  }

  /**
   * Stops the pool's group from keeping machines (`berth down`): min and desired 0, so it terminates
   * its instances and launches none, and its EC2 warm pool deleted (a Running warm pool costs as
   * much as the group). The next ensurePoolGroup sizes it again. False when there is no group. 1-3 calls.
   */
  async drainPoolGroup(pool: string, opts?: OperationOptions): Promise<boolean> {
    const name = this.poolGroupName(pool);
    const existing = await this.describe(name, opts);
    if (!existing) return false;
    if (existing.MinSize !== 0 || existing.DesiredCapacity !== 0) {
      await this.call({ operation: 'UpdateAutoScalingGroup', group: name }, opts, (abortSignal) =>
        this.asg.send(new UpdateAutoScalingGroupCommand({ AutoScalingGroupName: name, MinSize: 0, DesiredCapacity: 0 }), { abortSignal }),
      );
    }
    if (existing.WarmPoolConfiguration) {
      await this.call({ operation: 'DeleteWarmPool', group: name }, opts, (abortSignal) => this.asg.send(new DeleteWarmPoolCommand({ AutoScalingGroupName: name, ForceDelete: true }), { abortSignal }));
    }
    return true;
  }

  /**
   * Terminates an instance through its group: `decrement` shrinks the group (a released host),
   * else the group launches a replacement (a pool's quarantined host). Returns false when the
   * instance is in no group (the caller terminates it plainly). 1 call.
   */
  async terminateInGroup(instanceId: string, decrement: boolean, opts?: OperationOptions): Promise<boolean> {
    try {
      await this.call({ operation: 'TerminateInstanceInAutoScalingGroup', instanceId }, opts, (abortSignal) =>
        this.asg.send(new TerminateInstanceInAutoScalingGroupCommand({ InstanceId: instanceId, ShouldDecrementDesiredCapacity: decrement }), { abortSignal }),
      );
      // A user group's cached size stays as it was: too high only raises its max early, and an
      // attach refused for the max re-reads the group (see attach).
      return true;
    } catch (err) {
      if (err instanceof BerthError && (err.code === 'not_found' || err.code === 'validation_failed')) return false;
      throw err;
    }
  }

  /**
   * An EC2 warm pool behind a pool's group (PutWarmPool: idempotent, replaces the settings). Its
   * instances enrol only when they enter service (see AwsFleet.admit). 1 call.
   */
  async putWarmPool(group: string, warm: { state: 'Stopped' | 'Running' | 'Hibernated'; minSize?: number; maxPreparedCapacity?: number; reuseOnScaleIn?: boolean }, opts?: OperationOptions): Promise<void> {
    await this.call({ operation: 'PutWarmPool', group }, opts, (abortSignal) =>
      this.asg.send(
        new PutWarmPoolCommand({
          AutoScalingGroupName: group,
          PoolState: warm.state,
          ...(warm.minSize !== undefined ? { MinSize: warm.minSize } : {}),
          ...(warm.maxPreparedCapacity !== undefined ? { MaxGroupPreparedCapacity: warm.maxPreparedCapacity } : {}),
          ...(warm.reuseOnScaleIn !== undefined ? { InstanceReusePolicy: { ReuseOnScaleIn: warm.reuseOnScaleIn } } : {}),
        }),
        { abortSignal },
      ),
    );
  }

  /** Tags an instance with its claiming group (ownership), off the claim's path: not waited for, not counted as its. */
  tagOwner(instanceId: string, group: string): void {
    callTally.exit(() => {
      void awsCall(this.ec2, this.cfg, { operation: 'CreateTags', instanceId }, undefined, (abortSignal) =>
        this.ec2.send(new CreateTagsCommand({ Resources: [instanceId], Tags: [{ Key: TAG_GROUP, Value: group }] }), { abortSignal }),
      ).catch((err: unknown) => this.cfg.logger.warn({ instanceId, group, err: errorMessage(err) }, 'could not tag the instance with its group'));
    });
  }

  /** Takes an instance out of a group, which shrinks. 1 call. */
  async detach(instanceId: string, group: string, opts?: OperationOptions): Promise<void> {
    await this.call({ operation: 'DetachInstances', group, instanceId }, opts, (abortSignal) =>
      this.asg.send(new DetachInstancesCommand({ AutoScalingGroupName: group, InstanceIds: [instanceId], ShouldDecrementDesiredCapacity: true }), { abortSignal }),
    );
    this.claiming.noteDetached(group);
  }

  /** The group an instance is in and its lifecycle state there, or undefined. 1 call. */
  async membership(instanceId: string, opts?: OperationOptions): Promise<{ group: string; lifecycleState: string } | undefined> {
    const where = await this.call({ operation: 'DescribeAutoScalingInstances', instanceId }, opts, (abortSignal) =>
      this.asg.send(new DescribeAutoScalingInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal }),
    );
    const found = where.AutoScalingInstances?.find((i) => i.InstanceId === instanceId);
    return found?.AutoScalingGroupName ? { group: found.AutoScalingGroupName, lifecycleState: found.LifecycleState ?? 'unknown' } : undefined;
  }

  /** Returns the group as it was when it existed already, else undefined. */
  private async ensureGroup(
    name: string,
    want: { min: number; max: number; desired: number },
    tag: { Key: string; Value: string },
    opts: OperationOptions | undefined,
    update = true,
    templateName?: string,
    subnetIds: string[] = this.cfg.subnetIds,
    instanceTags: Record<string, string> = {},
  ): Promise<AutoScalingGroup | undefined> {
    const existing = await this.describe(name, opts);
    if (existing) {
      if (update && (existing.MinSize !== want.min || existing.MaxSize !== want.max || existing.DesiredCapacity !== want.desired)) {
        await this.call({ operation: 'UpdateAutoScalingGroup', group: name }, opts, (abortSignal) =>
          this.asg.send(new UpdateAutoScalingGroupCommand({ AutoScalingGroupName: name, MinSize: want.min, MaxSize: want.max, DesiredCapacity: want.desired }), { abortSignal }),
        );
      }
      return existing;
    }
    const template = templateName ?? (await this.launchTemplate());
    try {
      await this.call({ operation: 'CreateAutoScalingGroup', group: name }, opts, (abortSignal) =>
        this.asg.send(
          new CreateAutoScalingGroupCommand({
            AutoScalingGroupName: name,
            LaunchTemplate: { LaunchTemplateName: template, Version: '$Latest' },
            MinSize: want.min,
            MaxSize: want.max,
            DesiredCapacity: want.desired,
            ...(subnetIds.length ? { VPCZoneIdentifier: subnetIds.join(',') } : {}),
            // Propagated so the instances carry them too: the driver's sweep finds them by tag.
            Tags: [
              { Key: TAG_MANAGED_BY, Value: this.cfg.name, PropagateAtLaunch: true },
              { ...tag, PropagateAtLaunch: true },
              // The pool's own tags (a stack, a mode): what its instances configure themselves from.
              ...Object.entries(instanceTags)
                .filter(([key]) => !key.startsWith('aws:') && key !== TAG_MANAGED_BY && key !== tag.Key)
                .map(([Key, Value]) => ({ Key, Value, PropagateAtLaunch: true })),
            ],
          }),
          { abortSignal },
        ),
      );
    } catch (err) {
      // Another server created it between our describe and create: the next ensure reconciles sizes.
      if (hasAwsCode(err, 'AlreadyExists')) return this.describe(name, opts);
      throw err;
    }
    await this.call({ operation: 'SuspendProcesses', group: name }, opts, (abortSignal) =>
      this.asg.send(new SuspendProcessesCommand({ AutoScalingGroupName: name, ScalingProcesses: SUSPENDED }), { abortSignal }),
    );
    this.cfg.logger.info({ group: name, ...want }, 'Auto Scaling group created');
    return undefined;
  }

  /** Deletes the group and (ForceDelete) terminates its instances. Idempotent: 1 call. */
  async removeGroup(name: string, opts?: OperationOptions): Promise<void> {
    this.claiming.forget(name);
    try {
      await this.call({ operation: 'DeleteAutoScalingGroup', group: name }, opts, (abortSignal) =>
        this.asg.send(new DeleteAutoScalingGroupCommand({ AutoScalingGroupName: name, ForceDelete: true }), { abortSignal }),
      );
    } catch (err) {
      if (err instanceof BerthError && err.code === 'not_found') return;
      throw err;
    }
    this.cfg.logger.info({ group: name }, 'Auto Scaling group removed');
  }

  /** InService instance ids of the group; none when it does not exist. 1 call. */
  async instancesOf(groupName: string, opts?: OperationOptions): Promise<string[]> {
    const group = await this.describe(groupName, opts);
    return (group?.Instances ?? []).filter((i) => i.LifecycleState === 'InService' && i.InstanceId).map((i) => i.InstanceId ?? '');
  }

  private async describe(name: string, opts: OperationOptions | undefined): Promise<AutoScalingGroup | undefined> {
    const out = await this.call({ operation: 'DescribeAutoScalingGroups', group: name }, opts, (abortSignal) =>
      this.asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [name] }), { abortSignal }),
    );
    // Deleted groups linger for a while with a Status of "Delete in progress".
    return out.AutoScalingGroups?.find((g) => g.AutoScalingGroupName === name && g.Status === undefined);
  }

  /** The driver's launch template, ensured once per process (and again after a failure). */
  private launchTemplate(): Promise<string> {
    this.template ??= ensureLaunchTemplate(this.ec2, this.cfg).catch((err: unknown) => {
      this.template = undefined;
      throw err;
    });
    return this.template;
  }

  private call<T>(info: Omit<CallInfo, 'service'>, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return awsCall(this.asg, this.cfg, { ...info, service: 'autoscaling' }, opts, run);
  }

  close(): void {
    this.ec2.destroy();
    this.asg.destroy();
  }
}
