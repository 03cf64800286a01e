/**
 * Which hosts reach each other on EC2 (network-groups.ts), on moto, beyond the conformance suite:
 * what berth makes in EC2 for a group (one security group, rules that name only itself, no wider
 * egress), that a group keeps its security group as it grows, a split, a pool's instance (no host
 * id tag), the hosts' own security groups kept, and nothing left behind once the hosts are gone.
 */
import { AuthorizeSecurityGroupIngressCommand, CreateSecurityGroupCommand, DescribeInstancesCommand, DescribeSecurityGroupsCommand, RunInstancesCommand, type Instance, type SecurityGroup } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsDriver } from '../../src/drivers/aws/index.js';
import { resolveAwsConfig } from '../../src/drivers/aws/config.js';
import { checkAws } from '../../src/drivers/aws/doctor.js';
import type { GroupMember, LaunchedHost } from '../../src/drivers/types.js';
import { motoAvailable, startMoto, type Moto } from '../helpers/moto.js';
import { awsSpec, motoDriverConfig, motoNetwork, securityGroupsLetReach, type MotoNetwork } from './aws-fixtures.js';

describe.skipIf(!motoAvailable('AWS network groups on moto'))('AWS driver: hosts of a group reach each other, on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let driver: AwsDriver;
  let n = 0;

  const launch = (): Promise<LaunchedHost> => driver.launch(awsSpec(`h-netg${n++}`));
  const member = (h: { id: string; driverData: Record<string, unknown> }): GroupMember => ({ id: h.id, driverData: h.driverData });
  const instance = async (h: LaunchedHost): Promise<Instance> => {
    const out = await net.ec2.send(new DescribeInstancesCommand({ InstanceIds: [String(h.driverData['instanceId'])] }));
    const found = out.Reservations?.[0]?.Instances?.[0];
    if (!found) throw new Error(`no instance for ${h.id}`);
    return found;
  };
  const groupsOf = async (h: LaunchedHost): Promise<string[]> => ((await instance(h)).SecurityGroups ?? []).map((g) => g.GroupId ?? '').sort();
  const netGroups = async (): Promise<SecurityGroup[]> =>
    (await net.ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'tag:berth:managed-by', Values: ['bnetg'] }, { Name: 'tag-key', Values: ['berth:network-group'] }] }))).SecurityGroups ?? [];
  const reach = (a: LaunchedHost, b: LaunchedHost): Promise<boolean> => securityGroupsLetReach(net.ec2, a, b);

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    driver = new AwsDriver(motoDriverConfig(moto.endpoint, net, 'bnetg', { callTimeoutMs: 10_000 }), { networkSweepDelayMs: 200 });
  });

  afterAll(async () => {
    if (driver) {
      for (const h of await driver.list()) await driver.terminate(h.id, h.driverData);
      driver.close();
    }
    net?.ec2.destroy();
    await moto?.stop();
  });

  it('a group of two gets one security group that lets its hosts reach each other and widens nothing else', async () => {
    const [a, b, spare] = await Promise.all([launch(), launch(), launch()]);
    await driver.setNetworkGroups([[member(a), member(b)]]);
    const made = await netGroups();
    expect(made).toHaveLength(1);
    const group = made[0]!;
    expect(group.GroupName).toMatch(/^bnetg-net-[0-9a-f]{12}$/);
    // Its only rules name itself: in, and out (the default allow-all egress is gone).
    const self = [{ IpProtocol: '-1', IpRanges: [], UserIdGroupPairs: [expect.objectContaining({ GroupId: group.GroupId })] }];
    expect(group.IpPermissions).toMatchObject(self);
    expect(group.IpPermissionsEgress).toMatchObject(self);
    // The hosts keep their own group beside it; the spare holds only its own.
    expect(await groupsOf(a)).toEqual([...net.securityGroupIds, group.GroupId].sort());
    expect(await groupsOf(spare)).toEqual(net.securityGroupIds);
    expect([await reach(a, b), await reach(b, a), await reach(a, spare), await reach(spare, b)]).toEqual([true, true, false, false]);
    // Asked again (a claim's retry, a restart): nothing changes, nothing new is made.
    await driver.setNetworkGroups([[member(a), member(b)]]);
    expect((await netGroups()).map((g) => g.GroupId)).toEqual([group.GroupId]);

    // A third host joins: the group keeps its security group.
    await driver.setNetworkGroups([[member(a), member(b), member(spare)]]);
    expect((await netGroups()).map((g) => g.GroupId)).toEqual([group.GroupId]);
    expect(await reach(spare, a)).toBe(true);

    // Split: a and spare form a group of their own; b, left alone in the old one, reaches neither.
    await driver.setNetworkGroups([[member(a), member(spare)]]);
    expect([await reach(a, spare), await reach(b, a), await reach(spare, b)]).toEqual([true, false, false]);
    expect(await netGroups()).toHaveLength(2);

    // The whole truth with no group: every host holds its own groups only, and the network groups are deleted.
    await driver.setNetworkGroups([], { all: true });
    for (const h of [a, b, spare]) expect(await groupsOf(h)).toEqual(net.securityGroupIds);
    expect(await netGroups()).toEqual([]);
    await Promise.all([a, b, spare].map((h) => driver.terminate(h.id, h.driverData)));
  }, 60_000);

  it("a pool's instance (no host id tag) joins; a terminated member is left out and its group deleted once nobody holds it", async () => {
    // As a pool's Auto Scaling group launches it: the driver's tag, no berth:host-id.
    const run = await net.ec2.send(
      new RunInstancesCommand({ ImageId: net.imageId, InstanceType: 't3.micro', MinCount: 1, MaxCount: 1, SecurityGroupIds: net.securityGroupIds, TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'berth:managed-by', Value: 'bnetg' }] }] }),
    );
    const poolHost: LaunchedHost = { id: 'h-netgpool', hostname: 'h-netgpool', ip: run.Instances?.[0]?.PrivateIpAddress ?? '', driverData: { instanceId: run.Instances?.[0]?.InstanceId, fleet: true } };
    const alone = await launch();
    await driver.setNetworkGroups([[member(poolHost), member(alone)]]);
    expect(await reach(poolHost, alone)).toBe(true);
    const [group] = await netGroups();

    // alone is terminated; a late call still naming it changes nothing for it, and the pool's host
    // is left in a group of one: it holds no network group, and the one nobody holds is deleted.
    await driver.terminate(alone.id, alone.driverData);
    await driver.setNetworkGroups([[member(poolHost), member(alone)]]);
    expect(await groupsOf(poolHost)).toEqual(net.securityGroupIds);
    expect((await netGroups()).map((g) => g.GroupId)).not.toContain(group?.GroupId);
    await driver.terminate(poolHost.id, poolHost.driverData);
  }, 60_000);

  it("a group's security group is deleted a while after its last host is terminated (the sweep)", async () => {
    const [a, b] = await Promise.all([launch(), launch()]);
    await driver.setNetworkGroups([[member(a), member(b)]]);
    expect(await netGroups()).toHaveLength(1);
    await driver.terminate(a.id, a.driverData);
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await netGroups()).toHaveLength(1); // b holds it still
    await driver.terminate(b.id, b.driverData);
    const deadline = Date.now() + 10_000;
    while ((await netGroups()).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await netGroups()).toEqual([]);
  }, 60_000);

  it("keeps every one of a host's own security groups, and teardown deletes the network groups only once no host lives", async () => {
    const extra = await net.ec2.send(new CreateSecurityGroupCommand({ GroupName: `bnetg-own-${Date.now()}`, Description: 'a host group of its own', VpcId: (await net.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: net.securityGroupIds }))).SecurityGroups?.[0]?.VpcId }));
    const two = new AwsDriver(motoDriverConfig(moto.endpoint, net, 'bnetg', { callTimeoutMs: 10_000, securityGroupIds: [...net.securityGroupIds, extra.GroupId ?? ''] }));
    try {
      const [a, b] = await Promise.all([two.launch(awsSpec(`h-netg${n++}`)), two.launch(awsSpec(`h-netg${n++}`))]);
      await two.setNetworkGroups([[member(a), member(b)]]);
      const [group] = await netGroups();
      expect(await groupsOf(a)).toEqual([...net.securityGroupIds, extra.GroupId, group?.GroupId].sort());

      // A host lives (and holds the group): teardown refuses and takes nothing from it.
      expect(await two.teardown()).toBe(false);
      expect(await reach(a, b)).toBe(true);
      await Promise.all([a, b].map((h) => two.terminate(h.id, h.driverData)));
      expect(await two.teardown()).toBe(true);
      expect(await netGroups()).toEqual([]);
    } finally {
      two.close();
    }
  }, 60_000);

  it("berth doctor warns when the hosts' own security groups let one host reach another", async () => {
    const vpcId = (await net.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: net.securityGroupIds }))).SecurityGroups?.[0]?.VpcId;
    const doctor = async (securityGroupIds: string[]) => {
      const checks = await checkAws({ cfg: resolveAwsConfig(motoDriverConfig(moto.endpoint, net, 'bnetg', { securityGroupIds })), serverPid: undefined });
      return checks.find((c) => c.name === 'groups apart');
    };
    expect(await doctor(net.securityGroupIds)).toMatchObject({ status: 'ok' });
    // As a VPC's default group on AWS: it lets itself in.
    const selfish = (await net.ec2.send(new CreateSecurityGroupCommand({ GroupName: `bnetg-selfish-${Date.now()}`, Description: 'lets itself in', VpcId: vpcId }))).GroupId ?? '';
    await net.ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: selfish, IpPermissions: [{ IpProtocol: '-1', UserIdGroupPairs: [{ GroupId: selfish }] }] }));
    expect(await doctor([selfish])).toMatchObject({ status: 'warn', detail: `hosts of different groups reach each other: ${selfish} lets itself in (all traffic)`, hint: expect.stringContaining('Security groups only allow') as unknown });
    // SSH from anywhere: every host reaches every other's port 22.
    const ssh = (await net.ec2.send(new CreateSecurityGroupCommand({ GroupName: `bnetg-ssh-${Date.now()}`, Description: 'ssh from anywhere', VpcId: vpcId }))).GroupId ?? '';
    await net.ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: ssh, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '0.0.0.0/0' }] }] }));
    expect((await doctor([...net.securityGroupIds, ssh]))?.detail).toBe(`hosts of different groups reach each other: ${ssh} lets 0.0.0.0/0 in (tcp 22)`);
    // A range that holds none of the hosts' subnets (an office's) keeps them apart.
    const office = (await net.ec2.send(new CreateSecurityGroupCommand({ GroupName: `bnetg-office-${Date.now()}`, Description: 'an office', VpcId: vpcId }))).GroupId ?? '';
    await net.ec2.send(new AuthorizeSecurityGroupIngressCommand({ GroupId: office, IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: '203.0.113.0/24' }] }] }));
    expect(await doctor([office])).toMatchObject({ status: 'ok' });
    // Five of their own leave no room for berth's (EC2's default quota is 5 per instance).
    const five = [office];
    for (let i = 0; i < 4; i++) five.push((await net.ec2.send(new CreateSecurityGroupCommand({ GroupName: `bnetg-many-${i}-${Date.now()}`, Description: 'one of many', VpcId: vpcId }))).GroupId ?? '');
    expect(await doctor(five)).toMatchObject({ status: 'warn', detail: expect.stringContaining('hosts hold 5 security groups of their own') as unknown });
    expect(await doctor(five.slice(0, 4))).toMatchObject({ status: 'ok' });
  }, 60_000);
});
