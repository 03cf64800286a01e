/**
 * The seeds' Auto Scaling design: one group per pool keeps `size` warm instances from the driver's
 * launch template; one group per claiming group holds what its claims took. A claim moves an
 * InService instance from the pool's group to the user's: DetachInstances without decrementing the
 * pool's desired capacity (so the pool launches the replacement itself), then AttachInstances. The
 * database claim stays the lock that picks the instance (fleet.ts is the driver's PoolFleet on this).
 */
import {
  AttachInstancesCommand,
  DescribeAutoScalingInstancesCommand,
  CreateAutoScalingGroupCommand,
  DeleteAutoScalingGroupCommand,
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
import { awsCall, CallCounter, callTally, createAutoScalingClient, createEc2Client, type CallInfo, type RequestHandler } from './sdk.js';

export const TAG_POOL = 'berth:pool';
export const TAG_GROUP = 'berth:group';
/** Pool and group names go into group names, tags and messages: keep them plain. */
const PART_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/**
 * AZRebalance terminates instances to even out zones: it could kill a warm instance a claim is
 * detaching, or a claimed host. berth places hosts itself, so groups never rebalance.
 */
const SUSPENDED = ['AZRebalance'];
/**
 * A claiming group's instances all come from pools by AttachInstances: it must never launch one
 * (an instance it launched would have a pool's boot script but be in no pool, and nothing would
 * admit it) nor replace an unhealthy one behind berth's back.
 */
const SUSPENDED_IN_USER_GROUPS = ['AZRebalance', 'Launch', 'ReplaceUnhealthy'];
/** A new claiming group's first max: room for its first two hosts without a raise. */
const USER_GROUP_FIRST_MAX = 2;

export interface AwsGroupsOptions {
  /** For tests: an SDK request handler instead of the network (used by both clients). */
  requestHandler?: RequestHandler;
}

/** What moveInstance left behind when it failed after the detach. */
export type MovedInstanceState = 'returned-to-pool' | 'detached';

/** What this process knows of a user group, so a move need not describe it (see moveInstance). */
interface UserGroupInfo {
  max: number;
  size: number;
}

export class AwsGroups {
  private readonly cfg: ResolvedAwsConfig;
  private readonly ec2: EC2Client;
  private readonly asg: AutoScalingClient;
  private readonly counter = new CallCounter();
  private template: Promise<string> | undefined;
  private readonly userGroups = new Map<string, UserGroupInfo>();
  /** When this process last moved an instance into each claiming group's group (the sweep spares those). */
  private readonly lastUsed = new Map<string, number>();
  /** Per user group: the tail of its chain of max-raise + attach steps. */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(config: AwsDriverConfig, options: AwsGroupsOptions = {}) {
    this.cfg = resolveAwsConfig(config);
    this.ec2 = createEc2Client(this.cfg, options.requestHandler);
    this.asg = createAutoScalingClient(this.cfg, options.requestHandler);
    this.counter.attach(this.ec2);
    this.counter.attach(this.asg);
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
    return `${this.cfg.name}-group-${checkPart('group', group)}`;
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
   * The claiming group's group on a claim's path: nothing when this process knows it, else one
   * CreateAutoScalingGroup (max 2), or, when it exists already, one describe. Its processes are
   * suspended after, off the path (a claim's budget is 3 calls).
   */
  async userGroupForClaim(group: string, templateName: string, opts?: OperationOptions): Promise<string> {
    const name = this.userGroupName(group);
    this.lastUsed.set(name, Date.now());
    if (this.userGroups.has(name)) return name;
    try {
      await this.call({ operation: 'CreateAutoScalingGroup', group: name }, opts, (abortSignal) =>
        this.asg.send(
          new CreateAutoScalingGroupCommand({
            AutoScalingGroupName: name,
            LaunchTemplate: { LaunchTemplateName: templateName, Version: '$Latest' },
            MinSize: 0,
            MaxSize: USER_GROUP_FIRST_MAX,
            DesiredCapacity: 0,
            ...(this.cfg.subnetIds.length ? { VPCZoneIdentifier: this.cfg.subnetIds.join(',') } : {}),
            Tags: [
              { Key: TAG_MANAGED_BY, Value: this.cfg.name, PropagateAtLaunch: true },
              { Key: TAG_GROUP, Value: group, PropagateAtLaunch: true },
            ],
          }),
          { abortSignal },
        ),
      );
      if (!this.userGroups.has(name)) this.userGroups.set(name, { max: USER_GROUP_FIRST_MAX, size: 0 });
      // Not waited for, so not the claim's (see callTally).
      callTally.exit(() => {
        void this.call({ operation: 'SuspendProcesses', group: name }, undefined, (abortSignal) =>
          this.asg.send(new SuspendProcessesCommand({ AutoScalingGroupName: name, ScalingProcesses: SUSPENDED_IN_USER_GROUPS }), { abortSignal }),
        ).catch((err: unknown) => this.cfg.logger.warn({ group: name, err: errorMessage(err) }, "could not suspend the claiming group's processes"));
      });
    } catch (err) {
      if (!hasAwsCode(err, 'AlreadyExists')) throw err;
      const found = await this.describe(name, opts);
      if (!found) throw new BerthError('conflict', `Auto Scaling group ${name} is being deleted`, 'Retry the claim in a minute.', { group: name });
      this.userGroups.set(name, { max: found.MaxSize ?? 0, size: found.Instances?.length ?? 0 });
    }
    return name;
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
   * Deletes claiming groups' groups that hold no instance, are not in `keep` (berth group names)
   * and were not used by this process in the last `quietMs` (a claim may be about to attach).
   * Auto Scaling groups are a regional quota (500 by default): one per user would run out.
   */
  async sweepUserGroups(keep: Set<string>, quietMs = 10 * 60_000, opts?: OperationOptions): Promise<string[]> {
    const prefix = `${this.cfg.name}-group-`;
    const removed: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call({ operation: 'DescribeAutoScalingGroups' }, opts, (abortSignal) =>
        this.asg.send(new DescribeAutoScalingGroupsCommand({ Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [this.cfg.name] }], MaxRecords: 100, ...(token ? { NextToken: token } : {}) }), { abortSignal }),
      );
      for (const group of page.AutoScalingGroups ?? []) {
        const name = group.AutoScalingGroupName ?? '';
        const berthGroup = group.Tags?.find((t) => t.Key === TAG_GROUP)?.Value;
        if (!name.startsWith(prefix) || berthGroup === undefined || keep.has(berthGroup) || group.Status !== undefined) continue;
        if ((group.Instances ?? []).length > 0 || (group.DesiredCapacity ?? 0) > 0) continue;
        if (Date.now() - (this.lastUsed.get(name) ?? 0) < quietMs || Date.now() - (group.CreatedTime?.getTime() ?? 0) < quietMs) continue;
        await this.removeGroup(name, opts);
        removed.push(name);
      }
      token = page.NextToken;
    } while (token);
    return removed;
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
    const info = this.userGroups.get(group);
    if (info && info.size > 0) info.size -= 1;
  }

  /** The group an instance is in and its lifecycle state there, or undefined. 1 call. */
  async membership(instanceId: string, opts?: OperationOptions): Promise<{ group: string; lifecycleState: string } | undefined> {
    const where = await this.call({ operation: 'DescribeAutoScalingInstances', instanceId }, opts, (abortSignal) =>
      this.asg.send(new DescribeAutoScalingInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal }),
    );
    const found = where.AutoScalingInstances?.find((i) => i.InstanceId === instanceId);
    return found?.AutoScalingGroupName ? { group: found.AutoScalingGroupName, lifecycleState: found.LifecycleState ?? 'unknown' } : undefined;
  }

  /** The claiming group's group, empty: its instances come from pools by AttachInstances. */
  async ensureUserGroup(group: string, opts?: OperationOptions): Promise<string> {
    const name = this.userGroupName(group);
    const found = await this.ensureGroup(name, { min: 0, max: 0, desired: 0 }, { Key: TAG_GROUP, Value: group }, opts, false);
    this.userGroups.set(name, { max: found?.MaxSize ?? 0, size: found?.Instances?.length ?? 0 });
    return name;
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

  /**
   * The AWS part of a claim. Calls: DetachInstances (1), UpdateAutoScalingGroup to raise the user
   * group's max only when this process knows the attach would exceed it (0 or 1), AttachInstances
   * (1, which raises the user group's desired capacity itself): ≤ 3, no polling. A user group this
   * process has not ensured costs one describe more. If the attach fails after the detach, it is
   * retried once; then the instance goes back to the pool group (its headroom) and the move fails
   * with `claim_failed`, details.state = 'returned-to-pool'; if even that fails, details.state =
   * 'detached': the instance is in no group and the caller must terminate it.
   */
  async moveInstance(instanceId: string, fromPoolGroup: string, toUserGroup: string, opts?: OperationOptions): Promise<void> {
    const detached = await this.call({ operation: 'DetachInstances', group: fromPoolGroup, instanceId }, opts, (abortSignal) =>
      this.asg.send(new DetachInstancesCommand({ AutoScalingGroupName: fromPoolGroup, InstanceIds: [instanceId], ShouldDecrementDesiredCapacity: false }), { abortSignal }),
    );
    // AWS refuses to detach an instance that is not in the group. moto answers with no activity,
    // both then and, under concurrent detaches, for one it did detach (its group lists are not
    // locked). So no activity is asked about (one call, off the normal path): an instance in a group
    // belongs to someone else, and attaching it would put it in two; one in no group is ours.
    if ((detached.Activities ?? []).length === 0) {
      const where = await this.call({ operation: 'DescribeAutoScalingInstances', instanceId }, opts, (abortSignal) =>
        this.asg.send(new DescribeAutoScalingInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal }),
      );
      const group = where.AutoScalingInstances?.[0]?.AutoScalingGroupName;
      if (group !== undefined) {
        throw new BerthError('conflict', `instance ${instanceId} is in Auto Scaling group ${group}, not ${fromPoolGroup}: another claim took it`, 'Pick another instance of the pool.', { instanceId, group });
      }
    }
    let firstErr: unknown;
    try {
      await this.attach(instanceId, toUserGroup, false, opts);
      return;
    } catch (err) {
      firstErr = err;
    }
    // The instance is in no group now. A cancelled caller still must not lose it, so the rescue
    // runs without the caller's signal (bounded by callTimeoutMs per call).
    this.cfg.logger.warn({ instanceId, group: toUserGroup, err: errorMessage(firstErr) }, 'attach failed after detach; retrying once');
    try {
      await this.attach(instanceId, toUserGroup, true, undefined);
      return;
    } catch (err) {
      firstErr = err;
    }
    let state: MovedInstanceState = 'returned-to-pool';
    try {
      await this.call({ operation: 'AttachInstances', group: fromPoolGroup, instanceId }, undefined, (abortSignal) =>
        this.asg.send(new AttachInstancesCommand({ AutoScalingGroupName: fromPoolGroup, InstanceIds: [instanceId] }), { abortSignal }),
      );
    } catch (err) {
      state = 'detached';
      this.cfg.logger.warn({ instanceId, group: fromPoolGroup, err: errorMessage(err) }, 'could not put the instance back into its pool group');
    }
    throw new BerthError(
      'claim_failed',
      state === 'detached'
        ? `instance ${instanceId} was detached from ${fromPoolGroup} but could be attached neither to ${toUserGroup} nor back to the pool: it is in no group now`
        : `instance ${instanceId} could not be attached to ${toUserGroup} and was put back into ${fromPoolGroup}`,
      state === 'detached' ? 'Terminate the instance (it belongs to no group and nothing will replace or remove it), then retry the claim.' : `Retry the claim; the cause: ${errorMessage(firstErr)}`,
      { instanceId, state, fromGroup: fromPoolGroup, toGroup: toUserGroup },
      { cause: firstErr },
    );
  }

  /**
   * Raises the user group's max when needed, then attaches. Serialised per user group: two moves
   * raising the same max concurrently would both compute size + 1 and the second attach would fail.
   * `refresh` (the retry) re-reads the group, in case another server changed it.
   */
  private attach(instanceId: string, group: string, refresh: boolean, opts: OperationOptions | undefined): Promise<void> {
    const step = async (): Promise<void> => {
      let info = this.userGroups.get(group);
      if (!info || refresh) {
        const found = await this.describe(group, opts);
        if (!found) throw new BerthError('not_found', `Auto Scaling group ${group} does not exist`, 'Ensure the claiming group\'s group first (ensureUserGroup).', { group, instanceId });
        info = { max: found.MaxSize ?? 0, size: found.Instances?.length ?? 0 };
        this.userGroups.set(group, info);
        // The first attach may have succeeded with its answer lost (timeout): attaching again would fail.
        if (found.Instances?.some((i) => i.InstanceId === instanceId)) return;
      }
      if (info.size + 1 > info.max) {
        // Doubling (from 2) keeps raises rare for a group that grows, so most moves cost 2 calls.
        // The user group's max bounds nothing berth relies on: claims are counted in the database.
        const max = Math.max(info.size + 1, info.max * 2, 2);
        await this.call({ operation: 'UpdateAutoScalingGroup', group }, opts, (abortSignal) => this.asg.send(new UpdateAutoScalingGroupCommand({ AutoScalingGroupName: group, MaxSize: max }), { abortSignal }));
        info.max = max;
      }
      await this.call({ operation: 'AttachInstances', group, instanceId }, opts, (abortSignal) =>
        this.asg.send(new AttachInstancesCommand({ AutoScalingGroupName: group, InstanceIds: [instanceId] }), { abortSignal }),
      );
      info.size += 1;
    };
    const run = (this.chains.get(group) ?? Promise.resolve()).then(step, step);
    const tail = run.catch(() => undefined);
    this.chains.set(group, tail);
    void tail.then(() => {
      if (this.chains.get(group) === tail) this.chains.delete(group);
    });
    return run;
  }

  /** Deletes the group and (ForceDelete) terminates its instances. Idempotent: 1 call. */
  async removeGroup(name: string, opts?: OperationOptions): Promise<void> {
    this.userGroups.delete(name);
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

function checkPart(what: string, value: string): string {
  if (!PART_RE.test(value)) throw new BerthError('validation_failed', `${what} name ${JSON.stringify(value)} cannot name an Auto Scaling group`, 'Use 1-128 letters, digits, dots, hyphens or underscores, starting with a letter or digit.');
  return value;
}
