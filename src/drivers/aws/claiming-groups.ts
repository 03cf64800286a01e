/**
 * The claiming groups' side of the Auto Scaling design (see groups.ts): one group per claiming
 * group, created on a claim's path at most once per process, an instance moved into it from a
 * pool's group (detach, then attach), and empty ones swept. What this process knows of each such
 * group (its max and size) saves a describe on every move.
 */
import {
  AttachInstancesCommand,
  CreateAutoScalingGroupCommand,
  DescribeAutoScalingGroupsCommand,
  DescribeAutoScalingInstancesCommand,
  DetachInstancesCommand,
  SuspendProcessesCommand,
  UpdateAutoScalingGroupCommand,
  type AutoScalingClient,
  type AutoScalingGroup,
} from '@aws-sdk/client-auto-scaling';
import { BerthError, errorMessage } from '../../core/errors.js';
import type { OperationOptions } from '../types.js';
import { TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { checkPart, TAG_GROUP } from './group-names.js';
import { callTally, type CallInfo } from './sdk.js';

/**
 * A claiming group's instances all come from pools by AttachInstances: it must never launch one
 * (an instance it launched would have a pool's boot script but be in no pool, and nothing would
 * admit it) nor replace an unhealthy one behind berth's back.
 */
const SUSPENDED_IN_USER_GROUPS = ['AZRebalance', 'Launch', 'ReplaceUnhealthy'];
/** A new claiming group's first max: room for its first two hosts without a raise. */
const USER_GROUP_FIRST_MAX = 2;

/** What moveInstance left behind when it failed after the detach. */
export type MovedInstanceState = 'returned-to-pool' | 'detached';

/** What this process knows of a user group, so a move need not describe it (see moveInstance). */
interface UserGroupInfo {
  max: number;
  size: number;
}

/** What the claiming groups use of AwsGroups: its clients and its group primitives. */
export interface GroupsContext {
  readonly cfg: ResolvedAwsConfig;
  readonly asg: AutoScalingClient;
  call<T>(info: Omit<CallInfo, 'service'>, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T>;
  describe(name: string, opts: OperationOptions | undefined): Promise<AutoScalingGroup | undefined>;
  ensureGroup(name: string, want: { min: number; max: number; desired: number }, tag: { Key: string; Value: string }, opts: OperationOptions | undefined, update: boolean): Promise<AutoScalingGroup | undefined>;
  removeGroup(name: string, opts?: OperationOptions): Promise<void>;
}

export class ClaimingGroups {
  private readonly userGroups = new Map<string, UserGroupInfo>();
  /** When this process last moved an instance into each claiming group's group (the sweep spares those). */
  private readonly lastUsed = new Map<string, number>();
  /** Per user group: the tail of its chain of max-raise + attach steps. */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(private readonly ctx: GroupsContext) {}

  userGroupName(group: string): string {
    return `${this.ctx.cfg.name}-group-${checkPart('group', group)}`;
  }

  /** The group was deleted: nothing known of it is true any more. */
  forget(name: string): void {
    this.userGroups.delete(name);
  }

  /** An instance left the group (detached): one fewer. */
  noteDetached(name: string): void {
    const info = this.userGroups.get(name);
    if (info && info.size > 0) info.size -= 1;
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
      await this.ctx.call({ operation: 'CreateAutoScalingGroup', group: name }, opts, (abortSignal) =>
        this.ctx.asg.send(
          new CreateAutoScalingGroupCommand({
            AutoScalingGroupName: name,
            LaunchTemplate: { LaunchTemplateName: templateName, Version: '$Latest' },
            MinSize: 0,
            MaxSize: USER_GROUP_FIRST_MAX,
            DesiredCapacity: 0,
            ...(this.ctx.cfg.subnetIds.length ? { VPCZoneIdentifier: this.ctx.cfg.subnetIds.join(',') } : {}),
            Tags: [
              { Key: TAG_MANAGED_BY, Value: this.ctx.cfg.name, PropagateAtLaunch: true },
              { Key: TAG_GROUP, Value: group, PropagateAtLaunch: true },
            ],
          }),
          { abortSignal },
        ),
      );
      if (!this.userGroups.has(name)) this.userGroups.set(name, { max: USER_GROUP_FIRST_MAX, size: 0 });
      // Not waited for, so not the claim's (see callTally).
      callTally.exit(() => {
        void this.ctx.call({ operation: 'SuspendProcesses', group: name }, undefined, (abortSignal) =>
          this.ctx.asg.send(new SuspendProcessesCommand({ AutoScalingGroupName: name, ScalingProcesses: SUSPENDED_IN_USER_GROUPS }), { abortSignal }),
        ).catch((err: unknown) => this.ctx.cfg.logger.warn({ group: name, err: errorMessage(err) }, "could not suspend the claiming group's processes"));
      });
    } catch (err) {
      if (!hasAwsCode(err, 'AlreadyExists')) throw err;
      const found = await this.ctx.describe(name, opts);
      if (!found) throw new BerthError('conflict', `Auto Scaling group ${name} is being deleted`, 'Retry the claim in a minute.', { group: name });
      this.userGroups.set(name, { max: found.MaxSize ?? 0, size: found.Instances?.length ?? 0 });
    }
    return name;
  }

  /**
   * Deletes claiming groups' groups that hold no instance, are not in `keep` (berth group names)
   * and were not used by this process in the last `quietMs` (a claim may be about to attach).
   * Auto Scaling groups are a regional quota (500 by default): one per user would run out.
   */
  async sweepUserGroups(keep: Set<string>, quietMs = 10 * 60_000, opts?: OperationOptions): Promise<string[]> {
    const prefix = `${this.ctx.cfg.name}-group-`;
    const removed: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.ctx.call({ operation: 'DescribeAutoScalingGroups' }, opts, (abortSignal) =>
        this.ctx.asg.send(new DescribeAutoScalingGroupsCommand({ Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [this.ctx.cfg.name] }], MaxRecords: 100, ...(token ? { NextToken: token } : {}) }), { abortSignal }),
      );
      for (const group of page.AutoScalingGroups ?? []) {
        const name = group.AutoScalingGroupName ?? '';
        const berthGroup = group.Tags?.find((t) => t.Key === TAG_GROUP)?.Value;
        if (!name.startsWith(prefix) || berthGroup === undefined || keep.has(berthGroup) || group.Status !== undefined) continue;
        if ((group.Instances ?? []).length > 0 || (group.DesiredCapacity ?? 0) > 0) continue;
        if (Date.now() - (this.lastUsed.get(name) ?? 0) < quietMs || Date.now() - (group.CreatedTime?.getTime() ?? 0) < quietMs) continue;
        await this.ctx.removeGroup(name, opts);
        removed.push(name);
      }
      token = page.NextToken;
    } while (token);
    return removed;
  }

  /** The claiming group's group, empty: its instances come from pools by AttachInstances. */
  async ensureUserGroup(group: string, opts?: OperationOptions): Promise<string> {
    const name = this.userGroupName(group);
    const found = await this.ctx.ensureGroup(name, { min: 0, max: 0, desired: 0 }, { Key: TAG_GROUP, Value: group }, opts, false);
    this.userGroups.set(name, { max: found?.MaxSize ?? 0, size: found?.Instances?.length ?? 0 });
    return name;
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
    const detached = await this.ctx.call({ operation: 'DetachInstances', group: fromPoolGroup, instanceId }, opts, (abortSignal) =>
      this.ctx.asg.send(new DetachInstancesCommand({ AutoScalingGroupName: fromPoolGroup, InstanceIds: [instanceId], ShouldDecrementDesiredCapacity: false }), { abortSignal }),
    );
    // AWS refuses to detach an instance that is not in the group; moto answers with no activity.
    // Either way the instance left the pool's group before this claim could move it: taken by
    // another claim, or terminated by its group (a scale-in, a health replacement) while the store
    // still counted it ready. It is not attached anywhere: a terminated instance in a user's group
    // would be handed out as a host. One call, off the normal path, says which.
    if ((detached.Activities ?? []).length === 0) {
      const where = await this.ctx.call({ operation: 'DescribeAutoScalingInstances', instanceId }, opts, (abortSignal) =>
        this.ctx.asg.send(new DescribeAutoScalingInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal }),
      );
      const group = where.AutoScalingInstances?.[0]?.AutoScalingGroupName;
      throw new BerthError(
        'conflict',
        group !== undefined
          ? `instance ${instanceId} is in Auto Scaling group ${group}, not ${fromPoolGroup}: another claim took it`
          : `instance ${instanceId} is in no Auto Scaling group any more, not ${fromPoolGroup}: its group let it go (terminated or detached it)`,
        'Pick another instance of the pool.',
        { instanceId, ...(group !== undefined ? { group } : {}) },
      );
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
    this.ctx.cfg.logger.warn({ instanceId, group: toUserGroup, err: errorMessage(firstErr) }, 'attach failed after detach; retrying once');
    try {
      await this.attach(instanceId, toUserGroup, true, undefined);
      return;
    } catch (err) {
      firstErr = err;
    }
    let state: MovedInstanceState = 'returned-to-pool';
    try {
      await this.ctx.call({ operation: 'AttachInstances', group: fromPoolGroup, instanceId }, undefined, (abortSignal) =>
        this.ctx.asg.send(new AttachInstancesCommand({ AutoScalingGroupName: fromPoolGroup, InstanceIds: [instanceId] }), { abortSignal }),
      );
    } catch (err) {
      state = 'detached';
      this.ctx.cfg.logger.warn({ instanceId, group: fromPoolGroup, err: errorMessage(err) }, 'could not put the instance back into its pool group');
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
        const found = await this.ctx.describe(group, opts);
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
        await this.ctx.call({ operation: 'UpdateAutoScalingGroup', group }, opts, (abortSignal) => this.ctx.asg.send(new UpdateAutoScalingGroupCommand({ AutoScalingGroupName: group, MaxSize: max }), { abortSignal }));
        info.max = max;
      }
      await this.ctx.call({ operation: 'AttachInstances', group, instanceId }, opts, (abortSignal) =>
        this.ctx.asg.send(new AttachInstancesCommand({ AutoScalingGroupName: group, InstanceIds: [instanceId] }), { abortSignal }),
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
}
