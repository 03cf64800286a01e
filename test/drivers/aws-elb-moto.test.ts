/**
 * ELBv2 target groups on moto (server mode, real wire protocol): a group in the default VPC made
 * once and found after, instances moto launched registered and deregistered, what moto reports as
 * their health, and removal (refused while a listener forwards to the group).
 *
 * What moto does not emulate, so nothing here pretends to test it: health checks (a registered
 * running instance is `healthy` at once, whatever listens on it; a stopped one `unused` /
 * Target.InvalidState), Target.NotInUse for a group no load balancer uses, connection draining and
 * the deregistration delay (a deregistered target is gone at once), IAM (every call is allowed) and
 * throttling. Those paths are covered by src/drivers/aws/target-groups.test.ts.
 */
import { RunInstancesCommand, StopInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import {
  CreateListenerCommand,
  CreateLoadBalancerCommand,
  DescribeTagsCommand,
  DescribeTargetGroupsCommand,
  DescribeTargetHealthCommand,
  ElasticLoadBalancingV2Client,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveAwsConfig } from '../../src/drivers/aws/config.js';
import { TargetGroups, type EnsureTargetGroupSpec } from '../../src/drivers/aws/target-groups.js';
import { rejection } from '../helpers/errors.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { motoNetwork, type MotoNetwork } from './aws-fixtures.js';

const SPEC: EnsureTargetGroupSpec = { environment: 'production-eu', service: 'checkout-api-gateway', port: 8080, protocol: 'HTTP', healthCheckPath: '/ready' };
const total = (counts: Record<string, number>): number => Object.values(counts).reduce((a, b) => a + b, 0);

describe.skipIf(!motoAvailable('AWS ELBv2 target groups on moto'))('AWS ELBv2 target groups on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let elb: ElasticLoadBalancingV2Client;
  let tg: TargetGroups;
  let vpcId: string;
  const instances: string[] = [];

  const launch = async (n: number): Promise<string[]> => {
    const out = await net.ec2.send(new RunInstancesCommand({ ImageId: net.imageId, InstanceType: 't3.micro', MinCount: n, MaxCount: n, SubnetId: net.subnetIds[0] }));
    const ids = (out.Instances ?? []).map((i) => i.InstanceId ?? '');
    instances.push(...ids);
    vpcId = out.Instances?.[0]?.VpcId ?? '';
    return ids;
  };
  const healthOf = async (arn: string, ids?: string[]): Promise<Record<string, string>> => {
    const out = await elb.send(new DescribeTargetHealthCommand({ TargetGroupArn: arn, ...(ids ? { Targets: ids.map((Id) => ({ Id })) } : {}) }));
    return Object.fromEntries((out.TargetHealthDescriptions ?? []).map((d) => [d.Target?.Id ?? '', [d.TargetHealth?.State, d.TargetHealth?.Reason].filter(Boolean).join(' ')]));
  };

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    elb = new ElasticLoadBalancingV2Client({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    // No subnets configured: the group goes into the default VPC, found from a default subnet.
    const cfg = resolveAwsConfig({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS, imageId: net.imageId, instanceType: 't3.micro', name: 'belb' });
    tg = new TargetGroups(cfg, { pollMs: 20, maxPollMs: 50 });
  });

  afterAll(async () => {
    if (instances.length) await net.ec2.send(new TerminateInstancesCommand({ InstanceIds: instances }));
    tg?.close();
    elb?.destroy();
    net?.ec2.destroy();
    await moto?.stop();
  });

  it('ensure makes one group in the default VPC, tagged with its identity; again it is one call', async () => {
    await launch(1);
    const made = await tg.ensure(SPEC);
    expect(made.created).toBe(true);
    expect(made.name.length).toBeLessThanOrEqual(32);
    expect(made.name).toMatch(/^belb-production-eu-ch-[0-9a-z]{10}$/);
    expect(tg.callCounts()).toEqual({ CreateTargetGroup: 1, DescribeSubnets: 1, DescribeTargetGroups: 1 });

    const [group] = (await elb.send(new DescribeTargetGroupsCommand({ Names: [made.name] }))).TargetGroups ?? [];
    expect(group).toMatchObject({ TargetGroupArn: made.arn, VpcId: vpcId, Port: 8080, Protocol: 'HTTP', HealthCheckPath: '/ready', TargetType: 'instance' });
    const tags = (await elb.send(new DescribeTagsCommand({ ResourceArns: [made.arn] }))).TagDescriptions?.[0]?.Tags ?? [];
    expect(Object.fromEntries(tags.map((t) => [t.Key, t.Value]))).toEqual({ 'berth:managed-by': 'belb', 'berth:environment': 'production-eu', 'berth:service': 'checkout-api-gateway' });

    const before = tg.callCounts();
    expect(await tg.ensure(SPEC)).toEqual({ ...made, created: false });
    expect(total(tg.callCounts()) - total(before)).toBe(1);
    expect(tg.callCounts()['DescribeTargetGroups']).toBe((before['DescribeTargetGroups'] ?? 0) + 1);

    expect(await tg.ensure({ ...SPEC, healthCheckPath: '/healthz', intervalS: 10 })).toMatchObject({ arn: made.arn, modified: true });
    const [changed] = (await elb.send(new DescribeTargetGroupsCommand({ Names: [made.name] }))).TargetGroups ?? [];
    expect(changed).toMatchObject({ HealthCheckPath: '/healthz', HealthCheckIntervalSeconds: 10, HealthCheckTimeoutSeconds: 5 });
    expect((await rejection(tg.ensure({ ...SPEC, port: 9090 }))).code).toBe('conflict');
  });

  it('register, health as moto reports it, deregister: moto health-checks nothing and drains nothing', async () => {
    const { arn } = await tg.ensure({ ...SPEC, service: 'reg' });
    const ids = await launch(3);
    await tg.register(arn, ids);
    // moto: every registered running instance is healthy at once (no health check runs).
    expect(await healthOf(arn)).toEqual(Object.fromEntries(ids.map((id) => [id, 'healthy'])));
    const before = tg.callCounts()['DescribeTargetHealth'] ?? 0;
    await tg.waitHealthy(arn, ids, { timeoutMs: 5_000 });
    expect(tg.callCounts()['DescribeTargetHealth']).toBe(before + 1);

    const [gone, ...kept] = ids as [string, ...string[]];
    await tg.deregister(arn, [gone]);
    await tg.waitDrained(arn, [gone], { timeoutMs: 5_000 }); // moto: no draining state, no delay
    expect(await healthOf(arn, [gone])).toEqual({ [gone]: 'unused Target.NotRegistered' });
    expect(Object.keys(await healthOf(arn)).sort()).toEqual([...kept].sort());
    // Not registered any more: success (moto answers InvalidTarget, which is retried one by one).
    await tg.deregister(arn, [gone, ...kept]);
    expect(await healthOf(arn)).toEqual({});
  });

  it('a stopped instance: refused at registration; registered, it is what waitHealthy names at the deadline', async () => {
    const { arn } = await tg.ensure({ ...SPEC, service: 'stopped' });
    const [a, b] = (await launch(2)) as [string, string];
    await tg.register(arn, [a]);
    await net.ec2.send(new StopInstancesCommand({ InstanceIds: [a, b] }));
    const refused = await rejection(tg.register(arn, [b]));
    expect(refused).toMatchObject({ code: 'validation_failed', details: { awsCode: 'InvalidTargetException' } });
    expect(refused.message).toContain('not in a running state');

    const err = await rejection(tg.waitHealthy(arn, [a], { timeoutMs: 200 }));
    expect(err.code).toBe('deadline_exceeded');
    expect(err.message).toContain(`${a}: unused (Target.InvalidState: Target is in the stopped state)`);
  });

  it('remove: refused while a listener forwards to the group (targets untouched); otherwise deregisters and deletes, twice is fine', async () => {
    const used = await tg.ensure({ ...SPEC, service: 'used' });
    const [id] = (await launch(1)) as [string];
    await tg.register(used.arn, [id]);
    const lb = await elb.send(new CreateLoadBalancerCommand({ Name: 'belb-front', Subnets: net.subnetIds, SecurityGroups: net.securityGroupIds }));
    const lbArn = lb.LoadBalancers?.[0]?.LoadBalancerArn ?? '';
    await elb.send(new CreateListenerCommand({ LoadBalancerArn: lbArn, Port: 80, Protocol: 'HTTP', DefaultActions: [{ Type: 'forward', TargetGroupArn: used.arn }] }));
    const err = await rejection(tg.remove(SPEC.environment, 'used'));
    expect(err.code).toBe('conflict');
    expect(err.message).toContain(lbArn);
    expect(await healthOf(used.arn)).toEqual({ [id]: 'healthy' });

    const free = await tg.ensure({ ...SPEC, service: 'free' });
    await tg.register(free.arn, [id]);
    await tg.remove(SPEC.environment, 'free');
    await expect(elb.send(new DescribeTargetGroupsCommand({ Names: [free.name] }))).rejects.toMatchObject({ name: 'TargetGroupNotFoundException' });
    await tg.remove(SPEC.environment, 'free');
    expect(await healthOf(used.arn)).toEqual({ [id]: 'healthy' }); // an instance may be in several groups
  });
});
