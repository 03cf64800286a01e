/**
 * The AWS driver: each host is one EC2 instance launched from the driver's launch template, tagged
 * with berth's host id and the driver's name, whose boot script (user-data.ts) writes the agent's
 * identity and starts the agent baked into the AMI. Instances are found again by their tags, so
 * nothing but the instance id needs storing and even that can be lost.
 */
import {
  DescribeInstancesCommand,
  paginateDescribeInstances,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2Client,
  type Filter,
  type Instance,
  type Tag,
} from '@aws-sdk/client-ec2';
import { BerthError, errorMessage } from '../../core/errors.js';
import type { DescribedHost, DriverInfo, FoundHost, GroupMember, HostDriver, HostResources, HostSpec, LaunchedHost, OperationOptions, TerminateOptions } from '../types.js';
import { AwsFleet } from './fleet.js';
import { AwsGroups } from './groups.js';
import { isAmiId, resolveAwsConfig, TAG_HOST_ID, TAG_MANAGED_BY, type AwsDriverConfig, type ResolvedAwsConfig } from './config.js';
import { instanceIdOf } from './driver-data.js';
import { hasAwsCode, isNotInGroup } from './errors.js';
import { ensureLaunchTemplate } from './launch-template.js';
import { AwsNetworkGroups } from './network-groups.js';
import { RootVolumes } from './root-volume.js';
import { awsCall, CallCounter, createEc2Client, type CallInfo, type RequestHandler } from './sdk.js';
import { buildUserData, caHint, USER_DATA_LIMIT } from './user-data.js';
import { SsmChannel } from './ssm.js';
import { SsmAgents } from './ssm-agents.js';

const INSTANCE_NOT_FOUND = ['InvalidInstanceID.NotFound', 'InvalidInstanceID.Malformed'];
/** States of an instance that is still a host; shutting-down and terminated ones are gone. */
const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'];
const HOSTNAME_RE = /^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/;
/** After a launch whose outcome is unknown (aborted, timed out), how long to look for what it may have made. */
const ORPHAN_SEARCH_DELAYS_MS = [0, 500, 1500];

export interface AwsDriverOptions {
  /** For tests: an SDK request handler instead of the network. */
  requestHandler?: RequestHandler;
  /** For tests: how long after a termination the network groups nobody holds are swept (default 30 s). */
  networkSweepDelayMs?: number;
  /** For tests: where SSM hosts' commands find the host's tags (an emulator runs them on this machine). */
  ssmTagsFile?: string;
}

export class AwsDriver implements HostDriver {
  readonly name = 'aws';
  private readonly cfg: ResolvedAwsConfig;
  private readonly ec2: EC2Client;
  private readonly counter = new CallCounter();
  private preparing: Promise<string> | undefined;
  private nextSubnet = 0;
  /** Pools as Auto Scaling groups (see fleet.ts); hosts launched one by one stay plain instances. */
  readonly fleet: AwsFleet;
  /** Hosts of the `ssm` command channel: their SSM agent stands in for berth's (ssm-agents.ts). */
  readonly agents: SsmAgents;
  private readonly ssm: SsmChannel;
  private readonly rootVolumes: RootVolumes;
  private readonly networkGroups: AwsNetworkGroups;

  constructor(config: AwsDriverConfig, options: AwsDriverOptions = {}) {
    this.cfg = resolveAwsConfig(config);
    this.ec2 = createEc2Client(this.cfg, options.requestHandler);
    this.counter.attach(this.ec2);
    this.fleet = new AwsFleet(this.cfg, this.ec2, new AwsGroups(config, options));
    this.rootVolumes = new RootVolumes(this.ec2, this.cfg);
    this.ssm = new SsmChannel(this.cfg, options.requestHandler ? { requestHandler: options.requestHandler } : {});
    this.agents = new SsmAgents(this.ssm, { pollMs: this.cfg.ssmPollMs, registrationTimeoutMs: this.cfg.ssmRegistrationTimeoutMs, logger: this.cfg.logger, ...(options.ssmTagsFile ? { tagsFile: options.ssmTagsFile } : {}) });
    this.networkGroups = new AwsNetworkGroups({ ec2: this.ec2, cfg: this.cfg, call: (info, opts, run) => this.call(info, opts, run), describe: (filters, opts) => this.describeAll(filters, opts), ...(options.networkSweepDelayMs !== undefined ? { sweepDelayMs: options.networkSweepDelayMs } : {}) });
  }

  /** The configuration as resolved, for the driver's other AWS parts (ELBv2: service-load-balancing.ts). */
  resolvedConfig(): ResolvedAwsConfig {
    return this.cfg;
  }

  /** AWS calls made so far, per operation (retries not counted; see attemptCounts). */
  callCounts(): Record<string, number> {
    return sumCounts(sumCounts(this.counter.callCounts(), this.fleet.groups.callCounts()), this.ssm.callCounts());
  }

  /** HTTP attempts so far, per operation: calls plus their retries. */
  attemptCounts(): Record<string, number> {
    return sumCounts(sumCounts(this.counter.attemptCounts(), this.fleet.groups.attemptCounts()), this.ssm.attemptCounts());
  }

  async init(opts?: OperationOptions): Promise<DriverInfo> {
    await this.prepared();
    if (opts?.signal?.aborted) throw new BerthError('deadline_exceeded', 'AWS driver init was cancelled', 'Retry if it is still wanted.');
    // Instances reach the control plane over the VPC, not a bridge of this machine.
    return { name: this.name, agentListenHost: this.cfg.agentListenHost, bootTimeoutMs: this.cfg.bootTimeoutMs };
  }

  /** Shared by every caller, so no caller's signal may cancel it: each checks its own after. */
  private prepared(): Promise<string> {
    this.preparing ??= ensureLaunchTemplate(this.ec2, this.cfg).catch((err: unknown) => {
      this.preparing = undefined; // a later call retries once permissions or the network are fixed
      throw err;
    });
    return this.preparing;
  }

  private call<T>(info: CallInfo, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return awsCall(this.ec2, this.cfg, info, opts, run);
  }

  async launch(spec: HostSpec, opts?: OperationOptions): Promise<LaunchedHost> {
    const userData = this.checkSpec(spec);
    if (opts?.signal?.aborted) throw cancelled(spec.id);
    const template = await this.prepared();
    if (opts?.signal?.aborted) throw cancelled(spec.id);
    const imageId = isAmiId(spec.image) ? spec.image : this.cfg.imageId;
    const blockDevices = await this.rootVolumes.mappings(imageId, spec.resources.diskMiB, opts);
    const subnetId = this.cfg.subnetIds.length ? this.cfg.subnetIds[this.nextSubnet++ % this.cfg.subnetIds.length] : undefined;
    const tags: Tag[] = [
      ...Object.entries(spec.tags).map(([Key, Value]) => ({ Key, Value })),
      { Key: 'Name', Value: `${this.cfg.name}-${spec.hostname}` },
      { Key: TAG_HOST_ID, Value: spec.id },
      { Key: TAG_MANAGED_BY, Value: this.cfg.name },
    ];
    const info: CallInfo = { operation: 'RunInstances', hostId: spec.id, imageId, ...(this.cfg.instanceProfile ? { instanceProfile: this.cfg.instanceProfile } : {}) };
    let instance: Instance | undefined;
    try {
      const out = await this.call(info, opts, (abortSignal) =>
        this.ec2.send(
          new RunInstancesCommand({
            LaunchTemplate: { LaunchTemplateName: template, Version: '$Latest' },
            ...(imageId !== this.cfg.imageId ? { ImageId: imageId } : {}),
            MinCount: 1,
            MaxCount: 1,
            // Makes the SDK's retries of a launch idempotent: a retry after a lost answer returns the
            // instance the first attempt made instead of making a second one.
            ClientToken: spec.id,
            ...(subnetId ? { SubnetId: subnetId } : {}),
            ...(this.cfg.securityGroupIds.length ? { SecurityGroupIds: this.cfg.securityGroupIds } : {}),
            ...(blockDevices ? { BlockDeviceMappings: blockDevices } : {}),
            UserData: Buffer.from(userData).toString('base64'),
            TagSpecifications: [
              { ResourceType: 'instance', Tags: tags },
              { ResourceType: 'volume', Tags: tags },
            ],
          }),
          { abortSignal },
        ),
      );
      instance = out.Instances?.[0];
    } catch (err) {
      // EC2 made nothing when it refused the request (a client fault: permissions, bad AMI...).
      // Otherwise the request may have reached EC2 before it failed, was aborted or timed out,
      // and whatever it made must go; an instance may show only after a moment.
      if (!refusedByEc2(err)) {
        const unknownOutcome = err instanceof BerthError && err.code === 'deadline_exceeded';
        await this.removeOrphans(spec.id, unknownOutcome ? ORPHAN_SEARCH_DELAYS_MS : [0]).catch((cleanupErr: unknown) =>
          this.cfg.logger.warn({ hostId: spec.id, err: errorMessage(cleanupErr) }, 'cleanup after failed launch failed'),
        );
      }
      throw err;
    }
    if (!instance?.InstanceId) throw new BerthError('launch_failed', `EC2 accepted the launch of host ${spec.id} but returned no instance`, 'Retry the launch; check the EC2 console for an instance tagged berth:host-id.', { hostId: spec.id });
    this.cfg.logger.debug({ hostId: spec.id, instanceId: instance.InstanceId, ip: instance.PrivateIpAddress }, 'instance launched');
    return {
      id: spec.id,
      hostname: spec.hostname,
      ip: instance.PrivateIpAddress ?? '',
      driverData: { instanceId: instance.InstanceId, launchedAt: new Date().toISOString(), ...(this.cfg.commandChannel === 'ssm' ? { channel: 'ssm' } : {}) },
    };
  }

  /** Validates what EC2 would reject late or what would break the boot script; returns the user data. */
  private checkSpec(spec: HostSpec): string {
    if (!HOSTNAME_RE.test(spec.hostname)) {
      throw new BerthError('validation_failed', `hostname ${JSON.stringify(spec.hostname)} is not a valid host name`, 'Use 1-63 letters, digits and inner hyphens.');
    }
    if ((spec.layers ?? []).length > 0) {
      throw new BerthError('validation_failed', `host ${spec.id} asks for image layers, which the AWS driver cannot mount`, 'On AWS an image is an AMI: bake the layers into one (not supported yet) or launch from the configured AMI.');
    }
    for (const [key, value] of Object.entries(spec.tags)) {
      if (key.toLowerCase().startsWith('aws:') || key.startsWith('berth:') || key === 'Name' || key.length > 128 || value.length > 256) {
        throw new BerthError('validation_failed', `tag ${JSON.stringify(key)} cannot be put on an EC2 instance`, 'Tag keys may not start with aws: or berth: nor be Name; keys up to 128 and values up to 256 characters.');
      }
    }
    const userData = buildUserData(spec, this.cfg.commandChannel === 'ssm' ? null : this.cfg.agentCommand);
    if (Buffer.byteLength(userData) > USER_DATA_LIMIT) {
      throw new BerthError('validation_failed', `host ${spec.id}'s boot script is ${Buffer.byteLength(userData)} bytes, over EC2's 16 KiB`, `Use fewer or shorter tags${caHint(spec.agent.ca)}.`);
    }
    return userData;
  }

  async terminate(id: string, driverData: Record<string, unknown>, opts?: TerminateOptions): Promise<void> {
    const known = instanceIdOf(driverData);
    // A pool's host is in an Auto Scaling group: terminated through it, or the group would put it
    // back (or not replace it). Which group it is in now decides, not what the caller believes: a
    // claiming group's host is never replaced (its group launches nothing), a pool's is when asked.
    // The group is the one its last move recorded; an instance a failed move left in no group is
    // terminated plainly below.
    const group = typeof driverData['group'] === 'string' ? driverData['group'] : undefined;
    if (known && driverData['fleet'] === true && group) {
      if (group.startsWith(`${this.cfg.name}-pool-`)) {
        const replace = opts?.replace === true;
        // Through the group failed (the group is gone, or the API answered nonsense): terminated
        // plainly below, which a group notices and, when it still exists, replaces.
        const viaGroup = await this.fleet.groups.terminateInGroup(known, !replace, opts).catch((err: unknown) => {
          this.cfg.logger.warn({ hostId: id, instanceId: known, group, err: errorMessage(err) }, 'terminating through the group failed; terminating the instance');
          return false;
        });
        if (viaGroup) {
          this.cfg.logger.debug({ hostId: id, instanceId: known, group, replace }, 'instance terminated through its pool group');
          return;
        }
      } else {
        // Out of the claiming group (which shrinks, and never replaces), then terminated below.
        // Not TerminateInstanceInAutoScalingGroup: moto applies that to the group an instance was
        // launched by, not the one it was attached to; these two calls work on both. An instance
        // that has left the group already (terminated by AWS, detached by hand) is refused by the
        // detach and terminated all the same.
        await this.fleet.groups.detach(known, group, opts).catch((err: unknown) => {
          if (!(isNotInGroup(err) || (err instanceof BerthError && (err.code === 'validation_failed' || err.code === 'not_found')))) throw err;
        });
      }
    }
    // Without an instance id (a launch that failed half-way), the host is whatever carries its tag.
    const ids = known ? [known] : (await this.findByHostId(id, opts)).filter((i) => LIVE_STATES.includes(i.State?.Name ?? '')).map((i) => i.InstanceId ?? '');
    if (ids.length === 0) return;
    this.networkGroups.afterTermination();
    try {
      await this.call({ operation: 'TerminateInstances', hostId: id }, opts, (abortSignal) => this.ec2.send(new TerminateInstancesCommand({ InstanceIds: ids }), { abortSignal }));
    } catch (err) {
      if (hasAwsCode(err, ...INSTANCE_NOT_FOUND)) return; // already gone: terminate is idempotent
      throw err;
    }
    this.cfg.logger.debug({ hostId: id, instanceIds: ids }, 'instance terminated');
  }

  async describe(id: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<DescribedHost> {
    const instanceId = instanceIdOf(driverData);
    let instance: Instance | undefined;
    if (instanceId) {
      instance = await this.batchedDescribe(instanceId, opts);
    } else {
      const found = await this.findByHostId(id, opts);
      instance = found.find((i) => LIVE_STATES.includes(i.State?.Name ?? '')) ?? found[0];
    }
    if (!instance) {
      // EC2 is eventually consistent: right after RunInstances, a describe can miss the instance.
      const launchedAt = typeof driverData['launchedAt'] === 'string' ? Date.parse(driverData['launchedAt']) : NaN;
      if (instanceId && Date.now() - launchedAt < this.cfg.visibilityGraceMs) {
        return { id, state: 'running', reason: `instance ${instanceId} was launched moments ago and EC2 does not show it yet` };
      }
      return { id, state: 'gone', reason: instanceId ? `EC2 knows no instance ${instanceId}` : `no instance is tagged ${TAG_HOST_ID}=${id}` };
    }
    const ip = instance.PrivateIpAddress;
    const state = instance.State?.Name ?? 'unknown';
    const why = `instance ${instance.InstanceId ?? '?'} is ${state}${instance.StateReason?.Message ? ` (${instance.StateReason.Message})` : ''}`;
    if (state === 'pending' || state === 'running') return { id, state: 'running', ...(ip ? { ip } : {}), ...(state === 'pending' ? { reason: why } : {}) };
    if (state === 'stopping' || state === 'stopped') return { id, state: 'stopped', ...(ip ? { ip } : {}), reason: why };
    return { id, state: 'gone', reason: why };
  }

  async list(opts?: OperationOptions): Promise<FoundHost[]> {
    const instances = await this.describeAll([{ Name: 'instance-state-name', Values: LIVE_STATES }], opts);
    const found: FoundHost[] = [];
    for (const instance of instances) {
      const id = instance.Tags?.find((t) => t.Key === TAG_HOST_ID)?.Value;
      if (id && instance.InstanceId) found.push({ id, driverData: { instanceId: instance.InstanceId } });
    }
    return found.sort((a, b) => a.id.localeCompare(b.id));
  }

  /**
   * Describes of one turn of the event loop go out as one DescribeInstances (up to 200 ids): a
   * server that checks its hosts (start-up, the monitor) asks about many at once, and one call
   * per host would spend the account's API rate. EC2 refuses the whole call when one id does not
   * exist; such a batch is asked again one by one.
   */
  private batchedDescribe(instanceId: string, opts: OperationOptions | undefined): Promise<Instance | undefined> {
    return new Promise((resolve, reject) => {
      this.describeQueue.push({ instanceId, opts, resolve, reject });
      if (this.describeQueue.length === 1) setImmediate(() => void this.flushDescribes());
    });
  }

  private readonly describeQueue: { instanceId: string; opts: OperationOptions | undefined; resolve: (i: Instance | undefined) => void; reject: (err: unknown) => void }[] = [];

  private async flushDescribes(): Promise<void> {
    const batch = this.describeQueue.splice(0, this.describeQueue.length);
    for (let at = 0; at < batch.length; at += 200) {
      const part = batch.slice(at, at + 200);
      const ids = [...new Set(part.map((p) => p.instanceId))];
      // A batch is bounded by the driver's timeout only: one caller's abort must not fail the others.
      const one = part.length === 1 ? part[0]?.opts : undefined;
      try {
        const out = await this.call({ operation: 'DescribeInstances' }, one, (abortSignal) => this.ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }), { abortSignal }));
        const byId = new Map((out.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => [i.InstanceId ?? '', i]));
        for (const p of part) p.resolve(byId.get(p.instanceId));
      } catch (err) {
        if (!hasAwsCode(err, ...INSTANCE_NOT_FOUND)) {
          for (const p of part) p.reject(err);
          continue;
        }
        if (part.length === 1) {
          part[0]?.resolve(undefined);
          continue;
        }
        for (const p of part) this.batchedDescribeAlone(p);
      }
    }
  }

  private batchedDescribeAlone(p: { instanceId: string; opts: OperationOptions | undefined; resolve: (i: Instance | undefined) => void; reject: (err: unknown) => void }): void {
    this.call({ operation: 'DescribeInstances' }, p.opts, (abortSignal) => this.ec2.send(new DescribeInstancesCommand({ InstanceIds: [p.instanceId] }), { abortSignal })).then(
      (out) => p.resolve(out.Reservations?.[0]?.Instances?.[0]),
      (err: unknown) => (hasAwsCode(err, ...INSTANCE_NOT_FOUND) ? p.resolve(undefined) : p.reject(err)),
    );
  }

  /** Every instance of this driver matching `filters`, through all pages. */
  private async describeAll(filters: Filter[], opts?: OperationOptions): Promise<Instance[]> {
    return this.call({ operation: 'DescribeInstances' }, opts, async (abortSignal) => {
      const all: Instance[] = [];
      // The paginator hands its extra arguments to every page's send: the signal bounds them all.
      const pages = paginateDescribeInstances(
        { client: this.ec2, pageSize: 500 },
        { Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [this.cfg.name] }, ...filters] },
        { abortSignal },
      );
      for await (const page of pages) for (const r of page.Reservations ?? []) all.push(...(r.Instances ?? []));
      return all;
    });
  }

  private findByHostId(id: string, opts?: OperationOptions): Promise<Instance[]> {
    return this.describeAll([{ Name: `tag:${TAG_HOST_ID}`, Values: [id] }], opts);
  }

  /** Terminates whatever a failed launch of `id` may have made; looks again after each delay until it finds something. */
  private async removeOrphans(id: string, delaysMs: number[]): Promise<void> {
    for (const delay of delaysMs) {
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
      const live = (await this.findByHostId(id)).filter((i) => LIVE_STATES.includes(i.State?.Name ?? '') && i.InstanceId);
      if (live.length === 0) continue;
      await this.call({ operation: 'TerminateInstances', hostId: id }, undefined, (abortSignal) => this.ec2.send(new TerminateInstancesCommand({ InstanceIds: live.map((i) => i.InstanceId ?? '') }), { abortSignal }));
      this.cfg.logger.info({ hostId: id, instanceIds: live.map((i) => i.InstanceId) }, 'terminated what a failed launch left');
      return;
    }
  }

  /** See HostDriver.setNetworkGroups: a security group per group of hosts (network-groups.ts). */
  setNetworkGroups(groups: GroupMember[][], opts?: OperationOptions & { all?: boolean }): Promise<void> {
    return this.networkGroups.set(groups, opts);
  }

  /** See HostDriver.teardown: the network groups go once no instance of this driver is left. */
  teardown(): Promise<boolean> {
    return this.networkGroups.teardown();
  }

  /** See HostDriver.checkResources: an instance's egress is its VPC's to decide, so a narrowing would not hold. */
  checkResources(resources: HostResources): void {
    if (resources.egressAllow?.length) {
      throw new BerthError('validation_failed', 'egressAllow (narrowed egress) is not enforced for EC2 instances: their VPC decides what they reach', "Narrow the instances' egress with their security groups (template.aws.securityGroupIds) or a Route 53 Resolver DNS Firewall, and drop egressAllow.");
    }
  }

  /** Releases the SDK's sockets. */
  close(): void {
    this.networkGroups.close();
    this.ec2.destroy();
    this.fleet.groups.close();
    this.ssm.close();
  }
}

function sumCounts(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [op, n] of Object.entries(b)) out[op] = (out[op] ?? 0) + n;
  return Object.fromEntries(Object.entries(out).sort(([x], [y]) => x.localeCompare(y)));
}

function refusedByEc2(err: unknown): boolean {
  const cause = err instanceof Error ? err.cause : undefined;
  return typeof cause === 'object' && cause !== null && (cause as { $fault?: unknown }).$fault === 'client';
}

function cancelled(id: string): BerthError {
  return new BerthError('deadline_exceeded', `launch of host ${id} was cancelled`, 'Retry the launch if it is still wanted.', { hostId: id });
}
