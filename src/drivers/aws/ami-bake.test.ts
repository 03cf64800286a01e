/**
 * AMI baking and retention with aws-sdk-client-mock standing in for EC2: a spec baked before is
 * reused without a launch, a bake runs steps → strip → check on a builder launched with a
 * spec-derived ClientToken and tags its AMI, the builder is terminated however the bake ends
 * (step failure, failed identity check, cancellation, deadline, failed image, permission error),
 * and retention keeps the newest and in-use AMIs and deletes the snapshots of the rest.
 */
import {
  CreateImageCommand,
  CreateTagsCommand,
  DeleteSnapshotCommand,
  DeregisterImageCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  EC2Client,
  EC2ServiceException,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type DescribeImagesCommandInput,
  type Image,
  type Instance,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import { AMI_IDENTITY_CHECK_SCRIPT, AMI_IDENTITY_STRIP_SCRIPT, AmiBaker, type AmiBakeSpec, type BuilderRunner } from './ami-bake.js';
import { AmiRetention } from './ami-retention.js';
import { resolveAwsConfig } from './config.js';

const ec2 = mockClient(EC2Client);
const PARENT = 'ami-0123456789abcdef0';
const NEW_AMI = 'ami-0aaaaaaaaaaaaaaa1';
const DIGEST = 'ab'.repeat(32);
const cfg = resolveAwsConfig({ region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: PARENT, instanceType: 't3.micro', name: 'unit', subnetIds: ['subnet-1'], securityGroupIds: ['sg-1'] });
const spec = (over: Partial<AmiBakeSpec> = {}): AmiBakeSpec => ({ name: 'web', parentImageId: PARENT, steps: ['apt-get install -y nginx'], specDigest: DIGEST, ...over });

function awsError(name: string, message = `${name} happened`): EC2ServiceException {
  return new EC2ServiceException({ name, message, $fault: 'client', $metadata: { httpStatusCode: 400, requestId: 'req-7' } });
}

type Phase = 'steps' | 'strip' | 'check';
/** Records what it is asked to run; `fail` makes one phase reject, `hold` makes one wait for the bake's signal. */
function runner(opts: { fail?: Phase; hold?: Phase; onHold?: () => void } = {}): BuilderRunner & { calls: { id: string; phase: Phase; timeoutS: number }[] } {
  const calls: { id: string; phase: Phase; timeoutS: number }[] = [];
  return {
    calls,
    run: async (id, commands, { signal, timeoutS }) => {
      const phase: Phase = commands[0] === AMI_IDENTITY_STRIP_SCRIPT ? 'strip' : commands[0] === AMI_IDENTITY_CHECK_SCRIPT ? 'check' : 'steps';
      calls.push({ id, phase, timeoutS });
      if (opts.hold === phase) {
        opts.onHold?.();
        await new Promise((_, reject) => {
          if (signal?.aborted) reject(new Error('runner stopped'));
          signal?.addEventListener('abort', () => reject(new Error('runner stopped')), { once: true });
        });
      }
      if (opts.fail === phase) throw new Error(phase === 'check' ? 'exit 1: berth-identity-check: ssh-host-keys remains: /etc/ssh/ssh_host_ed25519_key' : 'exit 100: E: Unable to locate package nginx');
    },
  };
}

const available = (over: Partial<Image> = {}): Image => ({ ImageId: NEW_AMI, Name: 'unit-web-abababababab', State: 'available', BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: 'snap-0new' } }], ...over });

/** EC2 for a bake that goes well: no earlier AMI, a builder that shows after a moment, an AMI pending then available. */
function happyEc2(opts: { imageStates?: Image[]; instanceStates?: (Instance | 'not-found')[] } = {}): void {
  const instances = opts.instanceStates ?? ['not-found', { InstanceId: 'i-0b1', State: { Name: 'pending' } }, { InstanceId: 'i-0b1', State: { Name: 'running' }, Tags: [] }];
  const images = opts.imageStates ?? [available({ State: 'pending' }), available()];
  ec2.on(RunInstancesCommand).resolves({ Instances: [{ InstanceId: 'i-0b1', State: { Name: 'pending' } }] });
  ec2.on(DescribeInstancesCommand).callsFake(() => {
    const next = instances.length > 1 ? instances.shift() : instances[0];
    if (next === 'not-found') throw awsError('InvalidInstanceID.NotFound');
    return { Reservations: [{ Instances: [next] }] };
  });
  ec2.on(DescribeImagesCommand).callsFake((input: DescribeImagesCommandInput) => {
    if (!input.ImageIds) return { Images: [] }; // the lookups by tag: nothing baked from this spec
    return { Images: [images.length > 1 ? images.shift() : images[0]] };
  });
  ec2.on(CreateTagsCommand).resolves({});
  ec2.on(CreateImageCommand).resolves({ ImageId: NEW_AMI });
  ec2.on(TerminateInstancesCommand).resolves({});
  ec2.on(DeregisterImageCommand).resolves({});
  ec2.on(DeleteSnapshotCommand).resolves({});
}

const baker = (): AmiBaker => new AmiBaker(cfg);
const fast = { pollMs: 1 };

beforeEach(() => ec2.reset());
afterAll(() => ec2.restore());

describe('AMI bake', () => {
  it('a spec baked before is reused: one lookup by digest, nothing launched', async () => {
    ec2.on(DescribeImagesCommand).resolves({ Images: [available({ ImageId: 'ami-0feed0000000000f1', CreationDate: '2026-01-02T03:04:05.000Z' })] });
    const lines: string[] = [];
    const r = runner();
    expect(await baker().bake(spec(), r, { ...fast, progress: (l) => lines.push(l) })).toEqual({ imageId: 'ami-0feed0000000000f1', reused: true, name: 'unit-web-abababababab' });
    const lookup = ec2.commandCalls(DescribeImagesCommand)[0]?.args[0].input;
    expect(lookup?.Owners).toEqual(['self']);
    expect(lookup?.Filters).toEqual(expect.arrayContaining([{ Name: 'tag:berth:managed-by', Values: ['unit'] }, { Name: 'tag:berth:spec-digest', Values: [DIGEST] }, { Name: 'state', Values: ['available', 'pending'] }]));
    expect(ec2.commandCalls(RunInstancesCommand)).toHaveLength(0);
    expect(r.calls).toEqual([]);
    expect(lines.some((l) => l.startsWith('reusing ami-0feed0000000000f1'))).toBe(true);
  });

  it('a bake: builder from the parent with a spec-derived ClientToken, steps → strip → check, tagged AMI, builder terminated', async () => {
    happyEc2();
    const lines: string[] = [];
    const r = runner();
    const layers = Array.from({ length: 5 }, (_, i) => String(i).repeat(64));
    const result = await baker().bake(spec({ layerDigests: layers }), r, { ...fast, progress: (l) => lines.push(l) });
    expect(result).toEqual({ imageId: NEW_AMI, reused: false, name: 'unit-web-abababababab', builderInstanceId: 'i-0b1' });

    const launch = ec2.commandCalls(RunInstancesCommand)[0]?.args[0].input;
    expect(launch).toMatchObject({ ImageId: PARENT, InstanceType: 't3.micro', MinCount: 1, MaxCount: 1, SubnetId: 'subnet-1', SecurityGroupIds: ['sg-1'], MetadataOptions: { HttpTokens: 'required' } });
    expect(launch?.ClientToken).toMatch(/^berth-bake-[0-9a-f]{32}-0$/);
    expect(launch?.TagSpecifications?.[0]?.Tags).toEqual(expect.arrayContaining([{ Key: 'berth:role', Value: 'builder' }, { Key: 'berth:managed-by', Value: 'unit' }]));
    // The builder showed only after a NotFound (eventual consistency), then ran the three phases in order.
    expect(r.calls.map((c) => [c.id, c.phase])).toEqual([['i-0b1', 'steps'], ['i-0b1', 'strip'], ['i-0b1', 'check']]);
    expect(r.calls[0]?.timeoutS).toBeGreaterThan(3500);
    expect(ec2.commandCalls(CreateTagsCommand)[0]?.args[0].input.Tags?.map((t) => t.Key)).toEqual(['berth:bake-id', 'berth:bake-deadline']);

    const create = ec2.commandCalls(CreateImageCommand)[0]?.args[0].input;
    expect(create).toMatchObject({ InstanceId: 'i-0b1', Name: 'unit-web-abababababab', NoReboot: false });
    expect(create?.TagSpecifications?.map((t) => t.ResourceType)).toEqual(['image', 'snapshot']);
    const tags = Object.fromEntries((create?.TagSpecifications?.[0]?.Tags ?? []).map((t): [string, string | undefined] => [t.Key ?? '', t.Value]));
    expect(tags).toMatchObject({ 'berth:managed-by': 'unit', 'berth:image': 'web', 'berth:spec-digest': DIGEST, 'berth:parent': PARENT });
    // Five 64-character digests do not fit in a tag: whole digests, then a mark that the list is cut.
    expect(tags['berth:layer-digests']?.length).toBeLessThanOrEqual(256);
    expect(tags['berth:layer-digests']).toBe(`${layers.slice(0, 3).join(',')},...`);

    expect(ec2.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input.InstanceIds)).toEqual([['i-0b1']]);
    expect(ec2.commandCalls(DeregisterImageCommand)).toHaveLength(0);
    const order = ['launching a builder', 'builder i-0b1: pending', 'running 1 step', 'stripping', 'checking', 'creating unit-web-abababababab', `image ${NEW_AMI}: pending`, 'terminating builder i-0b1', 'done'];
    const at = order.map((o) => lines.findIndex((l) => l.startsWith(o)));
    expect(at).not.toContain(-1);
    expect(at).toEqual([...at].sort((a, b) => a - b));
  });

  it('the ClientToken is the same for the same spec (a retried bake) and differs for another spec', async () => {
    happyEc2();
    await baker().bake(spec(), runner(), fast);
    happyEc2();
    await baker().bake(spec(), runner(), fast);
    happyEc2();
    await baker().bake(spec({ specDigest: 'cd'.repeat(32) }), runner(), fast);
    const [a, b, c] = ec2.commandCalls(RunInstancesCommand).map((x) => x.args[0].input.ClientToken);
    expect(a).toBe(b);
    expect(c).not.toBe(a);
  });

  it.each([
    ['steps', /a step of image web failed on builder i-0b1: exit 100: E: Unable to locate package nginx/],
    ['check', /identity check failed on builder i-0b1: .*ssh-host-keys remains/],
  ] as const)('a failure in %s: bake_failed, no AMI, the builder terminated', async (phase, message) => {
    happyEc2();
    const err = await rejection(baker().bake(spec(), runner({ fail: phase }), fast));
    expect(err.code).toBe('bake_failed');
    expect(err.message).toMatch(message);
    expect(err.details).toMatchObject({ phase, instanceId: 'i-0b1', image: 'web' });
    expect(ec2.commandCalls(CreateImageCommand)).toHaveLength(0);
    expect(ec2.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input.InstanceIds)).toEqual([['i-0b1']]);
  });

  it('cancelled while the steps run: deadline_exceeded, and the builder terminated without the cancelled signal', async () => {
    happyEc2();
    const controller = new AbortController();
    const err = await rejection(baker().bake(spec(), runner({ hold: 'steps', onHold: () => controller.abort() }), { ...fast, signal: controller.signal }));
    expect(err).toMatchObject({ code: 'deadline_exceeded', message: 'bake of image web was cancelled while running 1 step on builder i-0b1' });
    const terminate = ec2.commandCalls(TerminateInstancesCommand);
    expect(terminate.map((c) => c.args[0].input.InstanceIds)).toEqual([['i-0b1']]);
    const sent = (terminate[0]?.args as unknown[] | undefined)?.[1] as { abortSignal?: AbortSignal } | undefined;
    expect(sent?.abortSignal?.aborted).toBe(false);
  });

  it('the bake deadline passes while the builder stays pending: deadline_exceeded, builder terminated', async () => {
    happyEc2({ instanceStates: [{ InstanceId: 'i-0b1', State: { Name: 'pending' } }] });
    const err = await rejection(baker().bake(spec(), runner(), { pollMs: 5, timeoutMs: 80 }));
    expect(err.code).toBe('deadline_exceeded');
    expect(err.message).toMatch(/did not finish within 0.08 s \(while waiting for builder i-0b1 to run\)/);
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(1);
  });

  it("an AMI that ends failed: bake_failed with EC2's reason; the AMI deregistered, its snapshot deleted, the builder terminated", async () => {
    const failed = available({ State: 'failed', StateReason: { Code: 'Client.InternalError', Message: 'Client.InternalError: snapshot creation failed' } });
    happyEc2({ imageStates: [available({ State: 'pending' }), failed] });
    // The cleanup finds the AMI by its name and digest (for its snapshots).
    ec2.on(DescribeImagesCommand).callsFake((input: DescribeImagesCommandInput) => ({ Images: input.ImageIds ? [failed] : input.Filters?.some((f) => f.Name === 'name') ? [failed] : [] }));
    const err = await rejection(baker().bake(spec(), runner(), fast));
    expect(err.code).toBe('bake_failed');
    expect(err.message).toBe(`image ${NEW_AMI} (unit-web-abababababab) ended failed: Client.InternalError: snapshot creation failed`);
    expect(ec2.commandCalls(DeregisterImageCommand).map((c) => c.args[0].input.ImageId)).toEqual([NEW_AMI]);
    expect(ec2.commandCalls(DeleteSnapshotCommand).map((c) => c.args[0].input.SnapshotId)).toEqual(['snap-0new']);
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(1);
  });

  it('permission errors name the missing permission; a refused launch leaves nothing to look for', async () => {
    happyEc2();
    ec2.on(CreateImageCommand).rejects(awsError('UnauthorizedOperation', 'You are not authorized to perform this operation.'));
    const err = await rejection(baker().bake(spec(), runner(), fast));
    expect(err.code).toBe('driver_unavailable');
    expect(err.message).toContain('lack the permission ec2:CreateImage in region eu-west-1');
    expect(err.details).toMatchObject({ awsCode: 'UnauthorizedOperation', operation: 'CreateImage', image: 'web', instanceId: 'i-0b1' });
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(1);

    ec2.reset();
    happyEc2();
    ec2.on(RunInstancesCommand).rejects(awsError('UnauthorizedOperation'));
    const launch = await rejection(baker().bake(spec(), runner(), fast));
    expect(launch.message).toContain('ec2:RunInstances');
    expect(launch.hint).toContain('ec2:CreateTags');
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(0);
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(0);
  });

  it("a token whose builder ended is spent (next generation); a live builder of another bake is not touched", async () => {
    happyEc2();
    ec2.on(RunInstancesCommand).resolvesOnce({ Instances: [{ InstanceId: 'i-0old', State: { Name: 'terminated' } }] }).resolves({ Instances: [{ InstanceId: 'i-0b1', State: { Name: 'pending' } }] });
    await baker().bake(spec(), runner(), fast);
    const tokens = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input.ClientToken ?? '');
    expect(tokens.map((t) => t.slice(-2))).toEqual(['-0', '-1']);

    ec2.reset();
    const other = [{ Key: 'berth:bake-id', Value: 'someone-else' }, { Key: 'berth:bake-deadline', Value: new Date(Date.now() + 600_000).toISOString() }];
    happyEc2({ instanceStates: [{ InstanceId: 'i-0b1', State: { Name: 'running' }, Tags: other }] });
    const err = await rejection(baker().bake(spec(), runner(), fast));
    expect(err.code).toBe('conflict');
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(0);
  });

  it('two bakes of one spec in one process: the second waits for the first and reuses its AMI', async () => {
    happyEc2();
    let made = false;
    ec2.on(DescribeImagesCommand).callsFake((input: DescribeImagesCommandInput) => ({ Images: input.ImageIds ? [available()] : made ? [available()] : [] }));
    ec2.on(CreateImageCommand).callsFake(() => {
      made = true;
      return { ImageId: NEW_AMI };
    });
    const b = baker();
    const [first, second] = await Promise.all([b.bake(spec(), runner(), fast), b.bake(spec(), runner(), fast)]);
    expect(first.reused).toBe(false);
    expect(second).toEqual({ imageId: NEW_AMI, reused: true, name: 'unit-web-abababababab' });
    expect(ec2.commandCalls(RunInstancesCommand)).toHaveLength(1);
  });

  it('refuses specs EC2 could not take', async () => {
    expect((await rejection(baker().bake(spec({ parentImageId: 'ubuntu' }), runner()))).code).toBe('validation_failed');
    expect((await rejection(baker().bake(spec({ name: 'web server' }), runner()))).code).toBe('validation_failed');
    expect((await rejection(baker().bake(spec({ specDigest: 'latest' }), runner()))).code).toBe('validation_failed');
    expect(ec2.calls()).toHaveLength(0);
  });
});

describe('AMI retention', () => {
  const image = (id: string, date: string, state = 'available'): Image => ({ ImageId: id, Name: `unit-web-${id.slice(-4)}`, CreationDate: date, State: state as Image['State'], BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: `snap-${id.slice(4)}` } }] });
  const A = image('ami-00000000000000a', '2026-01-05T00:00:00.000Z');
  const B = image('ami-00000000000000b', '2026-01-04T00:00:00.000Z');
  const C = image('ami-00000000000000c', '2026-01-03T00:00:00.000Z');
  const D = image('ami-00000000000000d', '2026-01-02T00:00:00.000Z');
  const E = image('ami-00000000000000e', '2026-01-06T00:00:00.000Z', 'pending');
  const F = image('ami-00000000000000f', '2026-01-07T00:00:00.000Z', 'failed');

  it('keeps the newest available, the in-use and the pending AMIs; deregisters the rest and deletes their snapshots', async () => {
    ec2.on(DescribeImagesCommand).resolves({ Images: [D, A, F, C, E, B] });
    ec2.on(DescribeSnapshotsCommand).resolves({ Snapshots: [] });
    ec2.on(DeregisterImageCommand).resolves({});
    ec2.on(DeleteSnapshotCommand).resolves({});
    const result = await new AmiRetention(cfg).prune({ name: 'web', keep: 2, inUse: new Set([C.ImageId ?? '']) });
    expect(result.removed.map((r) => [r.imageId, r.snapshotIds])).toEqual([[D.ImageId, ['snap-00000000000000d']], [F.ImageId, ['snap-00000000000000f']]]);
    expect(result.kept).toEqual([A.ImageId, B.ImageId, C.ImageId, E.ImageId]);
    expect(ec2.commandCalls(DescribeImagesCommand)[0]?.args[0].input.Filters).toEqual([{ Name: 'tag:berth:managed-by', Values: ['unit'] }, { Name: 'tag:berth:image', Values: ['web'] }]);
    expect(ec2.commandCalls(DeregisterImageCommand).map((c) => c.args[0].input.ImageId)).toEqual([D.ImageId, F.ImageId]);
    expect(ec2.commandCalls(DeleteSnapshotCommand).map((c) => c.args[0].input.SnapshotId)).toEqual(['snap-00000000000000d', 'snap-00000000000000f']);
  });

  it('is idempotent: an AMI already deregistered and a snapshot already gone are fine; snapshots an earlier prune left are deleted', async () => {
    ec2.on(DescribeImagesCommand).resolves({ Images: [A, D] });
    ec2.on(DeregisterImageCommand).rejects(awsError('InvalidAMIID.Unavailable'));
    ec2.on(DeleteSnapshotCommand, { SnapshotId: 'snap-00000000000000d' }).rejects(awsError('InvalidSnapshot.NotFound'));
    ec2.on(DeleteSnapshotCommand, { SnapshotId: 'snap-0orphan' }).resolves({});
    ec2.on(DescribeSnapshotsCommand).resolves({
      Snapshots: [
        { SnapshotId: 'snap-0orphan', Description: 'Created by CreateImage(i-0123) for ami-0999999999999999 from vol-1' },
        { SnapshotId: 'snap-00000000000000a', Description: `Created by CreateImage(i-0123) for ${A.ImageId ?? ''}` },
        { SnapshotId: 'snap-0manual', Description: 'my own backup' },
      ],
    });
    const result = await new AmiRetention(cfg).prune({ name: 'web', keep: 1, inUse: new Set() });
    expect(result.removed.map((r) => r.imageId)).toEqual([D.ImageId]);
    expect(result.orphanSnapshots).toEqual(['snap-0orphan']);
    expect(ec2.commandCalls(DeleteSnapshotCommand).map((c) => c.args[0].input.SnapshotId)).toEqual(['snap-00000000000000d', 'snap-0orphan']);
  });

  it('a permission error names ec2:DeregisterImage; a bad keep is refused', async () => {
    ec2.on(DescribeImagesCommand).resolves({ Images: [A, D] });
    ec2.on(DeregisterImageCommand).rejects(awsError('UnauthorizedOperation'));
    const err = await rejection(new AmiRetention(cfg).prune({ name: 'web', keep: 1, inUse: new Set() }));
    expect(err).toMatchObject({ code: 'driver_unavailable', details: { operation: 'DeregisterImage' } });
    expect(err.message).toContain('ec2:DeregisterImage');
    expect(ec2.commandCalls(DeleteSnapshotCommand)).toHaveLength(0);
    expect((await rejection(new AmiRetention(cfg).prune({ name: 'web', keep: -1, inUse: new Set() }))).code).toBe('validation_failed');
  });
});
