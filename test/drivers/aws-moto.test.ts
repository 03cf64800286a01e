/**
 * The AWS driver on moto beyond the conformance suite: what it makes in EC2 (launch template,
 * tags, subnets, the boot script), how many calls a launch costs, a launch whose answer is lost
 * after EC2 acted on it, and an EC2 error arriving over the wire as a berth error.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeImagesCommand, DescribeInstanceAttributeCommand, DescribeInstancesCommand, DescribeLaunchTemplatesCommand, DescribeLaunchTemplateVersionsCommand, DescribeVolumesCommand, EC2Client, type Instance } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsDriver, type AwsDriverConfig } from '../../src/drivers/aws/index.js';
import type { RequestHandler } from '../../src/drivers/aws/sdk.js';
import { AGENT_IDENTITY_PATH } from '../../src/protocol/messages.js';
import { IMAGE_AGENT_DIR } from '../../src/images/file-steps.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { awsSpec, motoNetwork, type MotoNetwork } from './aws-fixtures.js';

describe.skipIf(!motoAvailable('AWS driver on moto'))('AWS driver on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  const drivers: AwsDriver[] = [];

  const make = (config: Partial<AwsDriverConfig> = {}, requestHandler?: RequestHandler): AwsDriver => {
    const d = new AwsDriver(
      { region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS, imageId: net.imageId, instanceType: 't3.micro', subnetIds: net.subnetIds, securityGroupIds: net.securityGroupIds, name: 'bmoto', ...config },
      requestHandler ? { requestHandler } : {},
    );
    drivers.push(d);
    return d;
  };
  const instance = async (instanceId: unknown): Promise<Instance | undefined> =>
    (await net.ec2.send(new DescribeInstancesCommand({ InstanceIds: [String(instanceId)] }))).Reservations?.[0]?.Instances?.[0];

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
  });

  afterAll(async () => {
    for (const d of drivers) {
      for (const h of await d.list()) await d.terminate(h.id, h.driverData);
      d.close();
    }
    net?.ec2.destroy();
    await moto?.stop();
  });

  it('init makes one launch template, once; a changed configuration becomes its new version', async () => {
    await make().init();
    await make().init();
    const templates = await net.ec2.send(new DescribeLaunchTemplatesCommand({ LaunchTemplateNames: ['bmoto-hosts'] }));
    expect(templates.LaunchTemplates).toHaveLength(1);
    expect(templates.LaunchTemplates?.[0]?.LatestVersionNumber).toBe(1);

    const bigger = make({ instanceType: 'm5.large' });
    await bigger.init();
    const after = await net.ec2.send(new DescribeLaunchTemplatesCommand({ LaunchTemplateNames: ['bmoto-hosts'] }));
    expect(after.LaunchTemplates?.[0]?.LatestVersionNumber).toBe(2);
    const host = await bigger.launch(awsSpec('h-moto-big'));
    expect((await instance(host.driverData['instanceId']))?.InstanceType).toBe('m5.large');
    await bigger.terminate(host.id, host.driverData);
  });

  it('a launch is one RunInstances call: tagged, spread over the subnets, with a boot script that starts the agent', async () => {
    const d = make();
    await d.init();
    const before = d.callCounts();
    const [a, b] = [await d.launch(awsSpec('h-moto-a', { team: 'a' })), await d.launch(awsSpec('h-moto-b'))];
    expect(d.callCounts()['RunInstances']).toBe((before['RunInstances'] ?? 0) + 2);
    expect(Object.values(d.callCounts()).reduce((x, y) => x + y, 0) - Object.values(before).reduce((x, y) => x + y, 0)).toBe(2);

    const ia = await instance(a.driverData['instanceId']);
    const ib = await instance(b.driverData['instanceId']);
    expect(ia?.PrivateIpAddress).toBe(a.ip);
    // EC2 adds its own aws:ec2launchtemplate:* tags; berth's are exactly these.
    const tags = (ia?.Tags ?? []).filter((t) => !t.Key?.startsWith('aws:'));
    expect(Object.fromEntries(tags.map((t) => [t.Key, t.Value]))).toEqual({ team: 'a', Name: 'bmoto-h-moto-a', 'berth:host-id': 'h-moto-a', 'berth:managed-by': 'bmoto' });
    expect(new Set([ia?.SubnetId, ib?.SubnetId])).toEqual(new Set(net.subnetIds));
    expect(ia?.SecurityGroups?.map((g) => g.GroupId)).toEqual(net.securityGroupIds);

    const attr = await net.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: String(a.driverData['instanceId']), Attribute: 'userData' }));
    const script = Buffer.from(attr.UserData?.Value ?? '', 'base64').toString();
    expect(script).toContain(AGENT_IDENTITY_PATH);
    expect(script).toContain(JSON.stringify(awsSpec('h-moto-a').agent));
    expect(script).toContain(`${IMAGE_AGENT_DIR}/berth-agent.cjs`);
    // It must at least be a well-formed shell script.
    const dir = mkdtempSync(join(tmpdir(), 'berth-userdata-'));
    try {
      writeFileSync(join(dir, 'user-data.sh'), script);
      execFileSync('sh', ['-n', join(dir, 'user-data.sh')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    for (const h of [a, b]) await d.terminate(h.id, h.driverData);
  });

  it('a launch whose answer is lost after EC2 made the instance: cancelled, and the instance terminated', async () => {
    const controller = new AbortController();
    const real = new EC2Client({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS }).config.requestHandler as {
      handle: (req: { body?: unknown }, opts?: unknown) => Promise<unknown>;
    };
    // Passes every request on; RunInstances reaches moto, but the caller gives up before the answer comes back.
    const losing = {
      handle: async (req: { body?: unknown }, opts?: unknown) => {
        const out = await real.handle(req, opts);
        if (String(req.body).includes('Action=RunInstances')) {
          controller.abort();
          throw Object.assign(new Error('Request aborted'), { name: 'AbortError' });
        }
        return out;
      },
    } as unknown as RequestHandler;
    const d = make({}, losing);
    await d.init();
    const err = await d.launch(awsSpec('h-moto-lost'), { signal: controller.signal }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'deadline_exceeded', message: 'launch of host h-moto-lost was cancelled' });
    expect((await d.list()).map((h) => h.id)).not.toContain('h-moto-lost');
    const made = await net.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:berth:host-id', Values: ['h-moto-lost'] }] }));
    const states = (made.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => i.State?.Name);
    expect(states).toHaveLength(1);
    expect(['shutting-down', 'terminated']).toContain(states[0]);
  });

  it('an EC2 error over the wire arrives as a berth error that says what to fix', async () => {
    const d = make({ subnetIds: ['subnet-0000000000deadbee'] });
    const err = await d.launch(awsSpec('h-moto-subnet')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'validation_failed', details: { operation: 'RunInstances', awsCode: 'InvalidSubnetID.NotFound' } });
    expect((err as Error).message).toContain('subnet or security group');
  });

  it("a disk size is the root volume's size (whole GiB), for a launch and a pool's template; below the image's own it is refused before EC2 is asked", async () => {
    const d = make();
    await d.init();
    const image = (await net.ec2.send(new DescribeImagesCommand({ ImageIds: [net.imageId] }))).Images?.[0];
    const rootGiB = image?.BlockDeviceMappings?.find((m) => m.DeviceName === image.RootDeviceName)?.Ebs?.VolumeSize ?? 0;
    const spec = { ...awsSpec('h-moto-disk'), resources: { diskMiB: (rootGiB + 4) * 1024 - 100 } };
    const host = await d.launch(spec);
    const volumes = await net.ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: 'attachment.instance-id', Values: [String(host.driverData['instanceId'])] }] }));
    expect(volumes.Volumes?.map((v) => [v.Attachments?.[0]?.Device, v.Size])).toEqual([[image?.RootDeviceName, rootGiB + 4]]);
    await d.terminate(host.id, host.driverData);

    const before = d.callCounts()['RunInstances'] ?? 0;
    const small = await d.launch({ ...awsSpec('h-moto-small'), resources: { diskMiB: 1024 } }).catch((e: unknown) => e);
    expect(small).toMatchObject({ code: 'validation_failed', details: { diskMiB: 1024, imageRootGiB: rootGiB } });
    expect((small as { hint?: string }).hint).toContain(`at least ${rootGiB * 1024} MiB`);
    expect(d.callCounts()['RunInstances'] ?? 0).toBe(before);

    const pool = { name: 'disky', size: 0, image: '/', tags: {}, resources: { diskMiB: (rootGiB + 2) * 1024 }, enrolment: { url: 'http://10.0.0.1:7071/v1/enrol', tenantId: 't', pool: 'disky', token: 'tok', generation: 1 } };
    await d.fleet.ensurePool(pool);
    const template = await net.ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: d.fleet.templateName('disky'), Versions: ['$Latest'] }));
    expect(template.LaunchTemplateVersions?.[0]?.LaunchTemplateData?.BlockDeviceMappings).toEqual([{ DeviceName: image?.RootDeviceName, Ebs: { VolumeSize: rootGiB + 2, DeleteOnTermination: true } }]);
    await d.fleet.removePool('disky');
  });
});
