/**
 * The SSM command channel end to end: a real berth server on the AWS driver with
 * `commandChannel: 'ssm'`, EC2 and Auto Scaling on moto, and SSM on the emulator of
 * test/helpers/emulated-ssm.ts (moto does not emulate the SSM agents' side). No berth agent runs:
 * a host is ready when SSM says its agent is Online, every Run Command goes through SendCommand
 * and GetCommandInvocation, and pool hosts are found in their group and admitted by the server.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { AutoScalingClient, DescribeAutoScalingGroupsCommand } from '@aws-sdk/client-auto-scaling';
import { DescribeInstanceAttributeCommand, DescribeInstancesCommand } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { AwsDriver } from '../../src/drivers/aws/aws-driver.js';
import { resolveAwsConfig } from '../../src/drivers/aws/config.js';
import { checkAws } from '../../src/drivers/aws/doctor.js';
import { filesFromUserData } from '../../src/drivers/aws/user-data.js';
import { AGENT_IDENTITY_PATH, HOST_TAGS_PATH } from '../../src/protocol/messages.js';
import { BerthServer } from '../../src/server/berth-server.js';
import { agentBundleDir } from '../../src/cli/paths.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import type { CommandView, InvocationView as Invocation } from '../../src/commands/views.js';
import type { HostView } from '../../src/hosts/views.js';
import { EmulatedSsm } from '../helpers/emulated-ssm.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { Api } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';
import { motoDriverConfig, motoNetwork, type MotoNetwork } from '../drivers/aws-fixtures.js';

const NAME = 'bssmchan';


describe.skipIf(!motoAvailable('SSM command channel on moto'))('SSM command channel on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let ssm: EmulatedSsm;
  let driver: AwsDriver;
  let server: BerthServer;
  let api: Api;
  let dir: string;
  let agentPort: number;
  let hostId = '';
  let instanceId = '';

  const startBerth = () =>
    BerthServer.start({
      dataDir: join(dir, 'data'),
      port: 0,
      agentPort,
      driver,
      agentDir: agentBundleDir(),
      log: process.env['BERTH_TEST_LOG'] ? (line: string) => process.stderr.write(`berth: ${line}\n`) : () => {},
      monitorIntervalMs: 500,
      fleetDiscoveryIntervalMs: 200,
      // Shorter than the emulated SSM registration: berth's agent's limit must not apply to SSM hosts.
      bootTimeoutMs: 500,
      router: { port: 0 },
    });

  const run = async (commands: string[], extra: Record<string, unknown> = {}) => {
    const sent = await api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands, ...extra }, wait: 20 });
    expect(sent.status).toBe(201);
    return { command: sent.body, inv: sent.body.invocations[0] as Invocation };
  };

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    dir = await mkdtemp(join(tmpdir(), 'berth-ssmchan-'));
    ssm = new EmulatedSsm({ motoEndpoint: moto.endpoint, driverName: NAME, dir: join(dir, 'instances'), registerAfterMs: 1500 });
    await ssm.start();
    // The emulator runs commands on this machine, in each instance's own directory: the host's tags
    // file is there (relative), not in this machine's /etc.
    driver = new AwsDriver(motoDriverConfig(moto.endpoint, net, NAME, { agentListenHost: '127.0.0.1', commandChannel: 'ssm', ssmEndpoint: ssm.endpoint, ssmPollMs: 100 }), { ssmTagsFile: 'tags.json' });
    agentPort = await freePort();
    server = await startBerth();
    api = new Api(server.url, server.token);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await ssm?.stop();
    driver?.close();
    net?.ec2.destroy();
    await moto?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('a launched host is ready once its SSM agent is online (later than berth agent boots may take), and its boot script starts no berth agent', async () => {
    // No waitTimeout: the default wait is the SSM host's own boot limit, not berth's agent's 500 ms here.
    const launched = await api.post<HostView>('/v1/hosts', { tags: { team: 'blue' } });
    expect(launched.status).toBe(201);
    expect(launched.body).toMatchObject({ state: 'running', agent: { connected: true, version: 'amazon-ssm-agent' } });
    hostId = launched.body.id;
    const found = await net.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:berth:host-id', Values: [hostId] }] }));
    instanceId = found.Reservations?.[0]?.Instances?.[0]?.InstanceId ?? '';
    expect(instanceId).toMatch(/^i-/);
    const attr = await net.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: 'userData' }));
    const files = filesFromUserData(Buffer.from(attr.UserData?.Value ?? '', 'base64').toString('utf8'));
    // No berth identity (no token in user data) and no berth agent: only the host's tags.
    expect(files.has(AGENT_IDENTITY_PATH)).toBe(false);
    expect(JSON.parse(files.get(HOST_TAGS_PATH) ?? '{}')).toEqual({ team: 'blue' });
  });

  it('runs commands through SendCommand with berth semantics: output, fail-fast exit codes, working directory, env', async () => {
    const ok = await run(['echo "hi $WHO"', 'cd /tmp', 'pwd'], { env: { WHO: "o'brien" } });
    expect(ok.command.status).toBe('Success');
    expect(ok.inv.stdout).toBe("hi o'brien\n/tmp\n");
    expect(ok.inv.exitCodes).toEqual([0, 0, 0]);
    // berth's markers never reach the user.
    expect(ok.inv.stderr).not.toContain('##berth-ssm##');

    const failed = await run(['true', 'exit 3', 'echo never']);
    expect(failed.command.status).toBe('Failed');
    expect(failed.inv.exitCodes).toEqual([0, 3]);
    expect(failed.inv.stdout).not.toContain('never');
    expect(failed.inv.statusDetail).toContain('command 1 exited with 3');

    const nowhere = await run(['pwd'], { workingDirectory: join(dir, 'does-not-exist') });
    expect(nowhere.command.status).toBe('Failed');
    expect(nowhere.inv.stderr).toContain('cannot change to the working directory');
    // One SendCommand per command, each with the invocation id as its comment.
    const comments = ssm.commandsFor(instanceId).map((c) => c.comment);
    expect(comments).toEqual(expect.arrayContaining([`berth ${ok.command.id}`, `berth ${failed.command.id}`, `berth ${nowhere.command.id}`]));
  });

  it('times out and cancels: the status says so and no process of the command is left', async () => {
    const marker = `berth-ssm-timeout-${process.pid}`;
    const timedOut = await run([`sleep 30 # ${marker}`], { executionTimeout: 1 });
    expect(timedOut.command.status).toBe('TimedOut');
    expect(pgrep(marker)).toEqual([]);

    const marker2 = `berth-ssm-cancel-${process.pid}`;
    const sent = await api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: [`sleep 30 # ${marker2}`] } });
    await waitFor('the command to start', () => Promise.resolve(pgrep(marker2).length > 0 ? true : undefined), { timeoutMs: 10_000 });
    expect((await api.post(`/v1/commands/${sent.body.id}/cancel`, {})).status).toBe(200);
    const cancelled = await waitFor('the command to end', async () => {
      const c = (await api.get<CommandView>(`/v1/commands/${sent.body.id}`)).body;
      return c.status === 'Cancelled' ? c : undefined;
    }, { timeoutMs: 15_000 });
    expect(cancelled.invocations[0]?.statusDetail).toContain('SSM');
    expect(pgrep(marker2)).toEqual([]);
  });

  it('refuses services on an SSM host, which has no supervisor, and stores nothing', async () => {
    const refused = await api.put<{ code: string; message: string; hint: string }>(`/v1/hosts/${hostId}/services`, { services: [{ name: 'web', cmd: 'sleep 60', restart: { policy: 'always' } }] });
    expect(refused.body).toMatchObject({ code: 'invalid_state' });
    expect(refused.status).toBe(409);
    expect(refused.body.message).toContain('no service supervisor');
    expect(refused.body.hint).toContain('commandChannel: agent');
    const services = await api.get<{ services: unknown[] }>(`/v1/hosts/${hostId}/services`);
    expect(services.body.services).toEqual([]);
  });

  it("refuses a terminal on an SSM host, pointing at SSM's own sessions", async () => {
    const refusal = await new Promise<{ status: number; body: { code: string; message: string; hint: string } }>((resolve, reject) => {
      const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/hosts/${hostId}/shell`, { headers: { authorization: `Bearer ${server.token}` } });
      ws.once('open', () => reject(new Error('a terminal was opened on an SSM host')));
      ws.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as { code: string; message: string; hint: string } }));
      });
      ws.once('error', reject);
    });
    expect(refusal.status).toBe(409);
    expect(refusal.body).toMatchObject({ code: 'invalid_state' });
    expect(refusal.body.message).toContain('through its backend\'s agent (SSM)');
    expect(refusal.body.hint).toContain('aws ssm start-session');
  });

  it('a host whose SSM agent went offline is refused at once, saying so', async () => {
    ssm.setPing(instanceId, 'ConnectionLost');
    await waitFor('berth to see the agent offline', async () => ((await api.get<HostView>(`/v1/hosts/${hostId}`)).body.agent.connected ? undefined : true), { timeoutMs: 10_000 });
    const refused = await api.post<{ code: string; message: string }>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['true'] } });
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe('host_not_connected');
    expect(refused.body.message).toContain(hostId);
    // berth doctor --driver aws says so too, with what to check on the instance (its registration limit set to nothing here).
    const doctorCfg = resolveAwsConfig(motoDriverConfig(moto.endpoint, net, NAME, { commandChannel: 'ssm', ssmEndpoint: ssm.endpoint, ssmRegistrationTimeoutMs: 1 }));
    const ssmCheckOf = async () => (await checkAws({ cfg: doctorCfg, serverPid: undefined })).find((c) => c.name === 'SSM');
    const offline = await ssmCheckOf();
    expect(offline).toMatchObject({ status: 'warn', detail: expect.stringContaining(`${instanceId} (ConnectionLost)`) as unknown, hint: expect.stringContaining('AmazonSSMManagedInstanceCore') as unknown });
    ssm.setPing(instanceId, 'Online');
    await waitFor('berth to see the agent online again', async () => ((await api.get<HostView>(`/v1/hosts/${hostId}`)).body.agent.connected ? true : undefined), { timeoutMs: 10_000 });
    expect(await ssmCheckOf()).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^(\d+) of \1 running instance\(s\) online with SSM$/) as unknown });
  });

  it('a command in flight across a server restart is followed to its end and never sent twice', async () => {
    const sent = await api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['sleep 1.5', 'echo survived'] } });
    expect(sent.status).toBe(201);
    await waitFor('SSM to have the command', () => Promise.resolve(ssm.commandsFor(instanceId).some((c) => c.comment === `berth ${sent.body.id}`) ? true : undefined), { timeoutMs: 10_000 });
    await server.stop();
    server = await startBerth();
    api = new Api(server.url, server.token);
    const done = await waitFor('the command to end after the restart', async () => {
      const c = (await api.get<CommandView>(`/v1/commands/${sent.body.id}`)).body;
      return c.status === 'InProgress' || c.status === 'Pending' ? undefined : c;
    }, { timeoutMs: 20_000 });
    expect(done.status).toBe('Success');
    expect(done.invocations[0]?.stdout).toBe('survived\n');
    expect(ssm.commandsFor(instanceId).filter((c) => c.comment === `berth ${sent.body.id}`)).toHaveLength(1);
  }, 60_000);

  it('a pool of SSM hosts fills by discovery, and a claim moves an instance and runs its init through SSM', async () => {
    const created = await api.post<PoolStatusView>('/v1/pools', { name: 'ops', size: 2, onEmpty: 'fail', template: { aws: { commandChannel: 'ssm' } } });
    expect(created.status).toBe(201);
    await waitFor('pool ops to hold 2 ready hosts', async () => ((await api.get<PoolStatusView>('/v1/pools/ops')).body.status.ready >= 2 ? true : undefined), { timeoutMs: 60_000 });
    // The init sees the user's tags (the claim's group among them) as a berth agent's would give them.
    const claim = await api.post<ClaimView>('/v1/pools/ops/claims', { group: 'carol', tags: { team: 'ops' }, init: ['echo "init for $BERTH_USER" > init.out', 'test "$BERTH_USER" = carol', 'printf %s "$BERTH_TAGS" > tags.out'], env: { BERTH_USER: 'carol' } });
    expect(claim.status).toBe(201);
    const claimed = `i-${(claim.body.host?.id ?? '').slice(2)}`;
    // The init went through SSM, to that very instance.
    expect(ssm.commandsFor(claimed).some((c) => c.script.includes('init for $BERTH_USER'))).toBe(true);
    const asg = new AutoScalingClient({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    try {
      const groups = (await asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [`${NAME}-group-carol`] }))).AutoScalingGroups ?? [];
      expect((groups[0]?.Instances ?? []).map((i) => i.InstanceId)).toEqual([claimed]);
    } finally {
      asg.destroy();
    }
    const out = await api.post<CommandView>('/v1/commands', { targets: { hostIds: [claim.body.host?.id ?? ''] }, parameters: { commands: ['cat init.out'] }, wait: 20 });
    expect(out.body.invocations[0]?.stdout).toBe('init for carol\n');
    // Later commands read them from the host's tags file, which the claim's first command wrote.
    const tags = await api.post<CommandView>('/v1/commands', { targets: { hostIds: [claim.body.host?.id ?? ''] }, parameters: { commands: ['cat tags.out', 'echo', 'printf %s "$BERTH_TAGS"'] }, wait: 20 });
    const [atInit, later] = (tags.body.invocations[0]?.stdout ?? '').split('\n');
    expect(JSON.parse(atInit ?? '')).toMatchObject({ 'berth:group': 'carol', team: 'ops' });
    expect(JSON.parse(later ?? '')).toEqual(JSON.parse(atInit ?? ''));
  }, 120_000);
});

function pgrep(pattern: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', pattern], { encoding: 'utf8' }).split('\n').filter((l) => l && Number(l) !== process.pid);
  } catch {
    return [];
  }
}
