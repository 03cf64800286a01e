/**
 * `berth doctor --driver aws`: whether berth can run hosts on AWS with a server's options, and what
 * it runs there now, each finding with what to do. It only reads (Describe* calls): the AWS API with
 * these credentials and region, the AMI, the instance type, the subnets and security groups (one
 * VPC) and whether they keep groups of hosts apart, the pools' Auto Scaling groups with the last launch activity of each (a launch that keeps
 * failing shows there, and nowhere in berth until a pool stays empty), the instances berth runs,
 * which cost money while no server looks after them, and with the SSM channel whether their SSM
 * agents are online.
 */
import { DescribeAutoScalingGroupsCommand, DescribeScalingActivitiesCommand, type AutoScalingGroup } from '@aws-sdk/client-auto-scaling';
import { DescribeImagesCommand, DescribeInstancesCommand, DescribeInstanceTypesCommand, DescribeSecurityGroupsCommand, DescribeSubnetsCommand, type _InstanceType, type SecurityGroup } from '@aws-sdk/client-ec2';
import { errorMessage, isBerthError } from '../../core/errors.js';
import type { DoctorCheck } from '../types.js';
import { TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { awsCall, createAutoScalingClient, createEc2Client, type CallInfo, type RequestHandler } from './sdk.js';
import { MAX_INSTANCES, SsmChannel } from './ssm.js';

export interface AwsDoctorInput {
  cfg: ResolvedAwsConfig;
  /** The data dir's server, when one runs: its instances are looked after. */
  serverPid: number | undefined;
  requestHandler?: RequestHandler;
}

const ok = (name: string, detail: string): DoctorCheck => ({ name, status: 'ok', detail });
const warn = (name: string, detail: string, hint: string): DoctorCheck => ({ name, status: 'warn', detail, hint });
const fail = (name: string, detail: string, hint: string): DoctorCheck => ({ name, status: 'fail', detail, hint });
/** A refused call as a failed check: berth's message and hint for it (errors.ts). */
const failed = (name: string, err: unknown): DoctorCheck => fail(name, errorMessage(err), isBerthError(err) ? err.hint : 'Retry; if it persists, check the endpoint and the network.');

export async function checkAws(input: AwsDoctorInput): Promise<DoctorCheck[]> {
  const { cfg } = input;
  const ec2 = createEc2Client(cfg, input.requestHandler);
  const asg = createAutoScalingClient(cfg, input.requestHandler);
  const ec2Call = <T>(info: CallInfo, run: (signal: AbortSignal) => Promise<T>) => awsCall(ec2, cfg, info, undefined, run);
  const asgCall = <T>(info: CallInfo, run: (signal: AbortSignal) => Promise<T>) => awsCall(asg, cfg, { service: 'autoscaling', ...info }, undefined, run);
  const checks: DoctorCheck[] = [];
  try {
    const region = cfg.region ?? (await ec2.config.region().catch(() => 'unknown'));
    let instances: { id: string; running: boolean; launchedAt: number }[];
    try {
      const out = await ec2Call({ operation: 'DescribeInstances' }, (abortSignal) =>
        ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [cfg.name] }, { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] }] }), { abortSignal }),
      );
      instances = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => ({ id: i.InstanceId ?? '', running: i.State?.Name === 'running', launchedAt: i.LaunchTime?.getTime() ?? 0 }));
      checks.push(ok('AWS API', `region ${region}${cfg.endpoint ? ` at ${cfg.endpoint}` : ''} answers with these credentials`));
    } catch (err) {
      // Nothing else can be asked: say only this.
      return [failed('AWS API', err)];
    }
    checks.push(await imageCheck(cfg, ec2Call, ec2), await instanceTypeCheck(cfg, ec2Call, ec2), ...(await networkChecks(cfg, ec2Call, ec2)));
    checks.push(await poolsCheck(cfg, asgCall, asg), instancesCheck(cfg, instances.length, input.serverPid));
    if (cfg.commandChannel === 'ssm') checks.push(await ssmCheck(cfg, instances, input.requestHandler));
    return checks;
  } finally {
    ec2.destroy();
    asg.destroy();
  }
}

type Call = <T>(info: CallInfo, run: (signal: AbortSignal) => Promise<T>) => Promise<T>;
type Ec2 = ReturnType<typeof createEc2Client>;
type Asg = ReturnType<typeof createAutoScalingClient>;

async function imageCheck(cfg: ResolvedAwsConfig, call: Call, ec2: Ec2): Promise<DoctorCheck> {
  try {
    const out = await call({ operation: 'DescribeImages', imageId: cfg.imageId }, (abortSignal) => ec2.send(new DescribeImagesCommand({ ImageIds: [cfg.imageId] }), { abortSignal }));
    const image = out.Images?.[0];
    if (!image) return fail('AMI', `${cfg.imageId} does not exist in this region (or this account may not use it)`, 'Bake one (berth image build with --driver aws) or give an AMI of this region (--aws-image).');
    const what = `${cfg.imageId}${image.Name ? ` (${image.Name})` : ''}`;
    if (image.State !== 'available') return warn('AMI', `${what} is ${image.State ?? 'in an unknown state'}`, image.State === 'pending' ? 'Wait until EC2 has made it available.' : 'Give another AMI (--aws-image).');
    return ok('AMI', `${what}, available`);
  } catch (err) {
    return failed('AMI', err);
  }
}

async function instanceTypeCheck(cfg: ResolvedAwsConfig, call: Call, ec2: Ec2): Promise<DoctorCheck> {
  try {
    const out = await call({ operation: 'DescribeInstanceTypes' }, (abortSignal) => ec2.send(new DescribeInstanceTypesCommand({ InstanceTypes: [cfg.instanceType as _InstanceType] }), { abortSignal }));
    const type = out.InstanceTypes?.[0];
    if (!type) return fail('instance type', `${cfg.instanceType} is not offered in this region`, 'Give another one (--aws-instance-type), e.g. t3.micro.');
    return ok('instance type', `${cfg.instanceType}: ${type.VCpuInfo?.DefaultVCpus ?? '?'} vCPU, ${type.MemoryInfo?.SizeInMiB ?? '?'} MiB`);
  } catch (err) {
    return failed('instance type', err);
  }
}

/** Subnets and security groups: each exists, and all are in one VPC (a service's target group lives in one). */
async function networkChecks(cfg: ResolvedAwsConfig, call: Call, ec2: Ec2): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  let vpcs = new Set<string>();
  let cidrs: string[] = [];
  try {
    const given = cfg.subnetIds.length > 0;
    const out = await call({ operation: 'DescribeSubnets' }, (abortSignal) =>
      ec2.send(new DescribeSubnetsCommand(given ? { SubnetIds: cfg.subnetIds } : { Filters: [{ Name: 'default-for-az', Values: ['true'] }] }), { abortSignal }),
    );
    const subnets = out.Subnets ?? [];
    vpcs = new Set(subnets.map((s) => s.VpcId ?? '?'));
    cidrs = subnets.flatMap((s) => s.CidrBlock ?? []);
    if (!given && subnets.length === 0) checks.push(fail('subnets', 'none given, and this region has no default VPC', 'Give the subnets hosts go in (--aws-subnets subnet-…,subnet-…).'));
    else if (vpcs.size > 1) checks.push(fail('subnets', `${subnets.map((s) => `${s.SubnetId ?? '?'} (${s.VpcId ?? '?'})`).join(', ')}: more than one VPC`, 'Give subnets of one VPC: a service\'s load balancer target group and the security groups belong to one.'));
    else checks.push(ok('subnets', `${given ? cfg.subnetIds.join(', ') : `the default VPC's (${subnets.length})`} in ${[...vpcs].join('')}`));
  } catch (err) {
    checks.push(failed('subnets', err));
  }
  const given = cfg.securityGroupIds.length > 0;
  if (!given && vpcs.size === 0) return checks; // no VPC known: the subnets' failure says why
  try {
    // None given: instances get their VPC's default group (one VPC, checked above).
    const out = await call({ operation: 'DescribeSecurityGroups' }, (abortSignal) =>
      ec2.send(new DescribeSecurityGroupsCommand(given ? { GroupIds: cfg.securityGroupIds } : { Filters: [{ Name: 'group-name', Values: ['default'] }, { Name: 'vpc-id', Values: [...vpcs] }] }), { abortSignal }),
    );
    const groups = out.SecurityGroups ?? [];
    const elsewhere = groups.filter((g) => vpcs.size > 0 && !vpcs.has(g.VpcId ?? ''));
    checks.push(
      elsewhere.length > 0
        ? fail('security groups', `${elsewhere.map((g) => `${g.GroupId ?? '?'} (${g.VpcId ?? '?'})`).join(', ')} not in the subnets' VPC`, 'Give security groups of the subnets\' VPC (--aws-security-groups).')
        : ok('security groups', given ? cfg.securityGroupIds.join(', ') : `none given: the VPC's default group${groups[0]?.GroupId ? ` (${groups[0].GroupId})` : ''}`),
      apartCheck(groups, cidrs),
    );
  } catch (err) {
    checks.push(failed('security groups', err));
  }
  return checks;
}

/**
 * berth keeps groups of hosts apart with a security group per group that lets only its holders in
 * (network-groups.ts); security groups only allow, so a rule of the hosts' own groups that lets one
 * host reach another (a group that lets itself in, as a VPC's default group does, or an address
 * range over the hosts' subnets) opens every host to every other, whatever their group.
 */
const MAX_OWN_GROUPS = 4;

function apartCheck(groups: SecurityGroup[], subnetCidrs: string[]): DoctorCheck {
  const own = new Set(groups.map((g) => g.GroupId ?? ''));
  const open: string[] = [];
  for (const g of groups) {
    for (const p of g.IpPermissions ?? []) {
      const what = p.IpProtocol === '-1' ? 'all traffic' : `${p.IpProtocol ?? '?'} ${p.FromPort === p.ToPort ? String(p.FromPort) : `${p.FromPort ?? '?'}-${p.ToPort ?? '?'}`}`;
      for (const pair of p.UserIdGroupPairs ?? []) if (own.has(pair.GroupId ?? '')) open.push(`${g.GroupId ?? '?'} lets ${pair.GroupId === g.GroupId ? 'itself' : pair.GroupId} in (${what})`);
      for (const range of p.IpRanges ?? []) if (subnetCidrs.some((c) => cidrsOverlap(range.CidrIp ?? '', c))) open.push(`${g.GroupId ?? '?'} lets ${range.CidrIp ?? '?'} in (${what})`);
    }
  }
  // EC2 allows 5 security groups per network interface unless the quota was raised: berth's is one more.
  if (open.length === 0 && groups.length >= MAX_OWN_GROUPS + 1) {
    return warn('groups apart', `hosts hold ${groups.length} security groups of their own; berth adds one for a group of hosts, and EC2 allows 5 per instance by default`, "Give hosts at most 4 security groups (or raise the 'Security groups per network interface' quota), or the hosts of a group cannot be let reach each other.");
  }
  if (open.length === 0) return ok('groups apart', "the hosts' security groups let no host reach another; berth's per-group ones let a group's hosts reach each other");
  return warn('groups apart', `hosts of different groups reach each other: ${open.join('; ')}`, "Security groups only allow: give hosts security groups that let no other host in (berth adds one per group that lets the group's hosts reach each other), or accept that every host reaches every other on these ports.");
}

function cidrsOverlap(a: string, b: string): boolean {
  const parse = (cidr: string): [number, number] | undefined => {
    const [base, bits] = cidr.split('/');
    const prefix = Number(bits ?? '32');
    const parts = (base ?? '').split('.').map(Number);
    if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 255) || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return undefined;
    return [parts.reduce((n, part) => n * 256 + part, 0), prefix];
  };
  const [x, y] = [parse(a), parse(b)];
  if (!x || !y) return false;
  const block = 2 ** (32 - Math.min(x[1], y[1]));
  return Math.floor(x[0] / block) === Math.floor(y[0] / block);
}

/** Each pool's group: how full, and whether its last launch failed (the group retries; berth only sees a pool that stays short). */
async function poolsCheck(cfg: ResolvedAwsConfig, call: Call, asg: Asg): Promise<DoctorCheck> {
  const prefix = `${cfg.name}-pool-`;
  try {
    const groups: AutoScalingGroup[] = [];
    let token: string | undefined;
    do {
      const page = await call({ operation: 'DescribeAutoScalingGroups' }, (abortSignal) =>
        asg.send(new DescribeAutoScalingGroupsCommand({ Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [cfg.name] }], MaxRecords: 100, ...(token ? { NextToken: token } : {}) }), { abortSignal }),
      );
      groups.push(...(page.AutoScalingGroups ?? []).filter((g) => g.AutoScalingGroupName?.startsWith(prefix) && g.Status === undefined));
      token = page.NextToken;
    } while (token);
    if (groups.length === 0) return ok('pools', 'no pool group yet (a server makes them for the pools it runs)');
    const lines: string[] = [];
    const failing: string[] = [];
    for (const group of groups) {
      const name = group.AutoScalingGroupName ?? '';
      const inService = (group.Instances ?? []).filter((i) => i.LifecycleState === 'InService').length;
      lines.push(`${name.slice(prefix.length)} ${inService}/${group.DesiredCapacity ?? 0}`);
      const activities = await call({ operation: 'DescribeScalingActivities', group: name }, (abortSignal) => asg.send(new DescribeScalingActivitiesCommand({ AutoScalingGroupName: name, MaxRecords: 1 }), { abortSignal }));
      const last = activities.Activities?.[0];
      if (last?.StatusCode === 'Failed' || last?.StatusCode === 'Cancelled') failing.push(`${name.slice(prefix.length)}: ${last.StatusMessage ?? last.Description ?? last.StatusCode}`);
    }
    const detail = `in service / desired: ${lines.join(', ')}`;
    if (failing.length > 0) return warn('pools', `${detail}; last launch failed: ${failing.join('; ')}`, 'Fix what EC2 says (the AMI, subnets, instance profile, capacity); the group retries by itself.');
    return ok('pools', detail);
  } catch (err) {
    return failed('pools', err);
  }
}

/** The SSM channel: are the running instances' SSM agents online (the one thing commands need)? */
async function ssmCheck(cfg: ResolvedAwsConfig, instances: { id: string; running: boolean; launchedAt: number }[], requestHandler: RequestHandler | undefined): Promise<DoctorCheck> {
  const running = instances.filter((i) => i.running);
  if (running.length === 0) return ok('SSM', 'commands go through SSM; no instance runs to ask about');
  const ssm = new SsmChannel(cfg, requestHandler ? { requestHandler } : {});
  try {
    const pings = new Map<string, string>();
    for (let i = 0; i < running.length; i += MAX_INSTANCES) for (const [id, ping] of await ssm.agentPings(running.slice(i, i + MAX_INSTANCES).map((x) => x.id))) pings.set(id, ping);
    const online = running.filter((i) => pings.get(i.id) === 'Online').length;
    // Past the time the driver gives an SSM agent to come online, it is not just slow to register.
    const stuck = running.filter((i) => pings.get(i.id) !== 'Online' && Date.now() - i.launchedAt > cfg.ssmRegistrationTimeoutMs);
    const detail = `${online} of ${running.length} running instance(s) online with SSM`;
    if (stuck.length === 0) return ok('SSM', detail);
    return warn('SSM', `${detail}; not online ${Math.round(cfg.ssmRegistrationTimeoutMs / 1000)} s after launch: ${stuck.map((i) => `${i.id} (${pings.get(i.id) ?? 'not registered'})`).join(', ')}`, SsmChannel.registrationHint);
  } catch (err) {
    return failed('SSM', err);
  } finally {
    ssm.close();
  }
}

function instancesCheck(cfg: ResolvedAwsConfig, count: number, serverPid: number | undefined): DoctorCheck {
  if (count === 0) return ok('instances', `none named ${cfg.name}`);
  if (serverPid) return ok('instances', `${count}, looked after by this data dir's server (pid ${serverPid})`);
  return warn('instances', `${count} named ${cfg.name} run on AWS (and cost money) while this data dir's server is stopped`, 'Start it (berth server --driver aws with its options) and it adopts them, or remove them all with berth down.');
}
