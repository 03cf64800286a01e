/**
 * The AWS driver's handling of what AWS answers, with aws-sdk-client-mock standing in for EC2:
 * permission and image errors become messages that say what to fix, an instance EC2 does not show
 * yet right after its launch is not taken for gone, gone instances terminate quietly, and init
 * creates the launch template once, even when another server races it.
 */
import {
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  EC2Client,
  EC2ServiceException,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import { AwsDriver } from './aws-driver.js';
import type { AwsDriverConfig } from './config.js';

const ec2 = mockClient(EC2Client);
const AMI = 'ami-0123456789abcdef0';
const base: AwsDriverConfig = { region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: AMI, instanceType: 't3.micro', name: 'unit' };
const spec = (id: string) => ({ id, hostname: id, image: '/', tags: { team: 'a' }, resources: {}, agent: { hostId: id, token: 't', serverUrl: 'ws://x' } });

function awsError(name: string, message = `${name} happened`, $fault: 'client' | 'server' = 'client'): EC2ServiceException {
  return new EC2ServiceException({ name, message, $fault, $metadata: { httpStatusCode: $fault === 'client' ? 400 : 500, requestId: 'req-42' } });
}

/** A driver whose launch template already exists as configured (init makes one call). */
function readyDriver(config: Partial<AwsDriverConfig> = {}): AwsDriver {
  ec2.on(DescribeLaunchTemplateVersionsCommand).resolves({
    LaunchTemplateVersions: [{ LaunchTemplateName: 'unit-hosts', VersionNumber: 1, LaunchTemplateData: { ImageId: AMI, InstanceType: 't3.micro', MetadataOptions: { HttpTokens: 'required' } } }],
  });
  return new AwsDriver({ ...base, ...config });
}

beforeEach(() => ec2.reset());
afterAll(() => ec2.restore());

describe('AWS driver: errors', () => {
  it('a permission error names the permission (and PassRole when an instance profile is set)', async () => {
    const d = readyDriver({ instanceProfile: 'berth-host' });
    ec2.on(RunInstancesCommand).rejects(awsError('UnauthorizedOperation', 'You are not authorized to perform this operation. Encoded authorization failure message: xyz'));
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    const err = await rejection(d.launch(spec('h-perm')));
    expect(err.code).toBe('driver_unavailable');
    expect(err.message).toContain('lack the permission ec2:RunInstances');
    expect(err.message).toContain('region eu-west-1');
    expect(err.hint).toContain('iam:PassRole on the role of instance profile berth-host');
    expect(err.hint).toContain('ec2:CreateTags');
    expect(err.details).toMatchObject({ operation: 'RunInstances', awsCode: 'UnauthorizedOperation', requestId: 'req-42', hostId: 'h-perm' });
    // EC2 refused the request: nothing was made, so nothing is looked for.
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(0);
  });

  it('a permission error at init fails init, and a later init tries again', async () => {
    ec2.on(DescribeLaunchTemplateVersionsCommand).rejectsOnce(awsError('UnauthorizedOperation')).resolves({ LaunchTemplateVersions: [{ LaunchTemplateData: { ImageId: AMI, InstanceType: 't3.micro', MetadataOptions: { HttpTokens: 'required' } } }] });
    const d = new AwsDriver(base);
    const err = await rejection(d.init());
    expect(err.message).toContain('ec2:DescribeLaunchTemplateVersions');
    await expect(d.init()).resolves.toEqual({ name: 'aws', agentListenHost: '0.0.0.0', bootTimeoutMs: 300_000 });
  });

  it('an AMI that does not exist: the image and the region are named', async () => {
    const d = readyDriver();
    ec2.on(RunInstancesCommand).rejects(awsError('InvalidAMIID.NotFound', "The image id '[ami-0fffffffffffffff0]' does not exist"));
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    const err = await rejection(d.launch({ ...spec('h-ami'), image: 'ami-0fffffffffffffff0' }));
    expect(err.code).toBe('image_not_found');
    expect(err.message).toBe('the image ami-0fffffffffffffff0 does not exist in region eu-west-1 (or this account may not use it)');
  });

  it('bad credentials and capacity errors say so', async () => {
    const d = readyDriver();
    ec2.on(DescribeInstancesCommand).rejects(awsError('AuthFailure', 'AWS was not able to validate the provided access credentials'));
    expect((await rejection(d.list())).message).toMatch(/did not accept berth's credentials/);
    ec2.on(RunInstancesCommand).rejects(awsError('InsufficientInstanceCapacity'));
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    expect(await rejection(d.launch(spec('h-cap')))).toMatchObject({ code: 'launch_failed', message: expect.stringContaining('InsufficientInstanceCapacity') as unknown });
  });

  it('a launch that failed on the server side terminates whatever carries its host id', async () => {
    const d = readyDriver();
    ec2.on(RunInstancesCommand).rejects(awsError('InternalError', 'An internal error has occurred', 'server'));
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [{ InstanceId: 'i-0aaa', State: { Name: 'pending' } }] }] });
    ec2.on(TerminateInstancesCommand).resolves({});
    await rejection(d.launch(spec('h-half')));
    const describe = ec2.commandCalls(DescribeInstancesCommand)[0]?.args[0].input;
    expect(describe?.Filters).toContainEqual({ Name: 'tag:berth:host-id', Values: ['h-half'] });
    expect(describe?.Filters).toContainEqual({ Name: 'tag:berth:managed-by', Values: ['unit'] });
    expect(ec2.commandCalls(TerminateInstancesCommand)[0]?.args[0].input).toEqual({ InstanceIds: ['i-0aaa'] });
  });

  it('launch sends one RunInstances: from the template, idempotent, tagged, with the boot script', async () => {
    const d = readyDriver({ subnetIds: ['subnet-1', 'subnet-2'], securityGroupIds: ['sg-1'] });
    ec2.on(RunInstancesCommand).resolves({ Instances: [{ InstanceId: 'i-0abc', PrivateIpAddress: '10.1.2.3' }] });
    const [a, b] = [await d.launch(spec('h-a')), await d.launch(spec('h-b'))];
    expect(a).toMatchObject({ id: 'h-a', ip: '10.1.2.3', driverData: { instanceId: 'i-0abc' } });
    expect(b.id).toBe('h-b');
    const [first, second] = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input);
    expect(first).toMatchObject({ LaunchTemplate: { LaunchTemplateName: 'unit-hosts', Version: '$Latest' }, MinCount: 1, MaxCount: 1, ClientToken: 'h-a', SubnetId: 'subnet-1', SecurityGroupIds: ['sg-1'] });
    expect(second?.SubnetId).toBe('subnet-2');
    expect(first?.TagSpecifications?.[0]?.Tags).toEqual([
      { Key: 'team', Value: 'a' },
      { Key: 'Name', Value: 'unit-h-a' },
      { Key: 'berth:host-id', Value: 'h-a' },
      { Key: 'berth:managed-by', Value: 'unit' },
    ]);
    const script = Buffer.from(first?.UserData ?? '', 'base64').toString();
    expect(script).toContain(`cat > '/etc/berth/agent.json' <<'BERTH_EOF'\n{"hostId":"h-a","token":"t","serverUrl":"ws://x"}\nBERTH_EOF`);
    expect(script).toContain("'node' '/usr/local/lib/berth/agent/berth-agent.cjs'");
    expect(d.callCounts()).toEqual({}); // counted by middleware, which the mock bypasses
  });

  it('refuses what EC2 or the boot script could not take', async () => {
    const d = readyDriver();
    expect((await rejection(d.launch({ ...spec('h-x'), hostname: "x'; reboot" }))).code).toBe('validation_failed');
    expect((await rejection(d.launch({ ...spec('h-x'), tags: { 'aws:owner': 'me' } }))).message).toContain('aws:owner');
    expect((await rejection(d.launch({ ...spec('h-x'), layers: ['/var/lib/berth/layers/1'] }))).message).toContain('image layers');
    // A boot script over 16 KiB; with the agent channel's CA in it, the hint says how much it takes.
    const manyTags = Object.fromEntries(Array.from({ length: 45 }, (_, i) => [`t${i}-${'k'.repeat(120)}`, 'v'.repeat(250)]));
    const tooLong = await rejection(d.launch({ ...spec('h-x'), tags: manyTags }));
    expect(tooLong.message).toMatch(/boot script is \d+ bytes, over EC2's 16 KiB/);
    expect(tooLong.hint).toBe('Use fewer or shorter tags.');
    const ca = `-----BEGIN CERTIFICATE-----\n${'A'.repeat(9000)}\n-----END CERTIFICATE-----\n`;
    const withCa = await rejection(d.launch({ ...spec('h-x'), tags: Object.fromEntries(Object.entries(manyTags).slice(0, 20)), agent: { ...spec('h-x').agent, serverUrl: 'wss://x', ca } }));
    expect(withCa.hint).toContain(`the agent channel's CA bundle takes ${ca.length} bytes of it`);
    expect(ec2.commandCalls(RunInstancesCommand)).toHaveLength(0);
  });
});

describe('AWS driver: eventual consistency and idempotence', () => {
  it('an instance not yet visible right after its launch is still launching, not gone; later it is gone', async () => {
    const d = readyDriver({ visibilityGraceMs: 30_000 });
    ec2.on(DescribeInstancesCommand).rejects(awsError('InvalidInstanceID.NotFound', "The instance ID 'i-0new' does not exist"));
    const fresh = await d.describe('h-new', { instanceId: 'i-0new', launchedAt: new Date().toISOString() });
    expect(fresh).toMatchObject({ state: 'running', reason: expect.stringContaining('does not show it yet') as unknown });
    const old = await d.describe('h-new', { instanceId: 'i-0new', launchedAt: new Date(Date.now() - 60_000).toISOString() });
    expect(old).toMatchObject({ state: 'gone', reason: 'EC2 knows no instance i-0new' });
  });

  it('maps instance states: pending is running, stopped is stopped, shutting-down is gone', async () => {
    const d = readyDriver();
    const described = async (Name: 'pending' | 'stopped' | 'shutting-down') => {
      ec2.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [{ InstanceId: 'i-0s', PrivateIpAddress: '10.0.0.9', State: { Name } }] }] });
      return (await d.describe('h-s', { instanceId: 'i-0s' })).state;
    };
    expect(await described('pending')).toBe('running');
    expect(await described('stopped')).toBe('stopped');
    expect(await described('shutting-down')).toBe('gone');
  });

  it('terminating an instance EC2 no longer knows succeeds', async () => {
    const d = readyDriver();
    ec2.on(TerminateInstancesCommand).rejects(awsError('InvalidInstanceID.NotFound'));
    await expect(d.terminate('h-old', { instanceId: 'i-0old' })).resolves.toBeUndefined();
  });

  it('list reads every page and ignores instances without a host id', async () => {
    const d = readyDriver();
    ec2
      .on(DescribeInstancesCommand)
      .resolvesOnce({ Reservations: [{ Instances: [{ InstanceId: 'i-1', Tags: [{ Key: 'berth:host-id', Value: 'h-1' }] }, { InstanceId: 'i-x', Tags: [] }] }], NextToken: 'p2' })
      .resolvesOnce({ Reservations: [{ Instances: [{ InstanceId: 'i-2', Tags: [{ Key: 'berth:host-id', Value: 'h-2' }] }] }] });
    expect(await d.list()).toEqual([
      { id: 'h-1', driverData: { instanceId: 'i-1' } },
      { id: 'h-2', driverData: { instanceId: 'i-2' } },
    ]);
    // (The paginator reuses one input object, so only the last token can be seen.)
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(2);
  });

  it('init creates the launch template when missing, and survives another server creating it first', async () => {
    ec2.on(DescribeLaunchTemplateVersionsCommand).rejects(awsError('InvalidLaunchTemplateName.NotFoundException'));
    ec2.on(CreateLaunchTemplateCommand).rejects(awsError('InvalidLaunchTemplateName.AlreadyExistsException'));
    await expect(new AwsDriver({ ...base, instanceProfile: 'arn:aws:iam::1:instance-profile/p' }).init()).resolves.toMatchObject({ name: 'aws' });
    expect(ec2.commandCalls(CreateLaunchTemplateCommand)[0]?.args[0].input).toMatchObject({
      LaunchTemplateName: 'unit-hosts',
      LaunchTemplateData: { ImageId: AMI, InstanceType: 't3.micro', IamInstanceProfile: { Arn: 'arn:aws:iam::1:instance-profile/p' }, MetadataOptions: { HttpTokens: 'required' } },
    });
  });

  it('init adds a template version when the configuration changed, and nothing when it did not', async () => {
    readyDriver();
    ec2.on(CreateLaunchTemplateVersionCommand).resolves({});
    await new AwsDriver(base).init();
    expect(ec2.commandCalls(CreateLaunchTemplateVersionCommand)).toHaveLength(0);
    await new AwsDriver({ ...base, instanceType: 'm7i.large' }).init();
    expect(ec2.commandCalls(CreateLaunchTemplateVersionCommand)[0]?.args[0].input.LaunchTemplateData?.InstanceType).toBe('m7i.large');
  });
});
