/**
 * AwsGroups' handling of what Auto Scaling answers: a move whose attach fails after its detach
 * never loses the instance (retried once, then put back into the pool group, or reported as
 * detached so the caller terminates it), a second claim of a taken instance attaches nothing, and
 * throttling is retried by the SDK (real SDK, fake HTTP handler: aws-sdk-client-mock replaces
 * `send`, so the SDK's retry middleware never runs under it).
 */
import { Readable } from 'node:stream';
import { AttachInstancesCommand, AutoScalingClient, AutoScalingServiceException, DescribeAutoScalingGroupsCommand, DescribeAutoScalingInstancesCommand, DetachInstancesCommand, UpdateAutoScalingGroupCommand } from '@aws-sdk/client-auto-scaling';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import type { AwsDriverConfig } from './config.js';
import { AwsGroups } from './groups.js';
import type { RequestHandler } from './sdk.js';

const asg = mockClient(AutoScalingClient);
const base: AwsDriverConfig = { region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro', name: 'unit' };
const POOL = 'unit-pool-p';
const USER = 'unit-group-a';
const I = 'i-0123456789abcdef0';

function awsError(name: string, message = `${name} happened`): AutoScalingServiceException {
  return new AutoScalingServiceException({ name, message, $fault: 'client', $metadata: { httpStatusCode: 400, requestId: 'req-7' } });
}

/** The user group exists with room for one more instance, and the detach succeeds. */
function detachable(): void {
  asg.on(DescribeAutoScalingGroupsCommand).resolves({ AutoScalingGroups: [{ AutoScalingGroupName: USER, MinSize: 0, MaxSize: 4, DesiredCapacity: 0, Instances: [], AvailabilityZones: [], CreatedTime: new Date(), DefaultCooldown: 300, HealthCheckType: 'EC2' }] });
  asg.on(DetachInstancesCommand).resolves({ Activities: [{ ActivityId: 'a1', AutoScalingGroupName: POOL, Cause: 'detach', StartTime: new Date(), StatusCode: 'InProgress' }] });
}

const attachCalls = (group: string): number => asg.commandCalls(AttachInstancesCommand).filter((c) => c.args[0].input.AutoScalingGroupName === group).length;

describe('AwsGroups: moves that fail half-way', () => {
  beforeEach(() => asg.reset());
  // The mock stubs every AutoScalingClient's send: the throttling tests below need the real one.
  afterAll(() => asg.restore());

  it('detach ok, attach fails twice: the instance goes back to the pool group and the error says so', async () => {
    detachable();
    asg.on(AttachInstancesCommand, { AutoScalingGroupName: USER }).rejects(awsError('ValidationError', 'Instance i-0123456789abcdef0 is not in a running state'));
    asg.on(AttachInstancesCommand, { AutoScalingGroupName: POOL }).resolves({});
    const err = await rejection(new AwsGroups(base).moveInstance(I, POOL, USER));
    expect(err.code).toBe('claim_failed');
    expect(err.message).toContain(`instance ${I} could not be attached to ${USER} and was put back into ${POOL}`);
    expect(err.details).toMatchObject({ instanceId: I, state: 'returned-to-pool', fromGroup: POOL, toGroup: USER });
    expect(attachCalls(USER)).toBe(2);
    expect(attachCalls(POOL)).toBe(1);
    expect(asg.commandCalls(DetachInstancesCommand)[0]?.args[0].input).toMatchObject({ ShouldDecrementDesiredCapacity: false, InstanceIds: [I] });
  });

  it('detach ok and no attach works, not even back to the pool: a typed error naming the detached instance', async () => {
    detachable();
    asg.on(AttachInstancesCommand).rejects(awsError('ServiceUnavailable', 'try later'));
    const err = await rejection(new AwsGroups(base).moveInstance(I, POOL, USER));
    expect(err.code).toBe('claim_failed');
    expect(err.details).toMatchObject({ instanceId: I, state: 'detached' });
    expect(err.message).toContain('it is in no group now');
    expect(err.hint).toContain('Terminate the instance');
    expect(attachCalls(USER)).toBe(2);
    expect(attachCalls(POOL)).toBe(1);
  });

  it('an attach that fails once is retried: the move succeeds, nothing goes back to the pool', async () => {
    detachable();
    asg.on(AttachInstancesCommand, { AutoScalingGroupName: USER }).rejectsOnce(awsError('ResourceContention')).resolves({});
    await new AwsGroups(base).moveInstance(I, POOL, USER);
    expect(attachCalls(USER)).toBe(2);
    expect(attachCalls(POOL)).toBe(0);
  });

  it('the retry finds the first attach took effect (its answer was lost): success without a second attach', async () => {
    detachable();
    asg.on(AttachInstancesCommand).rejects(awsError('TimeoutError', 'socket hang up'));
    asg.on(DescribeAutoScalingGroupsCommand).resolvesOnce({ AutoScalingGroups: [{ AutoScalingGroupName: USER, MinSize: 0, MaxSize: 4, DesiredCapacity: 0, Instances: [], AvailabilityZones: [], CreatedTime: new Date(), DefaultCooldown: 300, HealthCheckType: 'EC2' }] }).resolves({
      AutoScalingGroups: [{ AutoScalingGroupName: USER, MinSize: 0, MaxSize: 4, DesiredCapacity: 1, Instances: [{ InstanceId: I, LifecycleState: 'InService', AvailabilityZone: 'a', HealthStatus: 'Healthy', ProtectedFromScaleIn: false }], AvailabilityZones: [], CreatedTime: new Date(), DefaultCooldown: 300, HealthCheckType: 'EC2' }],
    });
    await new AwsGroups(base).moveInstance(I, POOL, USER);
    expect(attachCalls(USER)).toBe(1);
    expect(attachCalls(POOL)).toBe(0);
  });

  it('an instance another claim already detached: conflict, and nothing is attached', async () => {
    asg.on(DetachInstancesCommand).rejects(awsError('ValidationError', `The instance ${I} is not part of Auto Scaling group ${POOL}.`));
    const err = await rejection(new AwsGroups(base).moveInstance(I, POOL, USER));
    expect(err.code).toBe('conflict');
    expect(err.message).toContain(`instance ${I} is not in Auto Scaling group ${POOL}`);
    expect(asg.commandCalls(AttachInstancesCommand)).toHaveLength(0);

    asg.reset();
    asg.on(DetachInstancesCommand).resolves({ Activities: [] }); // moto's answer to the same
    asg.on(DescribeAutoScalingInstancesCommand).resolves({ AutoScalingInstances: [{ InstanceId: I, AutoScalingGroupName: 'bgrp-group-someone', AvailabilityZone: 'a', LifecycleState: 'InService', HealthStatus: 'HEALTHY', ProtectedFromScaleIn: false }] });
    const taken = await rejection(new AwsGroups(base).moveInstance(I, POOL, USER));
    expect(taken.code).toBe('conflict');
    expect(taken.message).toContain('bgrp-group-someone');
    expect(asg.commandCalls(AttachInstancesCommand)).toHaveLength(0);
  });

  it('a detach answered with no activity for an instance now in no group (its group terminated it) attaches nothing', async () => {
    asg.on(DetachInstancesCommand).resolves({ Activities: [] });
    asg.on(DescribeAutoScalingInstancesCommand).resolves({ AutoScalingInstances: [] });
    asg.on(AttachInstancesCommand).resolves({});
    const err = await rejection(new AwsGroups(base).moveInstance(I, POOL, USER));
    expect(err.code).toBe('conflict');
    expect(err.message).toContain('in no Auto Scaling group any more');
    expect(asg.commandCalls(AttachInstancesCommand)).toHaveLength(0);
  });

  it('a full user group gets its max raised first, once, before the attach', async () => {
    detachable();
    asg.on(DescribeAutoScalingGroupsCommand).resolves({ AutoScalingGroups: [{ AutoScalingGroupName: USER, MinSize: 0, MaxSize: 0, DesiredCapacity: 0, Instances: [], AvailabilityZones: [], CreatedTime: new Date(), DefaultCooldown: 300, HealthCheckType: 'EC2' }] });
    asg.on(UpdateAutoScalingGroupCommand).resolves({});
    asg.on(AttachInstancesCommand).resolves({});
    const groups = new AwsGroups(base);
    await groups.ensureUserGroup('a');
    await groups.moveInstance(I, POOL, USER);
    await groups.moveInstance('i-0fedcba9876543210', POOL, USER);
    expect(asg.commandCalls(UpdateAutoScalingGroupCommand).map((c) => c.args[0].input.MaxSize)).toEqual([2]);
    expect(asg.commandCalls(DescribeAutoScalingGroupsCommand)).toHaveLength(1); // ensure only, never on a move
  });

  it('errors name the Auto Scaling permission and keep the AWS details', async () => {
    asg.on(DetachInstancesCommand).rejects(awsError('AccessDenied', 'User is not authorized'));
    const err = await rejection(new AwsGroups(base).moveInstance(I, POOL, USER));
    expect(err.code).toBe('driver_unavailable');
    expect(err.message).toContain('lack the permission autoscaling:DetachInstances');
    expect(err.details).toMatchObject({ operation: 'DetachInstances', awsCode: 'AccessDenied', requestId: 'req-7', group: POOL, instanceId: I });
  });
});

const NS = 'xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"';
const THROTTLED = { status: 400, xml: `<ErrorResponse ${NS}><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r1</RequestId></ErrorResponse>` };
const REPLIES: Record<string, { status: number; xml: string }> = {
  DescribeAutoScalingGroups: { status: 200, xml: `<DescribeAutoScalingGroupsResponse ${NS}><DescribeAutoScalingGroupsResult><AutoScalingGroups><member><AutoScalingGroupName>${USER}</AutoScalingGroupName><MinSize>0</MinSize><MaxSize>4</MaxSize><DesiredCapacity>0</DesiredCapacity><Instances/></member></AutoScalingGroups></DescribeAutoScalingGroupsResult><ResponseMetadata><RequestId>r2</RequestId></ResponseMetadata></DescribeAutoScalingGroupsResponse>` },
  DetachInstances: { status: 200, xml: `<DetachInstancesResponse ${NS}><DetachInstancesResult><Activities><member><ActivityId>a1</ActivityId><AutoScalingGroupName>${POOL}</AutoScalingGroupName><Cause>c</Cause><StartTime>2024-01-01T00:00:00Z</StartTime><StatusCode>InProgress</StatusCode></member></Activities></DetachInstancesResult><ResponseMetadata><RequestId>r3</RequestId></ResponseMetadata></DetachInstancesResponse>` },
  AttachInstances: { status: 200, xml: `<AttachInstancesResponse ${NS}><ResponseMetadata><RequestId>r4</RequestId></ResponseMetadata></AttachInstancesResponse>` },
};

/** Throttles the first `throttled` requests of each action, then answers from REPLIES. */
function throttlingHandler(throttled: number): RequestHandler {
  const seen = new Map<string, number>();
  return {
    handle: (request: { body?: unknown }) => {
      const action = /Action=(\w+)/.exec(String(request.body))?.[1] ?? '?';
      const n = (seen.get(action) ?? 0) + 1;
      seen.set(action, n);
      const reply = n <= throttled ? THROTTLED : REPLIES[action];
      if (!reply) return Promise.reject(new Error(`unexpected ${action}`));
      return Promise.resolve({ response: { statusCode: reply.status, reason: '', headers: { 'content-type': 'text/xml' }, body: Readable.from([Buffer.from(reply.xml)]) } });
    },
    updateHttpClientConfig: () => undefined,
    httpHandlerConfigs: () => ({}),
  };
}

describe('AwsGroups: throttling (real SDK retries)', () => {
  it('a throttled detach, describe and attach are retried and the move succeeds: 3 calls (a user group this process never ensured is described once), 6 attempts', async () => {
    const groups = new AwsGroups(base, { requestHandler: throttlingHandler(1) });
    await groups.moveInstance(I, POOL, USER);
    expect(groups.callCounts()).toEqual({ AttachInstances: 1, DescribeAutoScalingGroups: 1, DetachInstances: 1 });
    expect(groups.attemptCounts()).toEqual({ AttachInstances: 2, DescribeAutoScalingGroups: 2, DetachInstances: 2 });
    groups.close();
  }, 20_000);

  it('throttled to the end: the error says Auto Scaling throttled and after how many attempts', async () => {
    const groups = new AwsGroups({ ...base, maxAttempts: 2 }, { requestHandler: throttlingHandler(100) });
    const err = await rejection(groups.moveInstance(I, POOL, USER));
    expect(err.message).toBe('AWS throttled DetachInstances in region eu-west-1 and was still throttling after 2 attempts');
    expect(err.hint).toContain('Auto Scaling API calls');
    groups.close();
  }, 20_000);
});
