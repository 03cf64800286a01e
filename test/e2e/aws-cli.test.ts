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
import { AutoScalingClient, DescribeWarmPoolCommand } from '@aws-sdk/client-auto-scaling';
import { DescribeInstancesCommand, DescribeLaunchTemplateVersionsCommand } from '@aws-sdk/client-ec2';
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

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    asg = new AutoScalingClient({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    dir = await mkdtemp(join(tmpdir(), 'berth-awscli-'));
    env = { AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey, AWS_REGION: MOTO_REGION, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
    const [api = 0, agent = 0] = await freePorts(2);
    // `--data-dir` and `--port`: the CLI below finds the server through the data dir.
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
    fleet = new EmulatedFleet({ endpoint: moto.endpoint, driverName: NAME, dir: join(dir, 'machines') });
    fleet.start();
  }, 60_000);

  afterAll(async () => {
    await fleet?.stop();
    if (server && server.exitCode === null) {
      server.kill('SIGTERM');
      await new Promise((resolve) => server.once('exit', resolve));
    }
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
});
