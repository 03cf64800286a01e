/**
 * Who may enrol as a pool's host (AwsFleet.admit): only an instance the pool's own group launched
 * and has (or is putting) in service. A warm pool's instance is told to ask again later (503, which
 * the agent retries); one of another group, or of none, is refused for good (403).
 */
import { AutoScalingClient, DescribeAutoScalingInstancesCommand } from '@aws-sdk/client-auto-scaling';
import { DescribeInstancesCommand, EC2Client } from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import { AwsDriver } from './aws-driver.js';

const asg = mockClient(AutoScalingClient);
const ec2 = mockClient(EC2Client);
const I = 'i-0123456789abcdef0';

function where(group: string | undefined, lifecycleState: string): void {
  asg.on(DescribeAutoScalingInstancesCommand).resolves({
    AutoScalingInstances: group ? [{ InstanceId: I, AutoScalingGroupName: group, LifecycleState: lifecycleState, AvailabilityZone: 'eu-west-1a', HealthStatus: 'HEALTHY', ProtectedFromScaleIn: false }] : [],
  });
}

describe('AwsFleet.admit', () => {
  const driver = new AwsDriver({ region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro', name: 'unit' });
  beforeEach(() => {
    asg.reset();
    ec2.reset();
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [{ InstanceId: I, PrivateIpAddress: '10.0.3.7', LaunchTime: new Date('2026-11-22T10:00:00Z') }] }] });
  });
  afterAll(() => {
    asg.restore();
    ec2.restore();
    driver.close();
  });

  it('admits an instance of the pool group that is in service, with its address and group', async () => {
    where('unit-pool-web', 'InService');
    const admitted = await driver.fleet.admit('web', I);
    expect(admitted).toEqual({ ip: '10.0.3.7', driverData: { instanceId: I, launchedAt: '2026-11-22T10:00:00.000Z', fleet: true, group: 'unit-pool-web' } });
  });

  it('tells a warm pool instance to enrol later (503), and refuses other groups, no group and bad ids (403)', async () => {
    where('unit-pool-web', 'Warmed:Running');
    const warm = await rejection(driver.fleet.admit('web', I));
    expect(warm).toMatchObject({ code: 'driver_unavailable', status: 503 });
    expect(warm.message).toContain('Warmed:Running in the warm pool');

    where('unit-pool-other', 'InService');
    expect(await rejection(driver.fleet.admit('web', I))).toMatchObject({ code: 'forbidden', status: 403 });
    where(undefined, '');
    expect((await rejection(driver.fleet.admit('web', I))).message).toContain('in no Auto Scaling group');
    where('unit-pool-web', 'Terminating');
    expect(await rejection(driver.fleet.admit('web', I))).toMatchObject({ code: 'forbidden' });
    const calls = asg.commandCalls(DescribeAutoScalingInstancesCommand).length;
    expect(await rejection(driver.fleet.admit('web', '../etc/passwd'))).toMatchObject({ code: 'forbidden' });
    expect(asg.commandCalls(DescribeAutoScalingInstancesCommand).length).toBe(calls); // not even asked
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(0);
  });
});
