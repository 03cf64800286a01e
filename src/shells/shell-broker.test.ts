/**
 * The broker's own rules, with the agent channel recorded: what it refuses (sending nothing), the
 * windows it keeps both ways, and how a session ends. The whole path, with real hosts, is
 * test/e2e/shell.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { NewEvent } from '../events/types.js';
import type { AgentMessage, ServerMessage } from '../protocol/messages.js';
import { SHELL_MAX_SESSIONS_PER_HOST, SHELL_WINDOW_BYTES } from '../protocol/shell.js';
import type { HostRow } from '../store/schema.js';
import { ShellBroker, type ShellClient, type ShellExit } from './shell-broker.js';

const REQUEST = { term: 'xterm', cols: 80, rows: 24 };

function setup(opts: { state?: HostRow['state']; connected?: boolean; supervises?: boolean; openTimeoutMs?: number; idleTimeoutMs?: number; slot?: HostRow['slot'] } = {}) {
  const sent: ServerMessage[] = [];
  const events: NewEvent[] = [];
  const host = { id: 'h-1', tenant_id: 't', state: opts.state ?? 'running', pool: opts.slot ? 'web' : null, slot: opts.slot ?? null } as HostRow;
  const broker = new ShellBroker({
    hosts: { get: (tenantId, id) => Promise.resolve(tenantId === 't' && id === 'h-1' ? host : undefined) },
    agents: { isConnected: () => opts.connected ?? true, supervises: () => opts.supervises ?? true, send: (_id, msg) => (sent.push(msg), true) },
    events: { emit: (e) => events.push(e) },
    ...(opts.openTimeoutMs !== undefined ? { openTimeoutMs: opts.openTimeoutMs } : {}),
    ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
  });
  const client = () => {
    const got = { output: [] as Buffer[], taken: [] as (() => void)[], ended: undefined as ShellExit | undefined, paused: 0, resumed: 0 };
    const c: ShellClient = {
      output: (data, taken) => (got.output.push(data), got.taken.push(taken)),
      ended: (exit) => (got.ended = exit),
      pauseInput: () => got.paused++,
      resumeInput: () => got.resumed++,
    };
    return { c, got };
  };
  const fromAgent = (msg: AgentMessage) => broker.onAgentMessage('h-1', msg);
  return { broker, sent, events, client, fromAgent };
}

describe('ShellBroker', () => {
  it('refuses, sending nothing to the host, what cannot have a terminal', async () => {
    const cases: [Parameters<typeof setup>[0], string, string][] = [
      [{}, 'h-2', 'host h-2 does not exist'],
      [{ state: 'booting' }, 'h-1', 'host h-1 is booting, not running'],
      [{ supervises: false }, 'h-1', "through its backend's agent (SSM)"],
      [{ connected: false }, 'h-1', 'the agent of host h-1 is not connected'],
      // A pool's spare would carry what the terminal did to the next user who claims it.
      [{ slot: 'ready' }, 'h-1', 'host h-1 is a ready host of pool web, waiting to be handed out'],
      [{ slot: 'warming' }, 'h-1', 'host h-1 is a warming host of pool web'],
    ];
    for (const [opts, hostId, message] of cases) {
      const { broker, sent, client } = setup(opts);
      await expect(broker.open('t', hostId, REQUEST, client().c)).rejects.toThrow(message);
      expect(sent).toEqual([]);
    }
    const { broker, client } = setup();
    await expect(broker.open('other-tenant', 'h-1', REQUEST, client().c)).rejects.toThrow('does not exist');
    // A claimed host is its user's; a quarantined one is opened to see why it failed.
    for (const slot of ['claimed', 'quarantined'] as const) {
      const open = setup({ slot });
      await expect(open.broker.open('t', 'h-1', REQUEST, open.client().c)).resolves.toMatchObject({ id: expect.stringMatching(/^sh-/) as unknown });
    }
  });

  it(`refuses a session past ${SHELL_MAX_SESSIONS_PER_HOST} on one host`, async () => {
    const { broker, sent, client } = setup();
    for (let i = 0; i < SHELL_MAX_SESSIONS_PER_HOST; i++) await broker.open('t', 'h-1', REQUEST, client().c);
    await expect(broker.open('t', 'h-1', REQUEST, client().c)).rejects.toMatchObject({ code: 'conflict' });
    expect(sent.filter((m) => m.type === 'shellOpen')).toHaveLength(SHELL_MAX_SESSIONS_PER_HOST);
  });

  it('acknowledges output only once the client took it, and pauses input past the window', async () => {
    const { broker, sent, client, fromAgent } = setup();
    const { c, got } = client();
    const handle = await broker.open('t', 'h-1', REQUEST, c);
    fromAgent({ type: 'shellOpened', sessionId: handle.id, pid: 7 });
    fromAgent({ type: 'shellOutput', sessionId: handle.id, data: Buffer.from('hello').toString('base64') });
    expect(got.output.map(String)).toEqual(['hello']);
    expect(sent.some((m) => m.type === 'shellAck')).toBe(false);
    got.taken[0]?.();
    expect(sent.at(-1)).toEqual({ type: 'shellAck', sessionId: handle.id, bytes: 5 });

    const chunk = Buffer.alloc(256 * 1024, 0x61);
    for (let i = 0; i < 4; i++) handle.input(chunk);
    expect(got.paused).toBe(0); // exactly one window in flight
    handle.input(Buffer.from('x'));
    expect(got.paused).toBe(1);
    fromAgent({ type: 'shellInputTaken', sessionId: handle.id, bytes: 256 * 1024 });
    expect(got.resumed).toBe(0); // still more than half a window in flight
    fromAgent({ type: 'shellInputTaken', sessionId: handle.id, bytes: SHELL_WINDOW_BYTES / 2 });
    expect(got.resumed).toBe(1);
  });

  it('ends sessions when the program exits, the agent goes, or it never opens; each end is an event', async () => {
    const { broker, client, fromAgent, events, sent } = setup({ openTimeoutMs: 50 });
    const a = client();
    const b = client();
    const c = client();
    const exited = await broker.open('t', 'h-1', REQUEST, a.c);
    fromAgent({ type: 'shellOpened', sessionId: exited.id, pid: 1 });
    fromAgent({ type: 'shellExit', sessionId: exited.id, code: 3, signal: null });
    expect(a.got.ended).toEqual({ code: 3, signal: null });
    const cutOff = await broker.open('t', 'h-1', REQUEST, b.c);
    fromAgent({ type: 'shellOpened', sessionId: cutOff.id, pid: 2 });
    broker.onAgentGone('h-1');
    expect(b.got.ended?.error).toBe('the agent of host h-1 disconnected; the terminal was closed');
    const silent = await broker.open('t', 'h-1', REQUEST, c.c);
    await new Promise((r) => setTimeout(r, 100));
    expect(c.got.ended?.error).toMatch(/did not open a terminal within 0.05 s/);
    expect(sent.at(-1)).toEqual({ type: 'shellClose', sessionId: silent.id });
    expect(broker.count()).toBe(0);
    expect(events.filter((e) => e.state === 'closed').map((e) => e.reason)).toEqual([
      'exit code 3',
      'the agent of host h-1 disconnected; the terminal was closed',
      expect.stringMatching(/did not open a terminal/) as unknown,
    ]);
    // Input after the end goes nowhere.
    const before = sent.length;
    exited.input(Buffer.from('late'));
    expect(sent.length).toBe(before);
  });

  it('ends a session idle past the timeout, and keeps one with traffic', async () => {
    const { broker, client, fromAgent, sent } = setup({ idleTimeoutMs: 300 });
    const idle = client();
    const busy = client();
    const a = await broker.open('t', 'h-1', REQUEST, idle.c);
    const b = await broker.open('t', 'h-1', REQUEST, busy.c);
    fromAgent({ type: 'shellOpened', sessionId: a.id, pid: 1 });
    fromAgent({ type: 'shellOpened', sessionId: b.id, pid: 2 });
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 75));
      b.input(Buffer.from('k'));
    }
    expect(idle.got.ended?.error).toBe('the session was idle for 0.3 s and was ended (berth server --shell-idle-timeout)');
    expect(sent).toContainEqual({ type: 'shellClose', sessionId: a.id });
    expect(busy.got.ended).toBeUndefined();
    broker.closeAll();
    expect(busy.got.ended?.error).toBe('the berth server is stopping');
  });
});
