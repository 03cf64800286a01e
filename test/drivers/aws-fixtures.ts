/**
 * What AWS driver tests on moto need from the emulator: an AMI that exists in it (one of moto's
 * defaults, looked up rather than hard-coded, as moto's list changes between releases), its default
 * VPC's subnets and security group, and a plain EC2 client to look at what the driver made.
 */
import { DescribeImagesCommand, DescribeInstancesCommand, DescribeSecurityGroupsCommand, DescribeSubnetsCommand, EC2Client, type Instance, type IpPermission } from '@aws-sdk/client-ec2';
import type { HostSpec } from '../../src/drivers/types.js';
import type { AwsDriverConfig } from '../../src/drivers/aws/config.js';
import { MOTO_CREDENTIALS, MOTO_REGION } from '../helpers/moto.js';

export interface MotoNetwork {
  ec2: EC2Client;
  imageId: string;
  subnetIds: string[];
  securityGroupIds: string[];
}

export async function motoNetwork(endpoint: string): Promise<MotoNetwork> {
  const ec2 = new EC2Client({ region: MOTO_REGION, endpoint, credentials: MOTO_CREDENTIALS });
  const [images, subnets, groups] = await Promise.all([
    ec2.send(new DescribeImagesCommand({ Owners: ['amazon'], Filters: [{ Name: 'architecture', Values: ['x86_64'] }] })),
    ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'default-for-az', Values: ['true'] }] })),
    ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: ['default'] }] })),
  ]);
  const linux = images.Images?.find((i) => i.Platform === undefined && /amzn|ubuntu|linux/i.test(i.Name ?? '')) ?? images.Images?.[0];
  const subnetIds = (subnets.Subnets ?? []).map((s) => s.SubnetId ?? '').filter(Boolean).slice(0, 2);
  const vpcId = subnets.Subnets?.[0]?.VpcId;
  const group = groups.SecurityGroups?.find((g) => g.VpcId === vpcId);
  if (!linux?.ImageId || subnetIds.length === 0 || !group?.GroupId) throw new Error('moto has no default AMI, subnet or security group: is it moto[server] >= 5?');
  return { ec2, imageId: linux.ImageId, subnetIds, securityGroupIds: [group.GroupId] };
}

/** The AWS driver's configuration for moto's network, as every moto test and the AWS bench use it. */
export function motoDriverConfig(endpoint: string, net: MotoNetwork, name: string, over: Partial<AwsDriverConfig> = {}): AwsDriverConfig {
  return {
    region: MOTO_REGION,
    endpoint,
    credentials: MOTO_CREDENTIALS,
    imageId: net.imageId,
    instanceType: 't3.micro',
    subnetIds: net.subnetIds,
    securityGroupIds: net.securityGroupIds,
    name,
    ...over,
  };
}

export function awsSpec(id: string, tags: Record<string, string> = {}): HostSpec {
  return {
    id,
    hostname: id,
    image: '/',
    tags,
    resources: {},
    agent: { hostId: id, token: `token-${id}`, serverUrl: 'ws://10.0.0.1:7071/v1/agent' },
  };
}

/**
 * Whether EC2's security groups let `from` open a TCP connection to `to`: some group of `from`
 * allows it out and some group of `to` allows it in (by address range, or by a group `from`, resp.
 * `to`, holds). moto routes no traffic between instances, so the conformance suite's reachability
 * check reads the rules EC2 would enforce instead.
 */
export async function securityGroupsLetReach(ec2: EC2Client, from: { driverData: Record<string, unknown> }, to: { driverData: Record<string, unknown> }): Promise<boolean> {
  const shown = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [String(from.driverData['instanceId']), String(to.driverData['instanceId'])] }));
  const byId = new Map((shown.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => [i.InstanceId ?? '', i]));
  const [a, b] = [byId.get(String(from.driverData['instanceId'])), byId.get(String(to.driverData['instanceId']))];
  if (!a?.PrivateIpAddress || !b?.PrivateIpAddress || a.State?.Name !== 'running' || b.State?.Name !== 'running') return false;
  const groupsOf = (i: Instance): string[] => (i.SecurityGroups ?? []).map((g) => g.GroupId ?? '');
  const described = await ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [...new Set([...groupsOf(a), ...groupsOf(b)])] }));
  const rules = new Map((described.SecurityGroups ?? []).map((g) => [g.GroupId ?? '', g]));
  const allows = (perms: IpPermission[] | undefined, peer: Instance): boolean =>
    (perms ?? []).some(
      (p) =>
        (p.IpProtocol === '-1' || p.IpProtocol === 'tcp') &&
        ((p.IpRanges ?? []).some((r) => cidrContains(r.CidrIp ?? '', peer.PrivateIpAddress ?? '')) || (p.UserIdGroupPairs ?? []).some((pair) => groupsOf(peer).includes(pair.GroupId ?? ''))),
    );
  const out = groupsOf(a).some((g) => allows(rules.get(g)?.IpPermissionsEgress, b));
  const into = groupsOf(b).some((g) => allows(rules.get(g)?.IpPermissions, a));
  return out && into;
}

function cidrContains(cidr: string, ip: string): boolean {
  const [base, bits] = cidr.split('/');
  const prefix = Number(bits ?? '32');
  if (!base || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return false;
  const toInt = (s: string): number => s.split('.').reduce((n, part) => n * 256 + Number(part), 0);
  const block = 2 ** (32 - prefix);
  return Math.floor(toInt(base) / block) === Math.floor(toInt(ip) / block);
}
