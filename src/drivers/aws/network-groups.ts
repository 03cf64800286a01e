/**
 * Hosts of one group reach each other and no other host, on EC2 (HostDriver.setNetworkGroups).
 * Security groups only allow, so the hosts' own groups (the driver's `securityGroupIds`, a pool's
 * `template.aws` override) must not let one instance reach another: berth adds, for each group of
 * two or more hosts, a security group of its own whose only rules let its holders reach each other
 * (in and out, every protocol). A host alone in its group, or in none, holds none of them.
 *
 * These groups are named `<name>-net-<suffix>` and tagged `berth:managed-by` and
 * `berth:network-group`. Which one is a group's is read from the instances themselves (nothing is
 * stored): a group keeps the one most of its hosts hold, as long as no host outside it holds it too;
 * otherwise it gets a new one. One no live instance holds any more is deleted: by the change that
 * left it empty, or by a sweep some time after a host's termination (EC2 refuses while an instance
 * shutting down still holds it; the sweep tries again later), or by `berth down`.
 */
import { randomBytes } from 'node:crypto';
import {
  AuthorizeSecurityGroupEgressCommand,
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DeleteSecurityGroupCommand,
  DescribeSecurityGroupsCommand,
  ModifyInstanceAttributeCommand,
  RevokeSecurityGroupEgressCommand,
  type EC2Client,
  type Filter,
  type Instance,
} from '@aws-sdk/client-ec2';
import { errorMessage } from '../../core/errors.js';
import { settleAll } from '../../core/settle-all.js';
import type { GroupMember, OperationOptions } from '../types.js';
import { TAG_HOST_ID, TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { instanceIdOf } from './driver-data.js';
import { hasAwsCode } from './errors.js';
import type { CallInfo } from './sdk.js';

export const TAG_NETWORK_GROUP = 'berth:network-group';
/** Instance states whose network interface still holds its security groups. */
const HOLDING_STATES = ['pending', 'running', 'stopping', 'stopped'];
/** EC2 takes at most this many values per filter. */
const FILTER_VALUES = 200;
/** How long `berth down` waits for instances shutting down to let go of a network group. */
const TEARDOWN_WAIT_MS = 120_000;
const TEARDOWN_POLL_MS = 3_000;
/** A sweep after a termination: EC2 takes ~a minute to let go of a terminated instance's groups. */
const SWEEP_DELAY_MS = 30_000;
const SWEEP_TRIES = 10;

export interface AwsNetworkGroupsDeps {
  ec2: EC2Client;
  cfg: ResolvedAwsConfig;
  call<T>(info: CallInfo, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T>;
  /** This driver's instances matching `filters` (the driver's own tag filter is added), all pages. */
  describe(filters: Filter[], opts?: OperationOptions): Promise<Instance[]>;
  /** How long after a termination the sweep runs; default 30 s. */
  sweepDelayMs?: number;
}

interface Plan {
  /** Instance id -> the network group it should hold (undefined: none). */
  wanted: Map<string, string | undefined>;
  /** Groups to create first: placeholder id -> the VPC. */
  create: Map<string, string>;
}

export class AwsNetworkGroups {
  /** Changes run one at a time: two claims into one group must not make it two security groups. */
  private queue: Promise<void> = Promise.resolve();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepTries = 0;
  private closed = false;

  constructor(private readonly deps: AwsNetworkGroupsDeps) {}

  /** A host was terminated: the network group it held may be nobody's now. Sweeps a while later. */
  afterTermination(): void {
    this.sweepTries = 0;
    this.scheduleSweep();
  }

  private scheduleSweep(): void {
    if (this.closed || this.sweepTimer) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      this.sweep().then(
        (left) => {
          if (left > 0 && ++this.sweepTries < SWEEP_TRIES) this.scheduleSweep();
        },
        (err: unknown) => this.deps.cfg.logger.warn({ err: errorMessage(err) }, 'sweeping network groups nobody holds failed'),
      );
    }, this.deps.sweepDelayMs ?? SWEEP_DELAY_MS);
    this.sweepTimer.unref();
  }

  /** Deletes the network groups no live instance holds. How many such groups EC2 still refused (an instance shutting down holds it). */
  sweep(opts: OperationOptions = {}): Promise<number> {
    const step = this.queue.then(async () => {
      const groups = (await this.listNetGroups(opts)).map((g) => g.GroupId ?? '').filter(Boolean);
      const held = new Set<string>();
      for (let at = 0; at < groups.length; at += FILTER_VALUES) {
        for (const i of await this.deps.describe([liveFilter(), { Name: 'instance.group-id', Values: groups.slice(at, at + FILTER_VALUES) }], opts)) this.netGroupsOf(i).forEach((g) => held.add(g));
      }
      let refused = 0;
      for (const groupId of groups) if (!held.has(groupId) && !(await this.deleteGroup(groupId, opts))) refused++;
      return refused;
    });
    this.queue = step.then(() => undefined, () => undefined);
    return step;
  }

  close(): void {
    this.closed = true;
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  /** See HostDriver.setNetworkGroups. */
  set(groups: GroupMember[][], opts: OperationOptions & { all?: boolean } = {}): Promise<void> {
    const step = this.queue.then(() => this.apply(groups, opts.all ?? false, opts));
    this.queue = step.catch(() => undefined);
    return step;
  }

  private async apply(groups: GroupMember[][], all: boolean, opts: OperationOptions): Promise<void> {
    const ids = [...new Set(groups.flat().flatMap((m) => instanceIdOf(m.driverData) ?? []))];
    const known = new Map<string, Instance>();
    const add = (list: Instance[]): void => list.forEach((i) => i.InstanceId && known.set(i.InstanceId, i));
    add(all ? await this.deps.describe([liveFilter()], opts) : await this.describeIds(ids, opts));
    // Who else holds the network groups these instances hold now: a group is only kept when none of
    // its holders is left outside it.
    const held = [...new Set([...known.values()].flatMap((i) => this.netGroupsOf(i)))];
    if (!all) for (let at = 0; at < held.length; at += FILTER_VALUES) add(await this.deps.describe([liveFilter(), { Name: 'instance.group-id', Values: held.slice(at, at + FILTER_VALUES) }], opts));
    // A member counts while its instance lives (AWS never resets a host or reuses an instance id; a
    // pool's instance carries no host id tag, one launched alone must carry the member's).
    const members = groups.map((list) => list.flatMap((m) => ((i) => (i && (hostIdOf(i) ?? m.id) === m.id ? [i] : []))(known.get(instanceIdOf(m.driverData) ?? ''))));
    const plan = this.plan(members, [...known.values()], all);
    // Independent calls go out together: a claim waits for this (a second host of a group: a
    // describe, the group's creation, its three rules, both hosts' changes: 4 round trips, not 8).
    const created = new Map<string, string>();
    await settleAll([...plan.create].map(async ([placeholder, vpcId]) => void created.set(placeholder, await this.createGroup(vpcId, opts))));
    await settleAll(
      [...plan.wanted].flatMap(([instanceId, net]) => {
        const instance = known.get(instanceId);
        return instance ? [this.hold(instance, net === undefined ? undefined : (created.get(net) ?? net), opts)] : [];
      }),
    );
    // What nobody holds any more goes: with `all`, every network group of this driver.
    const after = new Set([...known.values()].flatMap((i) => (plan.wanted.has(i.InstanceId ?? '') ? [] : this.netGroupsOf(i))));
    for (const net of plan.wanted.values()) if (net) after.add(created.get(net) ?? net);
    const candidates = all ? (await this.listNetGroups(opts)).map((g) => g.GroupId ?? '') : held;
    for (const groupId of candidates) if (groupId && !after.has(groupId)) await this.deleteGroup(groupId, opts);
  }

  /** Which network group each moving instance should hold, and which groups must be made first. */
  private plan(members: Instance[][], known: Instance[], all: boolean): Plan {
    const wanted = new Map<string, string | undefined>();
    const create = new Map<string, string>();
    const holders = new Map<string, Set<string>>();
    for (const i of known) for (const g of this.netGroupsOf(i)) holders.set(g, new Set([...(holders.get(g) ?? []), i.InstanceId ?? '']));
    for (const group of members) {
      // Security groups belong to one VPC: hosts of a group in two VPCs are two groups to EC2.
      const byVpc = new Map<string, Instance[]>();
      for (const i of group) byVpc.set(i.VpcId ?? '', [...(byVpc.get(i.VpcId ?? '') ?? []), i]);
      for (const [vpcId, list] of byVpc) {
        const ids = new Set(list.map((i) => i.InstanceId ?? ''));
        if (ids.size < 2) {
          for (const id of ids) wanted.set(id, undefined);
          continue;
        }
        const count = (g: string): number => list.filter((i) => this.netGroupsOf(i).includes(g)).length;
        const keep = [...new Set(list.flatMap((i) => this.netGroupsOf(i)))]
          .filter((g) => [...(holders.get(g) ?? [])].every((holder) => ids.has(holder)) && ![...wanted.values()].includes(g))
          .sort((a, b) => count(b) - count(a))[0];
        const net = keep ?? `new:${create.size}`;
        if (!keep) create.set(net, vpcId);
        for (const id of ids) wanted.set(id, net);
      }
    }
    // The whole truth: a host in no group given reaches no other host.
    if (all) for (const i of known) if (i.InstanceId && !wanted.has(i.InstanceId)) wanted.set(i.InstanceId, undefined);
    return { wanted, create };
  }

  /** Makes `instance` hold `net` as its only network group, keeping its other security groups. */
  private async hold(instance: Instance, net: string | undefined, opts: OperationOptions): Promise<void> {
    const now = (instance.SecurityGroups ?? []).map((g) => g.GroupId ?? '').filter(Boolean);
    const own = now.filter((g) => !this.netGroupsOf(instance).includes(g));
    const next = net ? [...own, net] : own;
    if (next.length === now.length && next.every((g) => now.includes(g))) return;
    if (next.length === 0) {
      // EC2 wants at least one; an instance with no group of its own is not berth's to arrange.
      this.deps.cfg.logger.warn({ instanceId: instance.InstanceId }, 'instance holds no security group besides its network group; left as it is');
      return;
    }
    try {
      await this.deps.call({ operation: 'ModifyInstanceAttribute', ...(instance.InstanceId ? { instanceId: instance.InstanceId } : {}) }, opts, (abortSignal) =>
        this.deps.ec2.send(new ModifyInstanceAttributeCommand({ InstanceId: instance.InstanceId, Groups: next }), { abortSignal }),
      );
    } catch (err) {
      // Terminated meanwhile: it reaches nobody any more, which is what a stale member gets.
      if (hasAwsCode(err, 'InvalidInstanceID.NotFound', 'IncorrectInstanceState')) return;
      throw err;
    }
  }

  private async createGroup(vpcId: string, opts: OperationOptions): Promise<string> {
    const name = `${this.namePrefix()}${randomBytes(6).toString('hex')}`;
    const out = await this.deps.call({ operation: 'CreateSecurityGroup' }, opts, (abortSignal) =>
      this.deps.ec2.send(
        new CreateSecurityGroupCommand({
          GroupName: name,
          Description: `berth ${this.deps.cfg.name}: the hosts of one group reach each other`,
          ...(vpcId ? { VpcId: vpcId } : {}),
          TagSpecifications: [{ ResourceType: 'security-group', Tags: [{ Key: TAG_MANAGED_BY, Value: this.deps.cfg.name }, { Key: TAG_NETWORK_GROUP, Value: 'true' }, { Key: 'Name', Value: name }] }],
        }),
        { abortSignal },
      ),
    );
    const groupId = out.GroupId ?? '';
    try {
      const self = [{ IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: groupId }] }];
      // A new group lets its holders send anywhere; security groups add up, so that would widen
      // whatever the hosts' own groups allow out. It lets them send to each other only. (The
      // group is no instance's yet: the order of these three does not matter.)
      await settleAll([
        this.deps.call({ operation: 'AuthorizeSecurityGroupIngress' }, opts, (abortSignal) => this.deps.ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: self }), { abortSignal })),
        this.deps.call({ operation: 'AuthorizeSecurityGroupEgress' }, opts, (abortSignal) => this.deps.ec2.send(new AuthorizeSecurityGroupEgressCommand({ GroupId: groupId, IpPermissions: self }), { abortSignal })),
        this.deps.call({ operation: 'RevokeSecurityGroupEgress' }, opts, (abortSignal) =>
          this.deps.ec2.send(new RevokeSecurityGroupEgressCommand({ GroupId: groupId, IpPermissions: [{ IpProtocol: '-1', IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] }), { abortSignal }),
        ),
      ]);
    } catch (err) {
      await this.deleteGroup(groupId, {});
      throw err;
    }
    this.deps.cfg.logger.debug({ groupId, name, vpcId }, 'network group created');
    return groupId;
  }

  /** Deletes a network group; one an instance still holds (shutting down) is left for later. Whether it went. */
  private async deleteGroup(groupId: string, opts: OperationOptions): Promise<boolean> {
    try {
      await this.deps.call({ operation: 'DeleteSecurityGroup' }, opts, (abortSignal) => this.deps.ec2.send(new DeleteSecurityGroupCommand({ GroupId: groupId }), { abortSignal }));
      this.deps.cfg.logger.debug({ groupId }, 'network group deleted');
      return true;
    } catch (err) {
      if (hasAwsCode(err, 'InvalidGroup.NotFound')) return true;
      if (hasAwsCode(err, 'DependencyViolation')) return false;
      this.deps.cfg.logger.warn({ groupId, err: errorMessage(err) }, 'could not delete a network group nobody holds');
      return false;
    }
  }

  /**
   * `berth down`: deletes the network groups no live instance holds, waiting (up to 2 min) for
   * instances shutting down to let go of theirs. True when none is left and no instance of this
   * driver lives; a group still held after the wait is deleted by the next `berth down`.
   */
  async teardown(): Promise<boolean> {
    const live = await this.deps.describe([liveFilter()]);
    const heldByLive = new Set(live.flatMap((i) => this.netGroupsOf(i)));
    const deadline = Date.now() + TEARDOWN_WAIT_MS;
    let left = (await this.listNetGroups({})).map((g) => g.GroupId ?? '').filter((g) => g && !heldByLive.has(g));
    for (;;) {
      const kept: string[] = [];
      for (const groupId of left) if (!(await this.deleteGroup(groupId, {}))) kept.push(groupId);
      left = kept;
      if (left.length === 0 || Date.now() + TEARDOWN_POLL_MS > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, TEARDOWN_POLL_MS));
    }
    if (left.length > 0) this.deps.cfg.logger.warn({ groups: left }, 'network groups still held by instances shutting down; berth down again deletes them');
    return live.length === 0 && heldByLive.size === 0 && left.length === 0;
  }

  /** Every network group this driver made (all VPCs it used). */
  async listNetGroups(opts: OperationOptions) {
    const out = await this.deps.call({ operation: 'DescribeSecurityGroups' }, opts, (abortSignal) =>
      this.deps.ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [this.deps.cfg.name] }, { Name: 'tag-key', Values: [TAG_NETWORK_GROUP] }] }), { abortSignal }),
    );
    return out.SecurityGroups ?? [];
  }

  private async describeIds(ids: string[], opts: OperationOptions): Promise<Instance[]> {
    const found: Instance[] = [];
    // A filter, not InstanceIds: an id EC2 no longer knows is left out instead of failing the call.
    for (let at = 0; at < ids.length; at += FILTER_VALUES) found.push(...(await this.deps.describe([liveFilter(), { Name: 'instance-id', Values: ids.slice(at, at + FILTER_VALUES) }], opts)));
    return found;
  }

  private namePrefix(): string {
    return `${this.deps.cfg.name}-net-`;
  }

  private netGroupsOf(instance: Instance): string[] {
    const prefix = this.namePrefix();
    return (instance.SecurityGroups ?? []).filter((g) => g.GroupName?.startsWith(prefix) && g.GroupId).map((g) => g.GroupId ?? '');
  }
}

function liveFilter(): Filter {
  return { Name: 'instance-state-name', Values: HOLDING_STATES };
}

function hostIdOf(instance: Instance): string | undefined {
  return instance.Tags?.find((t) => t.Key === TAG_HOST_ID)?.Value;
}
