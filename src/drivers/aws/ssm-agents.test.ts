/**
 * SsmAgents' own decisions, with SSM's answers scripted (the end-to-end path against an SSM
 * emulator is test/e2e/aws-ssm.test.ts): a run delivered twice is sent once, a refused send is
 * reported in berth's terms, messages an SSM host cannot take are refused, and a failing
 * DescribeInstanceInformation never makes a host look connected.
 */
import { describe, expect, it } from 'vitest';
import { BerthError } from '../../core/errors.js';
import { HOST_TAGS_PATH, type AgentMessage, type ServerMessage } from '../../protocol/messages.js';
import { SsmAgents, type SsmApi } from './ssm-agents.js';
import type { SsmCommandDoc, SsmInvocation } from './ssm.js';

const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined };
const INSTANCE = 'i-0123456789abcdef0';

function fakeSsm(over: Partial<SsmApi> = {}): SsmApi & { sends: number } {
  const counter = { sends: 0 };
  const api: SsmApi & { sends: number } = {
    get sends() {
      return counter.sends;
    },
    agentPings: () => Promise.resolve(new Map([[INSTANCE, 'Online']])),
    commandsFor: () => Promise.resolve([]),
    send: () => {
      counter.sends += 1;
      return Promise.resolve({ commandId: `cmd-${counter.sends}`, instanceIds: [INSTANCE], sentAt: Date.now() });
    },
    status: (commandId: string): Promise<SsmInvocation> =>
      Promise.resolve({ commandId, instanceId: INSTANCE, status: 'Success', ssmStatus: 'Success', ssmStatusDetails: 'Success', exitCode: 0, stdout: 'ok\n', stderr: '', commandExitCodes: [0], failedCommand: undefined, reason: undefined }),
    cancel: () => Promise.resolve(),
    ...over,
  };
  return api;
}

function harness(ssm: SsmApi) {
  const agents = new SsmAgents(ssm, { pollMs: 20, resultPollMs: 5, logger: silent });
  const messages: AgentMessage[] = [];
  const hellos: string[] = [];
  agents.start({ onHello: (id) => hellos.push(id), onMessage: (_id, msg) => messages.push(msg), onDisconnect: () => undefined });
  agents.attach({ id: 'h-1', tenantId: 'default', driverData: { instanceId: INSTANCE, channel: 'ssm' } });
  return { agents, messages, hellos };
}

const run = (invocationId: string): ServerMessage => ({
  type: 'run',
  invocationId,
  document: 'RunShellScript',
  parameters: { commands: ['echo ok'], executionTimeoutSeconds: 60 },
  streamOutput: true,
  deliverBy: new Date(Date.now() + 30_000).toISOString(),
});

async function until<T>(what: () => T | undefined): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const value = what();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('timed out');
}

describe('SsmAgents', () => {
  it('handles only hosts launched for the ssm channel', () => {
    const agents = new SsmAgents(fakeSsm(), { pollMs: 20, logger: silent });
    expect(agents.handles({ instanceId: INSTANCE, channel: 'ssm' })).toBe(true);
    expect(agents.handles({ instanceId: INSTANCE })).toBe(false);
  });

  it('says hello once SSM reports the agent online, and sends a run delivered twice only once', async () => {
    const ssm = fakeSsm();
    const { agents, messages, hellos } = harness(ssm);
    await until(() => (hellos.length ? true : undefined));
    expect(agents.isConnected('h-1')).toBe(true);
    expect(agents.send('h-1', run('c-1'))).toBe(true);
    expect(agents.send('h-1', run('c-1'))).toBe(true);
    const result = await until(() => messages.find((m) => m.type === 'result'));
    expect(result).toMatchObject({ invocationId: 'c-1', result: { status: 'Success', exitCodes: [0], stdout: { text: 'ok\n' } } });
    expect(ssm.sends).toBe(1);
    await agents.close();
  });

  it('reports a send SSM refuses for the instance as Undeliverable, with the reason', async () => {
    const ssm = fakeSsm({ send: () => Promise.reject(new BerthError('host_not_connected', `the SSM agent on ${INSTANCE} is not registered`, 'Check its instance profile.')) });
    const { agents, messages, hellos } = harness(ssm);
    await until(() => (hellos.length ? true : undefined));
    agents.send('h-1', run('c-2'));
    const result = await until(() => messages.find((m) => m.type === 'result'));
    expect(result).toMatchObject({ result: { status: 'Undeliverable' } });
    expect(result.type === 'result' && result.result.statusDetail).toContain('not registered');
    await agents.close();
  });

  it('refuses what an SSM host cannot take (no supervisor), and anything for a host not online', async () => {
    const { agents, hellos } = harness(fakeSsm());
    expect(agents.send('h-1', run('c-3'))).toBe(false); // not online yet
    await until(() => (hellos.length ? true : undefined));
    expect(agents.send('h-1', { type: 'services', services: [] })).toBe(false);
    expect(agents.send('h-1', { type: 'serviceAction', name: 'web', action: 'restart' })).toBe(false);
    await agents.close();
  });

  it("gives the host's commands its tags: read from the tags file until a claim sends new ones (even while offline), then those", async () => {
    const docs: SsmCommandDoc[] = [];
    const ssm = fakeSsm();
    const { agents, hellos, messages } = harness({ ...ssm, send: (ids, doc, opts) => (docs.push(doc), ssm.send(ids, doc, opts)) });
    // Taken while the agent is not online yet: the first command after must not run with the old tags.
    expect(agents.send('h-1', { type: 'tags', tags: { 'berth:group': 'alice' } })).toBe(true);
    await until(() => (hellos.length ? true : undefined));
    expect(agents.send('h-1', run('c-5'))).toBe(true);
    await until(() => messages.find((m) => m.type === 'result' && m.invocationId === 'c-5'));
    expect(docs[0]?.tags).toEqual({ json: '{"berth:group":"alice"}', file: HOST_TAGS_PATH });
    await agents.close();

    const fresh = harness(fakeSsm({ send: (ids, doc) => (docs.push(doc), Promise.resolve({ commandId: 'cmd-x', instanceIds: ids, sentAt: Date.now() })) }));
    await until(() => (fresh.hellos.length ? true : undefined));
    fresh.agents.send('h-1', run('c-6'));
    await until(() => (docs.length === 2 ? true : undefined));
    expect(docs[1]?.tags).toEqual({ file: HOST_TAGS_PATH }); // the boot script's file
    await fresh.agents.close();
  });

  it('never looks connected while SSM cannot be asked', async () => {
    let asked = 0;
    const { agents, hellos } = harness(fakeSsm({ agentPings: () => ((asked += 1), Promise.reject(new BerthError('driver_unavailable', 'denied', 'grant ssm:DescribeInstanceInformation'))) }));
    await until(() => (asked >= 3 ? true : undefined));
    expect(hellos).toEqual([]);
    expect(agents.isConnected('h-1')).toBe(false);
    await agents.close();
  });
});
