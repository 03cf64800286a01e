/**
 * The SSM channel: the fail-fast script run by a real /bin/sh, SSM's statuses mapped to berth's
 * (table), what SendCommand is sent, the agent check's errors, eventual consistency, wait and
 * cancel (aws-sdk-client-mock); then throttling, the no-retry rule of SendCommand and abort with
 * the real SDK and a fake HTTP handler (the mock replaces `send`, so the SDK's retries never run
 * under it).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CancelCommandCommand, DescribeInstanceInformationCommand, GetCommandInvocationCommand, SendCommandCommand, SSMClient, SSMServiceException } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import type { InvocationStatus } from '../../core/command-status.js';
import { resolveAwsConfig, type AwsDriverConfig } from './config.js';
import type { RequestHandler } from './sdk.js';
import { SsmChannel, type SsmCommandDoc } from './ssm.js';
import { failFastScript, mapSsmStatus, readInvocation } from './ssm-status.js';

const base: AwsDriverConfig = { region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro' };
const channel = (extra: Partial<AwsDriverConfig> = {}, requestHandler?: RequestHandler): SsmChannel => new SsmChannel(resolveAwsConfig({ ...base, ...extra }), requestHandler ? { requestHandler } : {});
const I1 = 'i-0123456789abcdef0';
const I2 = 'i-0123456789abcdef1';
const DOC: SsmCommandDoc = { commands: ['echo hi'], executionTimeoutS: 600, deliveryTimeoutS: 120 };

function awsError(name: string, message = `${name} happened`): SSMServiceException {
  return new SSMServiceException({ name, message, $fault: 'client', $metadata: { httpStatusCode: 400, requestId: 'req-9' } });
}

/** Runs the script with /bin/sh from `cwd`, as the agent would; returns what the invocation would show. */
function runScript(script: string, cwd: string): { code: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'berth-ssm-script-'));
  try {
    writeFileSync(join(dir, 'script.sh'), script);
    const r = spawnSync('/bin/sh', [join(dir, 'script.sh')], { cwd, encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, timeout: 10_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('SSM status mapping', () => {
  const table: [string | undefined, string | undefined, InvocationStatus][] = [
    ['Pending', 'Pending', 'Pending'],
    ['InProgress', 'InProgress', 'InProgress'],
    ['Delayed', 'Delayed', 'Pending'],
    ['Success', 'Success', 'Success'],
    ['Cancelling', 'Cancelling', 'Cancelling'],
    ['Cancelled', 'Cancelled', 'Cancelled'],
    ['TimedOut', 'DeliveryTimedOut', 'DeliveryTimedOut'],
    ['TimedOut', 'Delivery Timed Out', 'DeliveryTimedOut'],
    ['TimedOut', 'ExecutionTimedOut', 'TimedOut'],
    ['TimedOut', undefined, 'TimedOut'],
    ['Failed', 'Failed', 'Failed'],
    ['Failed', 'Undeliverable', 'Undeliverable'],
    ['Undeliverable', undefined, 'Undeliverable'],
    ['Failed', 'Terminated', 'Cancelled'],
    ['Cancelled', 'Terminated', 'Cancelled'],
    ['Terminated', undefined, 'Cancelled'],
    ['Failed', 'InvalidPlatform', 'Undeliverable'],
    ['SomethingNew', undefined, 'Failed'],
    [undefined, undefined, 'Failed'],
  ];
  it.each(table)('%s / %s → %s', (status, details, expected) => {
    expect(mapSsmStatus(status, details).status).toBe(expected);
  });

  it('reasons say what happened where the status alone does not', () => {
    expect(mapSsmStatus('TimedOut', 'DeliveryTimedOut').reason).toMatch(/did not pick the command up/);
    expect(mapSsmStatus('TimedOut', 'ExecutionTimedOut').reason).toMatch(/execution timeout/);
    expect(mapSsmStatus('Delayed', undefined).reason).toMatch(/retrying/);
    expect(mapSsmStatus('SomethingNew', undefined).reason).toContain('SomethingNew');
  });

  it('an invocation: markers out of stderr, per-command exit codes, the failing command, exit code only once terminal', () => {
    const failed = readInvocation('c1', I1, { Status: 'Failed', StatusDetails: 'Failed', ResponseCode: 3, StandardOutputContent: 'out\n', StandardErrorContent: 'warn\n##berth-ssm## cmd=0 exit=0\nbad\n##berth-ssm## cmd=1 exit=3\n' });
    expect(failed).toMatchObject({ status: 'Failed', exitCode: 3, stdout: 'out\n', stderr: 'warn\nbad\n', commandExitCodes: [0, 3], failedCommand: 1 });
    expect(failed.reason).toBe('command 1 exited with 3; the commands after it did not run');
    expect(readInvocation('c1', I1, { Status: 'InProgress', ResponseCode: -1 })).toMatchObject({ status: 'InProgress', exitCode: null, commandExitCodes: [] });
    expect(readInvocation('c1', I1, { Status: 'TimedOut', StatusDetails: 'DeliveryTimedOut', ResponseCode: -1 })).toMatchObject({ status: 'DeliveryTimedOut', exitCode: null });
  });
});

describe('the fail-fast script, run by /bin/sh', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'berth-ssm-'));
    return () => rmSync(root, { recursive: true, force: true });
  });

  it('stops at the first failing command and reports each exit code; the shell state carries over', () => {
    const script = failFastScript({ commands: ['echo one; X=kept', 'mkdir sub && cd sub', 'echo "two $X $(basename "$PWD")"', 'sh -c "exit 7"', 'echo never'], workingDirectory: root });
    const r = runScript(script, '/');
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('one\ntwo kept sub\n');
    const inv = readInvocation('c', I1, { Status: 'Failed', ResponseCode: r.code ?? -1, StandardOutputContent: r.stdout, StandardErrorContent: r.stderr });
    expect(inv.commandExitCodes).toEqual([0, 0, 0, 7]);
    expect(inv.failedCommand).toBe(3);
    expect(inv.stderr).toBe('');
  });

  it('success runs everything and exits 0; an `exit` inside a command is reported for that command', () => {
    const ok = runScript(failFastScript({ commands: ['true', 'echo done >&2'] }), root);
    expect(ok.code).toBe(0);
    expect(readInvocation('c', I1, { Status: 'Success', ResponseCode: 0, StandardErrorContent: ok.stderr })).toMatchObject({ commandExitCodes: [0, 0], stderr: 'done\n', failedCommand: undefined });
    const exited = runScript(failFastScript({ commands: ['echo a', 'exit 5', 'echo b'] }), root);
    expect(exited).toMatchObject({ code: 5, stdout: 'a\n' });
    expect(readInvocation('c', I1, { Status: 'Failed', ResponseCode: 5, StandardErrorContent: exited.stderr }).commandExitCodes).toEqual([0, 5]);
  });

  it('honours an awkward working directory and exports awkward values literally', () => {
    const dir = join(root, `it's a "dir" $HOME`);
    mkdirSync(dir);
    const env = { QUOTES: `it's "quoted"`, DOLLAR: '$HOME ${PATH} $(id) `id`', BACKSLASH: 'a\\b\\n', LINES: 'one\ntwo', EMPTY: '' };
    const script = failFastScript({ commands: ['pwd', ...Object.keys(env).map((k) => `printf '%s|' "$${k}"`)], workingDirectory: dir, env });
    const r = runScript(script, '/');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${dir}\n${Object.values(env).join('|')}|`);
  });

  it("gives commands the host's tags as BERTH_TAGS, as berth's agent does: the new ones written to the tags file first, else read from it", () => {
    const file = join(root, 'etc', 'berth', 'tags.json');
    const show = [`printf '%s|' "$BERTH_TAGS"`, `cat ${file}`];
    // Before a claim: the file the boot script wrote (none here: {}).
    expect(runScript(failFastScript({ commands: show.slice(0, 1), tags: { file } }), root).stdout).toBe('{}|');
    // A claim changed them: written (through a rename), and given to the commands.
    const tags = JSON.stringify({ 'berth:group': 'alice', quote: `it's "x"` });
    expect(runScript(failFastScript({ commands: show, tags: { json: tags, file } }), root).stdout).toBe(`${tags}|${tags}\n`);
    // Later commands read them from the file, and the command's own env still wins.
    expect(runScript(failFastScript({ commands: show.slice(0, 1), tags: { file } }), root).stdout).toBe(`${tags}|`);
    expect(runScript(failFastScript({ commands: show.slice(0, 1), tags: { file }, env: { BERTH_TAGS: 'mine' } }), root).stdout).toBe('mine|');
  });

  it('a working directory that does not exist fails before any command runs', () => {
    const r = runScript(failFastScript({ commands: ['echo never'], workingDirectory: join(root, 'missing') }), '/');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('berth: cannot change to the working directory');
  });

  it('refuses environment names that are not identifiers, and NUL bytes', async () => {
    for (const name of ['1X', 'A-B', 'A B', 'X;rm -rf /', '']) {
      expect(() => failFastScript({ commands: ['true'], env: { [name]: 'v' } })).toThrow(expect.objectContaining({ code: 'validation_failed' }) as Error);
    }
    expect(() => failFastScript({ commands: ['echo \0'] })).toThrow(/NUL/);
    const err = await rejection(channel().send([I1], { ...DOC, env: { 'BAD-NAME': 'x' } }));
    expect(err.code).toBe('validation_failed');
  });
});

const ssm = mockClient(SSMClient);

describe('SsmChannel (aws-sdk-client-mock)', () => {
  beforeEach(() => ssm.reset());
  // The mock stubs every SSMClient's send: the fake-handler tests below need the real one.
  afterAll(() => ssm.restore());

  const online = (...ids: string[]): void => void ssm.on(DescribeInstanceInformationCommand).resolves({ InstanceInformationList: ids.map((InstanceId) => ({ InstanceId, PingStatus: 'Online' })) });

  it('an instance whose agent is not registered: a clear error, and nothing sent', async () => {
    ssm.on(DescribeInstanceInformationCommand).resolves({ InstanceInformationList: [{ InstanceId: I2, PingStatus: 'ConnectionLost' }] });
    const err = await rejection(channel().send([I1, I2], DOC));
    expect(err.code).toBe('host_not_connected');
    expect(err.message).toBe(`the SSM agent on ${I1} is not registered with SSM; the SSM agent on ${I2} is not online (PingStatus ConnectionLost) (region eu-west-1)`);
    expect(err.hint).toContain('AmazonSSMManagedInstanceCore');
    expect(err.hint).toContain('agent');
    expect(err.details).toMatchObject({ agents: { [I1]: 'not registered', [I2]: 'ConnectionLost' } });
    expect(ssm.commandCalls(DescribeInstanceInformationCommand)).toHaveLength(1);
    expect(ssm.commandCalls(DescribeInstanceInformationCommand)[0]?.args[0].input).toEqual({ Filters: [{ Key: 'InstanceIds', Values: [I1, I2] }], MaxResults: 50 });
    expect(ssm.commandCalls(SendCommandCommand)).toHaveLength(0);
  });

  it("SendCommand's InvalidInstanceId (and DescribeInstanceInformation's) become the same error", async () => {
    online(I1);
    ssm.on(SendCommandCommand).rejects(awsError('InvalidInstanceId', ''));
    const err = await rejection(channel().send([I1], DOC));
    expect(err).toMatchObject({ code: 'host_not_connected', details: { operation: 'SendCommand', awsCode: 'InvalidInstanceId', instanceIds: [I1] } });
    expect(err.message).toContain(`the SSM agent on ${I1} is not registered/online`);
    expect(err.hint).toContain('AmazonSSMManagedInstanceCore');
    ssm.on(DescribeInstanceInformationCommand).rejects(awsError('InvalidInstanceId'));
    expect((await rejection(channel().checkAgents([I1]))).code).toBe('host_not_connected');
  });

  it('one check and one SendCommand of AWS-RunShellScript with the fail-fast script, timeouts and working directory', async () => {
    online(I1, I2);
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: 'cmd-1' } });
    const doc: SsmCommandDoc = { commands: ['make', 'make test'], workingDirectory: '/srv/app', executionTimeoutS: 900, deliveryTimeoutS: 60, env: { MODE: 'ci' }, comment: 'claim c-1 init' };
    const c = channel();
    const sent = await c.send([I1, I2, I1], doc);
    expect(sent).toMatchObject({ commandId: 'cmd-1', instanceIds: [I1, I2] });
    expect(ssm.commandCalls(SendCommandCommand)[0]?.args[0].input).toEqual({
      InstanceIds: [I1, I2],
      DocumentName: 'AWS-RunShellScript',
      Parameters: { commands: [failFastScript(doc)], executionTimeout: ['900'], workingDirectory: ['/srv/app'] },
      TimeoutSeconds: 60,
      Comment: 'claim c-1 init',
    });
    // (The mock replaces send, so the call counter does not see these: counted below with the real SDK.)
    expect(ssm.commandCalls(DescribeInstanceInformationCommand)).toHaveLength(1);
    await c.send([I1], DOC, { skipAgentCheck: true });
    expect(ssm.commandCalls(DescribeInstanceInformationCommand)).toHaveLength(1);
    expect(ssm.commandCalls(SendCommandCommand)).toHaveLength(2);
  });

  it('refuses what SSM would refuse, before any call', async () => {
    const c = channel();
    for (const [ids, doc] of [
      [[], DOC],
      [['i-nope'], DOC],
      [Array.from({ length: 51 }, (_, i) => `i-${String(i).padStart(17, '0')}`), DOC],
      [[I1], { ...DOC, executionTimeoutS: 0 }],
      [[I1], { ...DOC, deliveryTimeoutS: 10 }],
      [[I1], { ...DOC, commands: [] }],
      [[I1], { ...DOC, comment: 'x'.repeat(101) }],
    ] as [string[], SsmCommandDoc][]) {
      expect((await rejection(c.send(ids, doc))).code).toBe('validation_failed');
    }
    expect(ssm.calls()).toHaveLength(0);
  });

  it('right after the send an invocation SSM does not show yet is Pending; later, or for a command sent elsewhere, not found', async () => {
    online(I1);
    ssm.on(SendCommandCommand).resolves({ Command: { CommandId: 'cmd-2' } });
    ssm.on(GetCommandInvocationCommand).rejects(awsError('InvocationDoesNotExist'));
    const c = channel();
    await c.send([I1], DOC);
    expect(await c.status('cmd-2', I1)).toMatchObject({ status: 'Pending', exitCode: null, commandExitCodes: [], reason: expect.stringContaining('does not show the invocation yet') as unknown });
    expect((await rejection(c.status('cmd-2', I1, { sentAt: Date.now() - 120_000 }))).code).toBe('command_not_found');
    expect((await rejection(c.status('cmd-other', I1))).code).toBe('command_not_found');
    expect(await c.status('cmd-other', I1, { sentAt: Date.now() })).toMatchObject({ status: 'Pending' });
  });

  it('wait polls until every invocation is terminal, with a growing interval', async () => {
    const at: number[] = [];
    let n = 0;
    ssm.on(GetCommandInvocationCommand, { InstanceId: I1 }).callsFake(() => {
      at.push(Date.now());
      n += 1;
      if (n === 1) throw awsError('InvocationDoesNotExist');
      return n < 4 ? { Status: 'InProgress', ResponseCode: -1 } : { Status: 'Success', StatusDetails: 'Success', ResponseCode: 0, StandardErrorContent: '##berth-ssm## cmd=0 exit=0\n' };
    });
    ssm.on(GetCommandInvocationCommand, { InstanceId: I2 }).resolves({ Status: 'Failed', StatusDetails: 'Failed', ResponseCode: 2, StandardErrorContent: '##berth-ssm## cmd=0 exit=2\n' });
    const [a, b] = await channel().wait('cmd-3', [I1, I2], { pollMs: 40, sentAt: Date.now() });
    expect(a).toMatchObject({ instanceId: I1, status: 'Success', exitCode: 0, commandExitCodes: [0] });
    expect(b).toMatchObject({ instanceId: I2, status: 'Failed', exitCode: 2, failedCommand: 0 });
    expect(ssm.commandCalls(GetCommandInvocationCommand, { InstanceId: I2 })).toHaveLength(1);
    const gaps = at.slice(1).map((t, i) => t - (at[i] ?? t));
    expect(gaps).toHaveLength(3);
    // 40, 60, 90 ms (a timer may fire a millisecond early).
    [40, 60, 90].forEach((ms, i) => expect(gaps[i]).toBeGreaterThanOrEqual(ms - 2));
  });

  it('wait obeys the AbortSignal between polls', async () => {
    ssm.on(GetCommandInvocationCommand).resolves({ Status: 'InProgress', ResponseCode: -1 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    const err = await rejection(channel().wait('cmd-4', [I1], { signal: controller.signal }));
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(err).toMatchObject({ code: 'deadline_exceeded', message: 'waiting for SSM command cmd-4 was cancelled' });
    expect(err.hint).toContain('cancel');
  });

  it('cancel is one CancelCommand; an unknown command is command_not_found; permissions are named ssm:…', async () => {
    ssm.on(CancelCommandCommand).resolvesOnce({}).rejects(awsError('InvalidCommandId'));
    const c = channel();
    await c.cancel('cmd-5', [I1, I2]);
    expect(ssm.commandCalls(CancelCommandCommand)[0]?.args[0].input).toEqual({ CommandId: 'cmd-5', InstanceIds: [I1, I2] });
    expect((await rejection(c.cancel('cmd-x', [I1]))).code).toBe('command_not_found');
    ssm.on(DescribeInstanceInformationCommand).rejects(awsError('AccessDeniedException', 'not authorized'));
    const denied = await rejection(c.send([I1], DOC));
    expect(denied.code).toBe('driver_unavailable');
    expect(denied.message).toBe('AWS refused DescribeInstanceInformation: the credentials berth runs with lack the permission ssm:DescribeInstanceInformation in region eu-west-1');
  });
});

type Answer = { status: number; body: unknown };
type Reply = Answer | 'hang';
const THROTTLED: Answer = { status: 400, body: { __type: 'ThrottlingException', message: 'Rate exceeded' } };
const SERVER_ERROR: Answer = { status: 500, body: { __type: 'InternalServerError', Message: 'boom' } };
const ONLINE: Answer = { status: 200, body: { InstanceInformationList: [{ InstanceId: I1, PingStatus: 'Online' }] } };
const SENT: Answer = { status: 200, body: { Command: { CommandId: 'cmd-h' } } };

/** Answers each SSM operation (X-Amz-Target) from its own queue of replies (the last one repeats). */
function fakeSsm(replies: Record<string, Reply[]>): { handler: RequestHandler; actions: string[] } {
  const actions: string[] = [];
  const handler = {
    handle: async (request: { headers: Record<string, string> }, options?: { abortSignal?: AbortSignal }) => {
      const action = (request.headers['x-amz-target'] ?? '?').replace('AmazonSSM.', '');
      actions.push(action);
      const queue = replies[action] ?? [];
      const reply = queue.length > 1 ? queue.shift() : queue[0];
      if (!reply) throw new Error(`unexpected ${action}`);
      if (reply === 'hang') {
        await new Promise<never>((_, reject) => {
          const abort = (): void => reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          if (options?.abortSignal?.aborted) abort();
          options?.abortSignal?.addEventListener('abort', abort, { once: true });
        });
      }
      const r = reply === 'hang' ? SERVER_ERROR : reply;
      return { response: { statusCode: r.status, reason: '', headers: { 'content-type': 'application/x-amz-json-1.1' }, body: Readable.from([Buffer.from(JSON.stringify(r.body))]) } };
    },
    updateHttpClientConfig: () => undefined,
    httpHandlerConfigs: () => ({}),
  } as unknown as RequestHandler;
  return { handler, actions };
}

describe('SsmChannel with the real SDK (fake HTTP handler)', () => {
  it('a throttled check is retried and succeeds: one call, two attempts', async () => {
    const { handler } = fakeSsm({ DescribeInstanceInformation: [THROTTLED, ONLINE], SendCommand: [SENT] });
    const c = channel({}, handler);
    expect((await c.send([I1], DOC)).commandId).toBe('cmd-h');
    expect(c.callCounts()).toEqual({ DescribeInstanceInformation: 1, SendCommand: 1 });
    expect(c.attemptCounts()).toEqual({ DescribeInstanceInformation: 2, SendCommand: 1 });
  });

  it('throttled to the end: says so, with an SSM hint', async () => {
    const { handler, actions } = fakeSsm({ GetCommandInvocation: [THROTTLED] });
    const err = await rejection(channel({ maxAttempts: 2 }, handler).status('cmd-h', I1));
    expect(actions).toHaveLength(2);
    expect(err).toMatchObject({ code: 'driver_unavailable', details: { awsCode: 'ThrottlingException', attempts: 2 } });
    expect(err.message).toBe('AWS throttled GetCommandInvocation in region eu-west-1 and was still throttling after 2 attempts');
    expect(err.hint).toContain('SSM');
  });

  it('SendCommand is retried when throttled, never after a server error (it could run twice)', async () => {
    const throttled = fakeSsm({ DescribeInstanceInformation: [ONLINE], SendCommand: [THROTTLED, SENT] });
    await channel({}, throttled.handler).send([I1], DOC);
    expect(throttled.actions.filter((a) => a === 'SendCommand')).toHaveLength(2);

    const failing = fakeSsm({ DescribeInstanceInformation: [SERVER_ERROR, ONLINE], SendCommand: [SERVER_ERROR, SENT] });
    const err = await rejection(channel({}, failing.handler).send([I1], DOC));
    expect(failing.actions).toEqual(['DescribeInstanceInformation', 'DescribeInstanceInformation', 'SendCommand']);
    expect(err.details).toMatchObject({ operation: 'SendCommand', attempts: 1 });
    expect(err.hint).toContain('list-commands');
  });

  it('SendCommand is retried when the connection was refused (SSM never got it)', async () => {
    let refused = 0;
    const { handler: inner, actions } = fakeSsm({ DescribeInstanceInformation: [ONLINE], SendCommand: [SENT] });
    const handler = {
      ...(inner as object),
      handle: (request: { headers: Record<string, string> }, options?: unknown) => {
        if (request.headers['x-amz-target'] === 'AmazonSSM.SendCommand' && refused++ === 0) return Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
        return (inner as unknown as { handle: (r: unknown, o?: unknown) => Promise<unknown> }).handle(request, options);
      },
    } as unknown as RequestHandler;
    const c = channel({}, handler);
    expect((await c.send([I1], DOC)).commandId).toBe('cmd-h');
    expect(refused).toBe(2);
    expect(actions.filter((a) => a === 'SendCommand')).toHaveLength(1);
    expect(c.attemptCounts()['SendCommand']).toBe(2);
  });

  it("the caller's abort stops a call under way promptly", async () => {
    const { handler } = fakeSsm({ DescribeInstanceInformation: [ONLINE], SendCommand: ['hang'] });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = Date.now();
    const err = await rejection(channel({}, handler).send([I1], DOC, { signal: controller.signal }));
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(err).toMatchObject({ code: 'deadline_exceeded', message: 'AWS call SendCommand was cancelled' });
    expect(err.hint).toContain('list-commands');
  });
});
