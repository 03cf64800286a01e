/**
 * AwsServiceLoadBalancing (environments' load balancing on AWS) against moto in server mode: hosts
 * carrying instances moto launched (driverData as a claimed fleet host has it) are registered in the
 * target group named for environment + service and the attach returns once ELB calls them healthy;
 * a deploy's old hosts are deregistered; `env rm` deletes the groups.
 *
 * moto runs no health checks (a registered running instance is healthy at once), has no
 * deregistration delay and never reports Target.NotInUse: the last case here (a group no load
 * balancer uses yet, the first create of every environment on real AWS) runs on ELB's answers
 * replayed by aws-sdk-client-mock instead, and needs no moto.
 */
import { DescribeSubnetsCommand, EC2Client, RunInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import {
  DescribeTagsCommand,
  DescribeTargetGroupsCommand,
  DescribeTargetHealthCommand,
  ElasticLoadBalancingV2Client,
  RegisterTargetsCommand,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { resolveAwsConfig } from '../../src/drivers/aws/config.js';
import { AwsServiceLoadBalancing } from '../../src/drivers/aws/service-load-balancing.js';
import { targetGroupName } from '../../src/drivers/aws/target-groups.js';
import type { BalancedHost } from '../../src/environments/load-balancing.js';
import { rejection } from '../helpers/errors.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { motoNetwork, type MotoNetwork } from './aws-fixtures.js';

const ENV = { tenantId: 'default', name: 'prod' };
const WEB = { name: 'web', port: 8080, healthPath: '/healthz' };
const soon = (): { deadline: number } => ({ deadline: Date.now() + 5_000 });
/** A claimed fleet host's driver data (src/drivers/aws/fleet.ts). */
const hostOf = (instanceId: string, i: number): BalancedHost => ({ id: `h-${i}`, driverData: { instanceId, fleet: true, group: 'bslb-group-prod', launchedAt: new Date().toISOString() } });

describe.skipIf(!motoAvailable('AWS service load balancing on moto'))('AWS service load balancing on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let elb: ElasticLoadBalancingV2Client;
  let lb: AwsServiceLoadBalancing;
  const logs: string[] = [];
  const instances: string[] = [];

  const launch = async (n: number): Promise<string[]> => {
    const out = await net.ec2.send(new RunInstancesCommand({ ImageId: net.imageId, InstanceType: 't3.micro', MinCount: n, MaxCount: n, SubnetId: net.subnetIds[0] }));
    const ids = (out.Instances ?? []).map((i) => i.InstanceId ?? '');
    instances.push(...ids);
    return ids;
  };
  const groupOf = async (service: string) => (await elb.send(new DescribeTargetGroupsCommand({ Names: [targetGroupName('bslb', ENV.name, service)] }))).TargetGroups?.[0];
  const registered = async (arn: string): Promise<Record<string, string>> => {
    const out = await elb.send(new DescribeTargetHealthCommand({ TargetGroupArn: arn }));
    return Object.fromEntries((out.TargetHealthDescriptions ?? []).map((d) => [d.Target?.Id ?? '', d.TargetHealth?.State ?? '']));
  };

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    elb = new ElasticLoadBalancingV2Client({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    const cfg = resolveAwsConfig({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS, imageId: net.imageId, instanceType: 't3.micro', name: 'bslb', subnetIds: net.subnetIds });
    lb = new AwsServiceLoadBalancing(cfg, { targetGroups: { pollMs: 20, maxPollMs: 50 }, drainTimeoutMs: 5_000, log: (line) => logs.push(line) });
  });

  afterAll(async () => {
    if (instances.length) await net.ec2.send(new TerminateInstancesCommand({ InstanceIds: instances }));
    lb?.close();
    elb?.destroy();
    net?.ec2.destroy();
    await moto?.stop();
  });

  it('attach: the hosts\' instances in the group named for environment + service, healthy when it returns; a host with no instance is left out', async () => {
    const ids = await launch(2);
    const hosts = [...ids.map(hostOf), { id: 'h-local', driverData: { pid: 42 } }];
    await lb.attach(ENV, WEB, hosts, soon());

    const group = await groupOf('web');
    expect(group).toMatchObject({ Port: 8080, Protocol: 'HTTP', HealthCheckPath: '/healthz', HealthyThresholdCount: 2, HealthCheckIntervalSeconds: 5, TargetType: 'instance' });
    const arn = group?.TargetGroupArn ?? '';
    expect(await registered(arn)).toEqual(Object.fromEntries(ids.map((id) => [id, 'healthy'])));
    const tags = (await elb.send(new DescribeTagsCommand({ ResourceArns: [arn] }))).TagDescriptions?.[0]?.Tags ?? [];
    expect(Object.fromEntries(tags.map((t) => [t.Key, t.Value]))).toEqual({ 'berth:managed-by': 'bslb', 'berth:environment': 'prod', 'berth:service': 'web' });
    expect(logs).toEqual(['environment prod: service web: host h-local has no EC2 instance id, so it is not in the service\'s target group']);
    // The VPC of the configured subnets, looked up once; then create, register and one health poll.
    expect(lb.groups.callCounts()).toEqual({ CreateTargetGroup: 1, DescribeSubnets: 1, DescribeTargetGroups: 1, DescribeTargetHealth: 1, RegisterTargets: 1 });
  });

  it('a deploy: new instances attached to the same group, then the old ones detached (deregistered and drained)', async () => {
    const arn = (await groupOf('web'))?.TargetGroupArn ?? '';
    const old = Object.keys(await registered(arn));
    const fresh = await launch(2);
    const before = lb.groups.callCounts();
    await lb.attach(ENV, WEB, fresh.map(hostOf), soon());
    expect(lb.groups.callCounts()['CreateTargetGroup']).toBe(before['CreateTargetGroup']);
    expect(await registered(arn)).toEqual(Object.fromEntries([...old, ...fresh].map((id) => [id, 'healthy'])));

    await lb.detach(ENV, WEB, old.map(hostOf));
    expect(await registered(arn)).toEqual(Object.fromEntries(fresh.map((id) => [id, 'healthy'])));
    // Again (a retried deploy): not registered any more is success.
    await lb.detach(ENV, WEB, old.map(hostOf));
  });

  it('a service with no ready path is checked on /; a cancelled create stops the attach before it registers anything', async () => {
    const [id] = (await launch(1)) as [string];
    const api = { name: 'api', port: 8081 };
    const cancelled = new AbortController();
    cancelled.abort();
    const err = await rejection(lb.attach(ENV, api, [hostOf(id, 9)], { ...soon(), signal: cancelled.signal }));
    expect(err.code).toBe('deadline_exceeded');
    await expect(groupOf('api')).rejects.toMatchObject({ name: 'TargetGroupNotFoundException' });

    await lb.attach(ENV, api, [hostOf(id, 9)], soon());
    const group = await groupOf('api');
    expect(group).toMatchObject({ Port: 8081, HealthCheckPath: '/' });
    expect(await registered(group?.TargetGroupArn ?? '')).toEqual({ [id]: 'healthy' });
  });

  it('a deploy that moves a service to another port is refused: ELB cannot change a group\'s port', async () => {
    const [id] = (await launch(1)) as [string];
    const err = await rejection(lb.attach(ENV, { ...WEB, port: 9090 }, [hostOf(id, 7)], soon()));
    expect(err.code).toBe('conflict');
    expect(err.hint).toContain('Keep service web on port 8080');
    expect(Object.keys(await registered((await groupOf('web'))?.TargetGroupArn ?? ''))).not.toContain(id);
  });

  it('remove (env rm) deletes every service\'s group, a service never attached included; twice is fine', async () => {
    await lb.remove(ENV, ['web', 'api', 'worker']);
    for (const service of ['web', 'api']) {
      await expect(groupOf(service)).rejects.toMatchObject({ name: 'TargetGroupNotFoundException' });
    }
    await lb.remove(ENV, ['web', 'api', 'worker']);
  });
});

describe('AWS service load balancing: a group no load balancer uses yet (ELB\'s answers replayed)', () => {
  it('attach registers the instances and returns, saying why it did not wait for their health', async () => {
    // Mocked here only: the moto suite above needs the real clients.
    const elb = mockClient(ElasticLoadBalancingV2Client);
    const ec2 = mockClient(EC2Client);
    onTestFinished(() => {
      elb.restore();
      ec2.restore();
    });
    const cfg = resolveAwsConfig({ region: 'eu-west-1', credentials: MOTO_CREDENTIALS, imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro', name: 'unit', subnetIds: ['subnet-1'] });
    const name = targetGroupName('unit', ENV.name, WEB.name);
    const arn = `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/${name}/0123456789abcdef`;
    ec2.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-1', VpcId: 'vpc-1' }] });
    elb.on(DescribeTargetGroupsCommand).resolves({
      TargetGroups: [{ TargetGroupArn: arn, TargetGroupName: name, Protocol: 'HTTP', Port: 8080, VpcId: 'vpc-1', TargetType: 'instance', HealthCheckPath: '/healthz', HealthyThresholdCount: 2, HealthCheckIntervalSeconds: 5, HealthCheckTimeoutSeconds: 4, LoadBalancerArns: [] }],
    });
    elb.on(RegisterTargetsCommand).resolves({});
    elb.on(DescribeTargetHealthCommand).resolves({
      TargetHealthDescriptions: [{ Target: { Id: 'i-00000000000000001', Port: 8080 }, TargetHealth: { State: 'unused', Reason: 'Target.NotInUse', Description: 'Target group is not configured to receive traffic from the load balancer' } }],
    });
    const logs: string[] = [];
    const lb = new AwsServiceLoadBalancing(cfg, { log: (line) => logs.push(line), targetGroups: { pollMs: 5 } });
    await lb.attach(ENV, WEB, [hostOf('i-00000000000000001', 1)], { deadline: Date.now() + 60_000 });
    lb.close();
    expect(elb.commandCalls(RegisterTargetsCommand).map((c) => c.args[0].input)).toEqual([{ TargetGroupArn: arn, Targets: [{ Id: 'i-00000000000000001' }] }]);
    expect(elb.commandCalls(DescribeTargetHealthCommand)).toHaveLength(1);
    expect(logs).toHaveLength(1);
    expect(logs[0]).toContain(`environment prod: service web: target group ${name} is not used by any load balancer`);
    expect(logs[0]).toContain('take traffic once a listener forwards to the group');
  });
});
