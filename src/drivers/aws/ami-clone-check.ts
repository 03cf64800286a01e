/**
 * The clone-uniqueness check of an AMI bake (AmiBaker runs it once the new AMI is available): two
 * instances launched from the new AMI, each booting as a berth host of role `bake-check` (the
 * hooks register the host and give the boot script that starts berth's agent as it), the identity
 * probe (src/images/uniqueness.ts) run on both, and their answers compared. Two clones that share
 * a machine-id, an SSH host key, an agent identity or a hostname mean every host of the AMI would
 * be indistinguishable: the check throws, and AmiBaker deregisters the AMI and deletes its
 * snapshots. Then the image's test steps run on the first clone; a failing one fails the check too. Both instances are terminated whatever happens, without the caller's signal, so a
 * cancelled build cannot leak them.
 */
import { randomUUID } from 'node:crypto';
import { DescribeInstancesCommand, RunInstancesCommand, TerminateInstancesCommand, type EC2Client, type Instance, type Tag, type _InstanceType } from '@aws-sdk/client-ec2';
import { BerthError, errorMessage } from '../../core/errors.js';
import { settleAll } from '../../core/settle-all.js';
import { compareIdentities, failingItems, formatUniquenessReport, parseIdentityProbe, type UniquenessReport } from '../../images/uniqueness.js';
import { AMI_IDENTITY_PROBE } from './ami-identity.js';
import { TAG_IMAGE, type Poller } from './ami-retention.js';
import { TAG_HOST_ID, TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { awsCall } from './sdk.js';

export const ROLE_BAKE_CHECK = 'bake-check';
/** The probe only reads a few files (and waits up to 10 s for host keys being generated). */
const PROBE_TIMEOUT_S = 60;
const ENDED = ['shutting-down', 'terminated'];

/** What the check needs of berth's hosts (src/images/ami-clone-hosts.ts); the instances are the check's. */
export interface CloneCheckHooks {
  /** Registers the host an instance of `imageId` will be; returns its id and the instance's boot script (which starts berth's agent as that host). */
  prepare(imageId: string): Promise<{ hostId: string; userData: string }>;
  /** Runs `commands` as root on the instance once its agent is connected; resolves with their stdout, rejects when they fail. */
  run(hostId: string, instanceId: string, commands: string[], opts: { signal: AbortSignal; timeoutS: number }): Promise<string>;
  /** Ends the hosts' records, once their instances are terminated (or were never launched). Must not throw. */
  release(hostIds: string[]): Promise<void>;
  /**
   * The image's test steps, run on the first clone once the clones differ; rejects (bake_failed,
   * naming the test and with its output) at the first that fails, which fails the check. Their
   * titles and durations, for the image's manifest.
   */
  runTests?(hostId: string, instanceId: string, opts: { signal: AbortSignal }): Promise<{ title: string; durationMs: number }[]>;
}

export interface CloneCheckTarget {
  imageId: string;
  /** The image's name (`berth:image`). */
  image: string;
  /** The AMI's name. */
  amiName: string;
  instanceType: string;
}

export interface CloneCheckResult {
  instanceIds: string[];
  uniqueness: UniquenessReport;
  /** The image's tests that passed on the first clone (none without test steps). */
  tests: { title: string; durationMs: number }[];
}

interface Clone {
  hostId: string;
  userData: string;
  /** Sent with RunInstances: an SDK retry gets the same instance, and a lost answer is found by it. */
  token: string;
  instanceId?: string;
}

export async function runCloneCheck(ec2: EC2Client, cfg: ResolvedAwsConfig, target: CloneCheckTarget, hooks: CloneCheckHooks, poll: Poller): Promise<CloneCheckResult> {
  const clones: Clone[] = [];
  const checked = await check(ec2, cfg, target, hooks, poll, clones).then(
    (result) => ({ result }),
    (err: unknown) => ({ err }),
  );
  const terminated = await terminateClones(ec2, cfg, clones, poll).then(
    () => undefined,
    (err: unknown) => ({ err }),
  );
  await hooks.release(clones.map((c) => c.hostId));
  if ('err' in checked) {
    if (terminated) cfg.logger.warn({ instanceIds: clones.map((c) => c.instanceId), err: errorMessage(terminated.err) }, 'could not terminate the instances of a failed clone check');
    throw checked.err;
  }
  if (terminated) {
    // The check passed, but two instances would run on unseen: that fails the bake.
    const ids = clones.flatMap((c) => (c.instanceId ? [c.instanceId] : []));
    throw new BerthError('bake_failed', `the clone check of ${target.imageId} passed, but its instances ${ids.join(', ')} could not be terminated: ${errorMessage(terminated.err)}`, `Terminate them: aws ec2 terminate-instances --instance-ids ${ids.join(' ')}. Then build again.`, { phase: 'clone-check', instanceIds: ids });
  }
  return checked.result;
}

/** Launches the clones (recorded in `clones` as they are made, for the cleanup), probes and compares them. */
async function check(ec2: EC2Client, cfg: ResolvedAwsConfig, target: CloneCheckTarget, hooks: CloneCheckHooks, poll: Poller, clones: Clone[]): Promise<CloneCheckResult> {
  poll.say(`checking that clones of ${target.imageId} differ: launching 2 instances of it (role ${ROLE_BAKE_CHECK})`);
  for (let i = 0; i < 2; i++) clones.push({ ...(await hooks.prepare(target.imageId)), token: `berth-check-${randomUUID()}` });
  await settleAll(clones.map(async (clone) => void (clone.instanceId = await launch(ec2, cfg, target, clone, poll.signal))));
  const ids = clones.map((c) => c.instanceId ?? '');
  await waitRunning(ec2, cfg, ids, poll);
  poll.say(`running the identity probe on ${ids.join(' and ')} (once their agents connect)`);
  const outputs = await settleAll(
    clones.map(async (clone) => {
      const id = clone.instanceId ?? '';
      try {
        return await hooks.run(clone.hostId, id, AMI_IDENTITY_PROBE, { signal: poll.signal, timeoutS: PROBE_TIMEOUT_S });
      } catch (err) {
        if (poll.signal.aborted) throw err;
        throw new BerthError('bake_failed', `the identity probe failed on instance ${id} of ${target.imageId}: ${errorMessage(err)}`, 'The probe needs a POSIX sh and the berth agent running on instances of the AMI; see the output. The AMI was deregistered and its snapshots deleted.', { phase: 'clone-check', instanceId: id, imageId: target.imageId }, { cause: err });
      }
    }),
  );
  const [a = '', b = ''] = outputs;
  const uniqueness = compareIdentities(parseIdentityProbe(a), parseIdentityProbe(b));
  if (!uniqueness.ok) throw cannotTellApart(target, ids, uniqueness);
  const ssh = uniqueness.items.some((i) => i.item === 'ssh-host-keys' && i.verdict === 'differ');
  // The line a local bake prints for its check (src/images/bake-hosts.ts).
  poll.say(`clones differ: machine-id, hostname, agent identity${ssh ? ', SSH host keys' : ''}`);
  const [first] = clones;
  const tests = first && hooks.runTests ? await hooks.runTests(first.hostId, first.instanceId ?? '', { signal: poll.signal }) : [];
  return { instanceIds: ids, uniqueness, tests };
}

/** Names what the two clones share (or lack), then the comparison's table. */
function cannotTellApart(target: CloneCheckTarget, ids: string[], uniqueness: UniquenessReport): BerthError {
  const failing = failingItems(uniqueness);
  const shared = failing.filter((i) => i.verdict === 'same').map((i) => i.item);
  const missing = failing.filter((i) => i.verdict !== 'same').map((i) => i.item);
  const what = [shared.length ? `share ${shared.join(', ')}` : '', missing.length ? `lack ${missing.join(', ')}` : ''].filter(Boolean).join(' and ');
  return new BerthError(
    'bake_failed',
    `clone-uniqueness check failed for image ${target.image} (${target.imageId}): its instances ${ids.join(' and ')} ${what}\n${formatUniquenessReport(uniqueness)}`,
    'Something in the image gives every instance the same identity (a step wrote it after the strip could see it, or a service regenerates it from baked state): remove it in a step, or make it per-host at boot. The AMI was deregistered and its snapshots deleted.',
    { phase: 'clone-check', imageId: target.imageId, instanceIds: ids, shared, missing, uniqueness },
  );
}

async function launch(ec2: EC2Client, cfg: ResolvedAwsConfig, target: CloneCheckTarget, clone: Clone, signal: AbortSignal): Promise<string> {
  const profile = cfg.instanceProfile;
  // berth:host-id: a server that dies mid-check leaves a bake-check host record, whose cleanup at
  // its restart terminates the instance carrying that id (AwsDriver.terminate without an instance id).
  const tags: Tag[] = [{ Key: 'Name', Value: `${target.amiName}-check` }, { Key: 'berth:role', Value: ROLE_BAKE_CHECK }, { Key: TAG_MANAGED_BY, Value: cfg.name }, { Key: TAG_IMAGE, Value: target.image }, { Key: TAG_HOST_ID, Value: clone.hostId }];
  const request = new RunInstancesCommand({
    ImageId: target.imageId,
    InstanceType: target.instanceType as _InstanceType, // EC2 validates it
    MinCount: 1,
    MaxCount: 1,
    ClientToken: clone.token,
    ...(cfg.subnetIds[0] ? { SubnetId: cfg.subnetIds[0] } : {}),
    ...(cfg.securityGroupIds.length ? { SecurityGroupIds: cfg.securityGroupIds } : {}),
    ...(profile ? { IamInstanceProfile: profile.startsWith('arn:') ? { Arn: profile } : { Name: profile } } : {}),
    MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 },
    UserData: Buffer.from(clone.userData).toString('base64'),
    TagSpecifications: [{ ResourceType: 'instance', Tags: tags }, { ResourceType: 'volume', Tags: tags }],
  });
  const info = { operation: 'RunInstances', imageId: target.imageId, ...(profile ? { instanceProfile: profile } : {}) };
  const out = await awsCall(ec2, cfg, info, { signal }, (abortSignal) => ec2.send(request, { abortSignal }));
  const id = out.Instances?.[0]?.InstanceId;
  if (!id) throw new BerthError('launch_failed', `EC2 returned no instance for a clone check of ${target.imageId}`, 'Build again.', { imageId: target.imageId });
  return id;
}

async function waitRunning(ec2: EC2Client, cfg: ResolvedAwsConfig, ids: string[], poll: Poller): Promise<void> {
  const since = Date.now();
  let last = '';
  for (let n = 0; ; n++) {
    const out = await awsCall(ec2, cfg, { operation: 'DescribeInstances', instanceId: ids.join(',') }, { signal: poll.signal }, (abortSignal) => ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }), { abortSignal })).catch((err: unknown) => {
      if (hasAwsCode(err, 'InvalidInstanceID.NotFound')) return undefined; // EC2 is eventually consistent
      throw err;
    });
    const seen = new Map<string, Instance>((out?.Reservations ?? []).flatMap((r) => r.Instances ?? []).flatMap((i) => (i.InstanceId ? [[i.InstanceId, i]] : [])));
    const states = ids.map((id) => seen.get(id)?.State?.Name ?? 'not visible yet');
    for (const [k, id] of ids.entries()) {
      const state = states[k] ?? '';
      if (state === 'pending' || state === 'running' || state === 'not visible yet') continue;
      const reason = seen.get(id)?.StateReason?.Message;
      throw new BerthError('launch_failed', `instance ${id} of the clone check is ${state}${reason ? ` (${reason})` : ''}`, "The new AMI does not boot: check its volumes and the instance type; the reason is EC2's.", { instanceId: id });
    }
    if (states.every((s) => s === 'running')) return;
    if (states.includes('not visible yet') && Date.now() - since > cfg.visibilityGraceMs) throw new BerthError('launch_failed', `EC2 accepted the clone check's instances ${ids.join(', ')} but never showed them all`, 'Build again.', { instanceIds: ids });
    const now = ids.map((id, k) => `${id}: ${states[k] ?? '?'}`).join(', ');
    if (now !== last) poll.say(`check instances ${now}`);
    last = now;
    await poll.pause(n);
  }
}

/** Every instance the check launched, those whose launch answer was lost too (found by their token). */
async function terminateClones(ec2: EC2Client, cfg: ResolvedAwsConfig, clones: Clone[], poll: Poller): Promise<void> {
  const lost = clones.filter((c) => !c.instanceId).map((c) => c.token);
  if (lost.length > 0) {
    const filter = { Name: 'client-token', Values: lost };
    const out = await awsCall(ec2, cfg, { operation: 'DescribeInstances' }, undefined, (abortSignal) => ec2.send(new DescribeInstancesCommand({ Filters: [filter] }), { abortSignal }));
    const found = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => !ENDED.includes(i.State?.Name ?? ''));
    for (const i of found) {
      const clone = clones.find((c) => !c.instanceId && c.token === i.ClientToken);
      if (clone && i.InstanceId) clone.instanceId = i.InstanceId;
    }
  }
  const ids = clones.flatMap((c) => (c.instanceId ? [c.instanceId] : []));
  if (ids.length === 0) return;
  poll.say(`terminating check instances ${ids.join(', ')}`);
  // No signal: the caller's may be what ended the check, and these must go all the same.
  await awsCall(ec2, cfg, { operation: 'TerminateInstances', instanceId: ids.join(',') }, undefined, (abortSignal) => ec2.send(new TerminateInstancesCommand({ InstanceIds: ids }), { abortSignal })).catch((err: unknown) => {
    if (!hasAwsCode(err, 'InvalidInstanceID.NotFound')) throw err;
  });
}
