/**
 * What AWS driver tests on moto need from the emulator: an AMI that exists in it (one of moto's
 * defaults, looked up rather than hard-coded, as moto's list changes between releases), its default
 * VPC's subnets and security group, and a plain EC2 client to look at what the driver made.
 */
import { DescribeImagesCommand, DescribeSecurityGroupsCommand, DescribeSubnetsCommand, EC2Client } from '@aws-sdk/client-ec2';
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
