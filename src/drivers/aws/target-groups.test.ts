/**
 * TargetGroups against aws-sdk-client-mock: the derived names ELB accepts, idempotent ensure (and
 * the race with another server), batching, the waits' outcomes (healthy, timed out with ELB's
 * reasons, cancelled, drained) and the errors a caller can act on (permission, in use).
 */
import { DescribeSubnetsCommand, EC2Client } from '@aws-sdk/client-ec2';
import {
  CreateTargetGroupCommand,
  DeleteTargetGroupCommand,
  DeregisterTargetsCommand,
  DescribeTargetGroupsCommand,
  DescribeTargetHealthCommand,
  DuplicateTargetGroupNameException,
  ElasticLoadBalancingV2Client,
  ElasticLoadBalancingV2ServiceException,
  InvalidTargetException,
  ModifyTargetGroupCommand,
  RegisterTargetsCommand,
  ResourceInUseException,
  TargetGroupNotFoundException,
  type TargetGroup,
  type TargetHealthDescription,
} from '@aws-sdk/client-elastic-load-balancing-v2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import { resolveAwsConfig } from './config.js';
import { TARGET_BATCH, targetGroupName, TargetGroups, type EnsureTargetGroupSpec } from './target-groups.js';

const elb = mockClient(ElasticLoadBalancingV2Client);
const ec2 = mockClient(EC2Client);
const cfg = resolveAwsConfig({ region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro', name: 'unit', subnetIds: ['subnet-1', 'subnet-2'] });
const NAME = targetGroupName('unit', 'prod', 'web');
const ARN = `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/${NAME}/0123456789abcdef`;
const SPEC: EnsureTargetGroupSpec = { environment: 'prod', service: 'web', port: 8080, protocol: 'HTTP', healthCheckPath: '/ready' };
/** What ELB allows: 1-32 alphanumerics and single hyphens, no hyphen first or last. */
const VALID = /^(?=.{1,32}$)[a-z0-9]+(-[a-z0-9]+)*$/;
const meta = { httpStatusCode: 400, requestId: 'req-9' };

const groups = (options: ConstructorParameters<typeof TargetGroups>[1] = {}): TargetGroups => new TargetGroups(cfg, { pollMs: 5, maxPollMs: 20, ...options });
const group = (over: Partial<TargetGroup> = {}): TargetGroup => ({
  TargetGroupArn: ARN, TargetGroupName: NAME, Protocol: 'HTTP', Port: 8080, VpcId: 'vpc-1', TargetType: 'instance',
  HealthCheckPath: '/ready', HealthyThresholdCount: 5, HealthCheckIntervalSeconds: 30, HealthCheckTimeoutSeconds: 5, LoadBalancerArns: [], ...over,
});
const notFound = (): TargetGroupNotFoundException => new TargetGroupNotFoundException({ message: 'One or more target groups not found', $metadata: meta });
const awsError = (name: string, message = `${name} happened`, attempts?: number): ElasticLoadBalancingV2ServiceException =>
  new ElasticLoadBalancingV2ServiceException({ name, message, $fault: 'client', $metadata: { ...meta, ...(attempts ? { attempts } : {}) } });
const health = (id: string, State: string, Reason?: string, Description?: string, Port = 8080): TargetHealthDescription =>
  ({ Target: { Id: id, Port }, TargetHealth: { State, ...(Reason ? { Reason } : {}), ...(Description ? { Description } : {}) } }) as TargetHealthDescription;
const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `i-${String(i).padStart(17, '0')}`);

beforeEach(() => {
  elb.reset();
  ec2.reset();
  ec2.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-1', VpcId: 'vpc-1' }] });
});
afterAll(() => {
  elb.restore();
  ec2.restore();
});

describe('target group names', () => {
  it('short inputs stay readable, with the hash that keeps them apart', () => {
    expect(NAME).toMatch(/^unit-prod-web-[0-9a-z]{10}$/);
    expect(targetGroupName('unit', 'prod', 'web')).toBe(NAME); // stable
  });

  it('1000 random long names: all valid for ELB, all different, each stable', () => {
    const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-';
    const part = (): string => `x${Array.from({ length: 30 + Math.floor(Math.random() * 98) }, () => chars[Math.floor(Math.random() * chars.length)]).join('')}`;
    const inputs = new Map<string, [string, string, string]>();
    while (inputs.size < 1000) {
      const input: [string, string, string] = ['berth-production_cluster', part(), part()];
      inputs.set(JSON.stringify(input), input);
    }
    const names = new Set<string>();
    for (const [prefix, env, service] of inputs.values()) {
      const name = targetGroupName(prefix, env, service);
      expect(name).toMatch(VALID);
      expect(targetGroupName(prefix, env, service)).toBe(name);
      names.add(name);
    }
    expect(names.size).toBe(1000);
  });

  it('inputs that read the same still get different names', () => {
    const pairs: [string, string, string][][] = [
      [['b', 'a-b', 'c'], ['b', 'a', 'b-c']],
      [['b', 'prod', 'Web'], ['b', 'prod', 'web']],
      [['b', 'x_y', 's'], ['b', 'x.y', 's']],
    ];
    for (const [a, b] of pairs) expect(targetGroupName(...(a ?? ['', '', '']))).not.toBe(targetGroupName(...(b ?? ['', '', ''])));
  });

  it('names that cannot be tag values are refused before any call', async () => {
    for (const bad of ['', '-x', 'a b', 'x'.repeat(129)]) {
      expect((await rejection(groups({ vpcId: 'vpc-1' }).ensure({ ...SPEC, service: bad }))).code).toBe('validation_failed');
    }
    expect(elb.calls()).toHaveLength(0);
  });
});

describe('ensure', () => {
  it('creates the group in the first subnet\'s VPC with its identity in tags; the VPC is looked up once', async () => {
    elb.on(DescribeTargetGroupsCommand).rejectsOnce(notFound()).resolves({ TargetGroups: [group()] });
    elb.on(CreateTargetGroupCommand).resolves({ TargetGroups: [group()] });
    const tg = groups();
    expect(await tg.ensure(SPEC)).toEqual({ arn: ARN, name: NAME, created: true, modified: false });
    expect(elb.commandCalls(CreateTargetGroupCommand)[0]?.args[0].input).toEqual({
      Name: NAME, Protocol: 'HTTP', Port: 8080, VpcId: 'vpc-1', TargetType: 'instance', HealthCheckProtocol: 'HTTP',
      HealthCheckPath: '/ready', HealthyThresholdCount: 5, HealthCheckIntervalSeconds: 30, HealthCheckTimeoutSeconds: 5,
      Tags: [{ Key: 'berth:managed-by', Value: 'unit' }, { Key: 'berth:environment', Value: 'prod' }, { Key: 'berth:service', Value: 'web' }],
    });
    expect(ec2.commandCalls(DescribeSubnetsCommand)[0]?.args[0].input).toEqual({ SubnetIds: ['subnet-1'] });

    expect(await tg.ensure(SPEC)).toEqual({ arn: ARN, name: NAME, created: false, modified: false });
    expect(ec2.commandCalls(DescribeSubnetsCommand)).toHaveLength(1);
    expect(elb.commandCalls(CreateTargetGroupCommand)).toHaveLength(1);
  });

  it('an existing group as wanted costs one call; a changed health check is modified in place', async () => {
    elb.on(DescribeTargetGroupsCommand).resolves({ TargetGroups: [group()] });
    const tg = groups({ vpcId: 'vpc-1' });
    await tg.ensure(SPEC);
    expect(elb.calls()).toHaveLength(1);

    expect(await tg.ensure({ ...SPEC, healthCheckPath: '/healthz', healthyThreshold: 2, intervalS: 5 })).toMatchObject({ created: false, modified: true });
    expect(elb.commandCalls(ModifyTargetGroupCommand)[0]?.args[0].input).toEqual({ TargetGroupArn: ARN, HealthCheckPath: '/healthz', HealthyThresholdCount: 2, HealthCheckIntervalSeconds: 5, HealthCheckTimeoutSeconds: 4 });
    expect(elb.commandCalls(CreateTargetGroupCommand)).toHaveLength(0);
  });

  it('a changed port cannot be modified: a conflict that says so and how to go on', async () => {
    elb.on(DescribeTargetGroupsCommand).resolves({ TargetGroups: [group({ Port: 9090 })] });
    const err = await rejection(groups({ vpcId: 'vpc-1' }).ensure(SPEC));
    expect(err.code).toBe('conflict');
    expect(err.message).toContain('exists with HTTP port 9090');
    expect(err.message).toContain('cannot change a target group\'s port');
    expect(err.hint).toContain('port override');
    expect(elb.commandCalls(ModifyTargetGroupCommand)).toHaveLength(0);
  });

  it('a create that loses the race to another server finds the winner\'s group', async () => {
    elb.on(DescribeTargetGroupsCommand).rejectsOnce(notFound()).resolves({ TargetGroups: [group()] });
    elb.on(CreateTargetGroupCommand).rejects(new DuplicateTargetGroupNameException({ message: 'A target group with the same name exists', $metadata: meta }));
    expect(await groups({ vpcId: 'vpc-1' }).ensure(SPEC)).toEqual({ arn: ARN, name: NAME, created: false, modified: false });
    expect(elb.commandCalls(DescribeTargetGroupsCommand)).toHaveLength(2);
  });

  it('bad settings are refused before any call', async () => {
    for (const bad of [{ port: 0 }, { healthCheckPath: 'ready' }, { intervalS: 4 }, { healthyThreshold: 11 }]) {
      expect((await rejection(groups({ vpcId: 'vpc-1' }).ensure({ ...SPEC, ...bad }))).code).toBe('validation_failed');
    }
    expect(elb.calls()).toHaveLength(0);
  });
});

describe('register and deregister', () => {
  it(`batches of ${TARGET_BATCH}, duplicates once, the port override on every target`, async () => {
    elb.on(RegisterTargetsCommand).resolves({});
    await groups().register(ARN, [...ids(45), ...ids(3)], 8081);
    const sent = elb.commandCalls(RegisterTargetsCommand).map((c) => c.args[0].input.Targets ?? []);
    expect(sent.map((t) => t.length)).toEqual([20, 20, 5]);
    expect(sent.flat().every((t) => t.Port === 8081)).toBe(true);
  });

  it('a refused batch after others went through says which ones did', async () => {
    elb.on(RegisterTargetsCommand).resolvesOnce({}).rejects(new InvalidTargetException({ message: 'The following targets are not in a running state', $metadata: meta }));
    const err = await rejection(groups().register(ARN, ids(30)));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toContain('after 20 of 30 targets went through');
    expect(err.details).toMatchObject({ done: ids(20), failed: ids(30).slice(20) });
  });

  it('a target that no longer exists does not keep the others of its batch registered', async () => {
    // Like the real send: a promise either way.
    elb.on(DeregisterTargetsCommand).callsFake((input: { Targets: { Id: string }[] }) =>
      input.Targets.some((t) => t.Id === 'i-gone') ? Promise.reject(new InvalidTargetException({ message: 'not a valid target', $metadata: meta })) : Promise.resolve({}),
    );
    await groups().deregister(ARN, ['i-a', 'i-gone', 'i-b']);
    expect(elb.commandCalls(DeregisterTargetsCommand).map((c) => c.args[0].input.Targets?.map((t) => t.Id))).toEqual([['i-a', 'i-gone', 'i-b'], ['i-a'], ['i-gone'], ['i-b']]);
  });
});

describe('waits', () => {
  it('healthy: polls through ELB\'s initial states until every instance is healthy', async () => {
    elb.on(DescribeTargetHealthCommand)
      .resolvesOnce({ TargetHealthDescriptions: [health('i-1', 'initial', 'Elb.RegistrationInProgress')] })
      .resolvesOnce({ TargetHealthDescriptions: [health('i-1', 'initial', 'Elb.InitialHealthChecking'), health('i-2', 'healthy')] })
      .resolves({ TargetHealthDescriptions: [health('i-1', 'healthy'), health('i-2', 'healthy')] });
    await groups().waitHealthy(ARN, ['i-1', 'i-2'], { timeoutMs: 5_000 });
    expect(elb.commandCalls(DescribeTargetHealthCommand)).toHaveLength(3);
  });

  it('the deadline: one error naming each instance that is not healthy with ELB\'s reason and description', async () => {
    elb.on(DescribeTargetHealthCommand).resolves({
      TargetHealthDescriptions: [health('i-ok', 'healthy'), health('i-bad', 'unhealthy', 'Target.ResponseCodeMismatch', 'Health checks failed with these codes: [404]')],
    });
    const err = await rejection(groups().waitHealthy(ARN, ['i-ok', 'i-bad', 'i-new'], { timeoutMs: 100 }));
    expect(err.code).toBe('deadline_exceeded');
    expect(err.message).toContain(`target group ${NAME}: 2 of 3 instance(s) not healthy after 0.1 s`);
    expect(err.message).toContain('i-bad: unhealthy (Target.ResponseCodeMismatch: Health checks failed with these codes: [404])');
    expect(err.message).toContain('i-new: missing (Target.NotRegistered');
    expect(err.message).not.toContain('i-ok');
    expect(err.hint).toContain('healthCheckPath');
    expect(err.details?.['targets']).toHaveLength(2);
    expect(elb.commandCalls(DescribeTargetHealthCommand).length).toBeGreaterThan(1); // kept waiting
  });

  it('a group no load balancer uses fails at once: ELB would never health-check it', async () => {
    elb.on(DescribeTargetHealthCommand).resolves({ TargetHealthDescriptions: [health('i-1', 'unused', 'Target.NotInUse', 'Target group is not configured to receive traffic from the load balancer')] });
    const err = await rejection(groups().waitHealthy(ARN, ['i-1'], { timeoutMs: 60_000 }));
    expect(err.code).toBe('invalid_state');
    expect(err.hint).toContain('listener rule');
    expect(elb.commandCalls(DescribeTargetHealthCommand)).toHaveLength(1);
  });

  it('an abort ends the wait at once', async () => {
    elb.on(DescribeTargetHealthCommand).resolves({ TargetHealthDescriptions: [health('i-1', 'initial', 'Elb.InitialHealthChecking')] });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = Date.now();
    const err = await rejection(groups({ pollMs: 10_000 }).waitHealthy(ARN, ['i-1'], { timeoutMs: 60_000, signal: controller.signal }));
    expect(err.code).toBe('deadline_exceeded');
    expect(err.message).toContain('was cancelled');
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('drained: waits while ELB drains, done when the instance is no longer listed', async () => {
    elb.on(DescribeTargetHealthCommand)
      .resolvesOnce({ TargetHealthDescriptions: [health('i-1', 'draining', 'Target.DeregistrationInProgress'), health('i-2', 'healthy')] })
      .resolves({ TargetHealthDescriptions: [health('i-2', 'healthy')] });
    await groups().waitDrained(ARN, ['i-1'], { timeoutMs: 5_000 });
    expect(elb.commandCalls(DescribeTargetHealthCommand)).toHaveLength(2);

    elb.on(DescribeTargetHealthCommand).resolves({ TargetHealthDescriptions: [health('i-1', 'draining', 'Target.DeregistrationInProgress', 'Target deregistration is in progress')] });
    const err = await rejection(groups().waitDrained(ARN, ['i-1'], { timeoutMs: 50 }));
    expect(err.message).toContain('i-1: draining (Target.DeregistrationInProgress');
    expect(err.hint).toContain('deregistration_delay.timeout_seconds');
  });
});

describe('remove', () => {
  it('deregisters every target (with its port) and deletes the group; not found is success', async () => {
    elb.on(DescribeTargetGroupsCommand).resolves({ TargetGroups: [group()] });
    elb.on(DescribeTargetHealthCommand).resolves({ TargetHealthDescriptions: [health('i-1', 'healthy'), health('i-2', 'unhealthy', 'Target.Timeout', undefined, 8081)] });
    await groups().remove('prod', 'web');
    expect(elb.commandCalls(DeregisterTargetsCommand)[0]?.args[0].input).toEqual({ TargetGroupArn: ARN, Targets: [{ Id: 'i-1', Port: 8080 }, { Id: 'i-2', Port: 8081 }] });
    expect(elb.commandCalls(DeleteTargetGroupCommand)[0]?.args[0].input).toEqual({ TargetGroupArn: ARN });

    elb.reset();
    elb.on(DescribeTargetGroupsCommand).rejects(notFound());
    await groups().remove('prod', 'web');
    expect(elb.commandCalls(DeleteTargetGroupCommand)).toHaveLength(0);
  });

  it('a group a load balancer routes to is refused before anything is deregistered', async () => {
    const lb = 'arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/front/1234';
    elb.on(DescribeTargetGroupsCommand).resolves({ TargetGroups: [group({ LoadBalancerArns: [lb] })] });
    const err = await rejection(groups().remove('prod', 'web'));
    expect(err.code).toBe('conflict');
    expect(err.message).toContain(`still used by load balancer(s) ${lb}`);
    expect(elb.commandCalls(DeregisterTargetsCommand)).toHaveLength(0);
    expect(elb.commandCalls(DeleteTargetGroupCommand)).toHaveLength(0);
  });

  it('ELB\'s ResourceInUse on the delete becomes the same conflict', async () => {
    elb.on(DescribeTargetGroupsCommand).resolves({ TargetGroups: [group()] });
    elb.on(DescribeTargetHealthCommand).resolves({ TargetHealthDescriptions: [] });
    elb.on(DeleteTargetGroupCommand).rejects(new ResourceInUseException({ message: 'Target group is currently in use by a listener or a rule', $metadata: meta }));
    const err = await rejection(groups().remove('prod', 'web'));
    expect(err.code).toBe('conflict');
    expect(err.message).toContain('ResourceInUse');
    expect(err.hint).toContain('listener rules');
  });
});

describe('errors', () => {
  it('a permission error names the elasticloadbalancing permission (and AddTags for tags at creation)', async () => {
    elb.on(DescribeTargetGroupsCommand).rejects(notFound());
    elb.on(CreateTargetGroupCommand).rejects(awsError('AccessDenied', 'User: arn:aws:iam::1:user/x is not authorized to perform: elasticloadbalancing:CreateTargetGroup'));
    const err = await rejection(groups({ vpcId: 'vpc-1' }).ensure(SPEC));
    expect(err.code).toBe('driver_unavailable');
    expect(err.message).toContain('lack the permission elasticloadbalancing:CreateTargetGroup (or elasticloadbalancing:AddTags) in region eu-west-1');
    expect(err.hint).toContain('Grant elasticloadbalancing:CreateTargetGroup, elasticloadbalancing:AddTags');
    expect(err.details).toMatchObject({ operation: 'CreateTargetGroup', awsCode: 'AccessDenied', requestId: 'req-9' });

    elb.on(DescribeTargetHealthCommand).rejects(awsError('AccessDenied'));
    expect((await rejection(groups().waitHealthy(ARN, ['i-1'], { timeoutMs: 1_000 }))).message).toContain('elasticloadbalancing:DescribeTargetHealth');
  });

  it('the VPC lookup is EC2\'s: its permission is ec2:DescribeSubnets', async () => {
    ec2.on(DescribeSubnetsCommand).rejects(Object.assign(new Error('You are not authorized'), { name: 'UnauthorizedOperation' }));
    elb.on(DescribeTargetGroupsCommand).rejects(notFound());
    expect((await rejection(groups().ensure(SPEC))).message).toContain('ec2:DescribeSubnets');
  });

  it('throttling after the SDK\'s last attempt says it is ELB\'s rate', async () => {
    elb.on(DescribeTargetGroupsCommand).rejects(awsError('Throttling', 'Rate exceeded', 3));
    const err = await rejection(groups({ vpcId: 'vpc-1' }).ensure(SPEC));
    expect(err.message).toContain('still throttling after 3 attempts');
    expect(err.hint).toContain('Elastic Load Balancing API calls');
  });
});
