/**
 * The AWS driver as a person runs it: `berth server --driver aws` (credentials and region from the
 * SDK's standard chain, here moto's through the environment), a pool declared in a berth.yaml with
 * `driver: aws` and its own instance type, filled by enrolling instances (one real agent per
 * instance moto launches), and a claim from the CLI. A pool meant for another driver is refused.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoScalingClient, DescribeAutoScalingGroupsCommand, DescribeWarmPoolCommand } from '@aws-sdk/client-auto-scaling';
import { DescribeInstancesCommand, DescribeLaunchTemplatesCommand, DescribeLaunchTemplateVersionsCommand } from '@aws-sdk/client-ec2';
import { existsSync } from 'node:fs';
import { TAG_MANAGED_BY } from '../../src/drivers/aws/config.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/cli/paths.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { motoNetwork, type MotoNetwork } from '../drivers/aws-fixtures.js';
import { EmulatedFleet } from '../helpers/emulated-fleet.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { berth } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { freePorts } from '../helpers/ports.js';

const NAME = 'bcli';


describe.skipIf(!motoAvailable('berth server --driver aws on moto'))('berth server --driver aws on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let asg: AutoScalingClient;
  let dir: string;
  let server: ChildProcess;
  let fleet: EmulatedFleet;
  let env: Record<string, string>;

  let api = 0;
  let agent = 0;
  /** `berth server --driver aws` in its own process, as a person runs it; `--data-dir` and `--port`: the CLI below finds it through the data dir. */
  const startServer = async (): Promise<void> => {
    // prettier-ignore
    const args = [
      'server', '--driver', 'aws', '--data-dir', join(dir, 'data'), '--port', String(api), '--agent-port', String(agent), '--router-port', '0',
      '--name', NAME, '--aws-endpoint', moto.endpoint, '--aws-image', net.imageId, '--aws-instance-type', 't3.micro',
      '--aws-subnets', net.subnetIds.join(','), '--aws-security-groups', net.securityGroupIds.join(','),
      '--agent-listen', '127.0.0.1', '--agent-advertise', '127.0.0.1',
    ];
    server = spawn(process.execPath, [join(packageRoot(), 'bin', 'berth.js'), ...args], { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    server.stderr?.on('data', (d: Buffer) => void (process.env['BERTH_TEST_SERVER_LOG'] && process.stderr.write(d)));
    await waitFor('berth server --driver aws to answer', async () => ((await fetch(`http://127.0.0.1:${api}/v1/health`).catch(() => undefined))?.ok ? true : undefined), { timeoutMs: 30_000 });
  };
  /** Ctrl-C, as a person stops it: its hosts keep running. */
  const stopServer = async (): Promise<void> => {
    if (server.exitCode !== null || server.signalCode !== null) return;
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGINT');
    await exited;
  };

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    asg = new AutoScalingClient({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    dir = await mkdtemp(join(tmpdir(), 'berth-awscli-'));
    env = { AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey, AWS_REGION: MOTO_REGION, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
    [api = 0, agent = 0] = await freePorts(2);
    await startServer();
    fleet = new EmulatedFleet({ endpoint: moto.endpoint, driverName: NAME, dir: join(dir, 'machines') });
    fleet.start();
  }, 60_000);

  afterAll(async () => {
    await fleet?.stop();
    if (server) await stopServer();
    net?.ec2.destroy();
    asg?.destroy();
    await moto?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const cli = (...args: string[]) => berth([...args, '--data-dir', join(dir, 'data')], env);

  it('applies a pool with driver: aws and its own instance type, fills it by enrolment, and claims from the CLI', async () => {
    const file = join(dir, 'berth.yaml');
    await writeFile(file, ['pools:', '  - name: api', '    driver: aws', '    size: 2', '    onEmpty: fail', '    template:', '      tags: { role: api }', '      aws: { instanceType: t3.small, warmPool: { state: Stopped, minSize: 1 } }', ''].join('\n'));
    const applied = await cli('apply', '-f', file);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    expect(applied.stdout).toContain('created api');

    await waitFor(
      'pool api to fill',
      async () => {
        const shown = await cli('pool', 'show', 'api', '--json');
        return (JSON.parse(shown.stdout) as PoolStatusView).status.ready === 2 ? true : undefined;
      },
      { timeoutMs: 60_000 },
    );
    // The pool's own launch template carries its instance type and the pool's tags in its boot script.
    const template = await net.ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: `${NAME}-pool-api`, Versions: ['$Latest'] }));
    const data = template.LaunchTemplateVersions?.[0]?.LaunchTemplateData;
    expect(data?.InstanceType).toBe('t3.small');
    expect(Buffer.from(data?.UserData ?? '', 'base64').toString()).toContain('"role":"api"');
    // Its EC2 warm pool (moto keeps the settings; it launches no warm instances).
    const warm = await asg.send(new DescribeWarmPoolCommand({ AutoScalingGroupName: `${NAME}-pool-api` }));
    expect(warm.WarmPoolConfiguration).toMatchObject({ PoolState: 'Stopped', MinSize: 1 });

    const claimed = await cli('claim', 'api', '--group', 'carol', '--init', 'test "$(cat /dev/null)" = ""', '--json');
    expect(claimed.code).toBe(0);
    const claim = JSON.parse(claimed.stdout) as ClaimView;
    expect(claim.host).toMatchObject({ group: 'carol', slot: 'claimed' });
    expect(claim.timings['backendCalls']).toBe(3);
    // The instance's tags say its mode (the pool's tags) and its owner (the claiming group).
    const instanceId = `i-${(claim.host?.id ?? '').slice(2)}`;
    await waitFor(
      'the claimed instance to be tagged with its pool tags and owner',
      async () => {
        const out = await net.ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
        const tags = Object.fromEntries((out.Reservations?.[0]?.Instances?.[0]?.Tags ?? []).map((t) => [t.Key ?? '', t.Value ?? '']));
        return tags['role'] === 'api' && tags['berth:group'] === 'carol' && tags['berth:pool'] === 'api' ? true : undefined;
      },
      { timeoutMs: 10_000 },
    );

    // The status of the driver: its AWS calls by operation, retries apart.
    const driver = await cli('driver', '--json');
    const counts = JSON.parse(driver.stdout) as { name: string; calls: Record<string, number>; attempts: Record<string, number> };
    expect(counts.name).toBe('aws');
    expect(counts.calls['DetachInstances']).toBe(1);
    expect(counts.calls['CreateTags']).toBe(1); // the owner tag, sent after the claim
    expect(counts.calls['AttachInstances']).toBe(1);
    expect(counts.attempts['RunInstances'] ?? 0).toBe(0); // pools never launch one by one on AWS
    expect((await cli('driver')).stdout).toMatch(/DetachInstances\s+1\s+1/);

    // A terminal on the claimed instance, through its berth agent's channel, as on a local host.
    const shell = await berth(['host', 'shell', claim.host?.id ?? '', '--data-dir', join(dir, 'data'), '--', 'echo "tags: $(cat /etc/berth/tags.json 2>/dev/null || echo "$BERTH_TAGS")"; exit 4'], env, { input: '' });
    expect(shell.stderr).toBe('');
    expect(shell.stdout).toMatch(/^tags: \{.*"role":"api".*\}\r\n$/);
    expect(shell.code).toBe(4);
  }, 120_000);

  it('refuses a pool meant for the local driver with exit code 2, and creates nothing', async () => {
    const file = join(dir, 'local.yaml');
    await writeFile(file, ['pools:', '  - name: other', '    driver: local', '    size: 1', ''].join('\n'));
    const refused = await cli('apply', '-f', file);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('needs the local driver; this server runs the aws driver');
    const listed = await cli('pool', 'ls', '--json');
    expect((JSON.parse(listed.stdout) as { name: string }[]).map((p) => p.name)).toEqual(['api']);
  });

  it('berth down takes the AWS hosts down with the options the server last ran with; the pool fills at the next start; --purge removes its groups and template', async () => {
    const group = async (name: string) => (await asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [name] }))).AutoScalingGroups?.[0];
    const running = async () => {
      const out = await net.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [NAME] }, { Name: 'instance-state-name', Values: ['pending', 'running'] }] }));
      return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => i.InstanceId ?? '');
    };
    expect((await running()).length).toBeGreaterThanOrEqual(3); // the pool's 2, and carol's
    // berth doctor checks the account with the options the server runs with.
    type Check = { name: string; status: string; detail: string; hint?: string };
    const doctor = async (...args: string[]) => {
      const res = await cli('doctor', '--json', ...args);
      return { code: res.code, stderr: res.stderr, checks: res.stdout ? (JSON.parse(res.stdout) as Check[]) : [] };
    };
    const checked = await doctor();
    expect(checked.code, checked.stderr).toBe(0);
    expect(checked.checks.map((c) => `${c.status} ${c.name}`)).toEqual(['ok AWS API', 'ok AMI', 'ok instance type', 'ok subnets', 'ok security groups', 'ok groups apart', 'ok pools', 'ok instances']);
    expect(checked.checks.find((c) => c.name === 'pools')?.detail).toBe('in service / desired: api 2/2');
    expect(checked.checks.find((c) => c.name === 'instances')?.detail).toMatch(/^\d+, looked after by this data dir's server \(pid \d+\)$/);
    const refused = await cli('down');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('is running on');
    await stopServer();
    // Stopped, its instances run on (and cost): doctor says so, and what to do.
    const stopped = await doctor();
    expect(stopped.code).toBe(0);
    expect(stopped.checks.find((c) => c.name === 'instances')).toMatchObject({ status: 'warn', detail: expect.stringMatching(/^\d+ named bcli run on AWS \(and cost money\) while this data dir's server is stopped$/) as unknown, hint: expect.stringContaining('berth down') as unknown });
    expect((await cli('doctor')).stdout).toContain('berth can run hosts on AWS with these options; instances run while the server is stopped');

    // No option of the server's given again: berth down reads what it ran with.
    const down = await cli('down', '--json');
    expect(down.code).toBe(0);
    const report = JSON.parse(down.stdout) as { driver: string; name: string; drainedPools: string[]; removed: string[]; failed: unknown[]; purged: boolean; machine: string };
    // machine: the security groups berth made for groups of hosts are gone too (none is left here).
    expect(report).toMatchObject({ driver: 'aws', name: NAME, drainedPools: ['api'], failed: [], purged: false, machine: 'removed' });
    expect(report.removed.length).toBeGreaterThanOrEqual(3);
    expect(await running()).toEqual([]);
    const api = await group(`${NAME}-pool-api`);
    expect(api).toMatchObject({ MinSize: 0, DesiredCapacity: 0, Instances: [] });
    expect((await asg.send(new DescribeWarmPoolCommand({ AutoScalingGroupName: `${NAME}-pool-api` }))).WarmPoolConfiguration).toBeUndefined();
    expect((await group(`${NAME}-group-carol`))?.Instances).toEqual([]);
    expect((await doctor()).checks.find((c) => c.name === 'instances')).toEqual({ name: 'instances', status: 'ok', detail: 'none named bcli' });

    // The pool stayed in the store: the next server sizes its group again, and it fills.
    await startServer();
    await waitFor('pool api to fill again', async () => ((JSON.parse((await cli('pool', 'show', 'api', '--json')).stdout) as PoolStatusView).status.ready === 2 ? true : undefined), { timeoutMs: 60_000 });
    expect(await group(`${NAME}-pool-api`)).toMatchObject({ MinSize: 2, DesiredCapacity: 2 });
    expect((await asg.send(new DescribeWarmPoolCommand({ AutoScalingGroupName: `${NAME}-pool-api` }))).WarmPoolConfiguration).toMatchObject({ PoolState: 'Stopped', MinSize: 1 });
    await stopServer();

    // --purge: the machine and the account as before berth, but for what it does not own.
    const purged = await cli('down', '--purge', '--json');
    expect(purged.code).toBe(0);
    const purgeReport = JSON.parse(purged.stdout) as { removedOnAws: string[]; purged: boolean };
    expect(purgeReport.purged).toBe(true);
    expect(purgeReport.removedOnAws).toEqual(expect.arrayContaining([`Auto Scaling group ${NAME}-pool-api`, `Auto Scaling group ${NAME}-group-carol`, `launch template ${NAME}-pool-api`]));
    expect(await running()).toEqual([]);
    const left = (await asg.send(new DescribeAutoScalingGroupsCommand({}))).AutoScalingGroups ?? [];
    expect(left.filter((g) => g.AutoScalingGroupName?.startsWith(`${NAME}-`) && g.Status === undefined).map((g) => g.AutoScalingGroupName)).toEqual([]);
    const templates = await net.ec2.send(new DescribeLaunchTemplatesCommand({ Filters: [{ Name: 'launch-template-name', Values: [`${NAME}-pool-api`] }] }));
    expect(templates.LaunchTemplates ?? []).toEqual([]);
    expect(existsSync(join(dir, 'data'))).toBe(false);

    // Before a first start, doctor takes the options; an AMI the region has not is a failure (exit 1), no options at all a usage error.
    expect((await doctor('--driver', 'aws')).code).toBe(2);
    const bad = await doctor('--driver', 'aws', '--name', NAME, '--aws-endpoint', moto.endpoint, '--aws-image', 'ami-0000000000000dead', '--aws-instance-type', 't3.micro', '--aws-subnets', net.subnetIds.join(','));
    expect(bad.code).toBe(1);
    expect(bad.checks.find((c) => c.name === 'AMI')).toMatchObject({ status: 'fail', detail: expect.stringContaining('ami-0000000000000dead') as unknown });
    expect(bad.checks.find((c) => c.name === 'subnets')?.status).toBe('ok');
  }, 180_000);
});
