/**
 * The gateway stops promptly whatever its agents are doing: a connection still being authenticated
 * when it closes, or one that never said hello, must not keep the server's stop waiting. With TLS,
 * its port still answers an agent that dials in plain, only to tell it to switch.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { makeCa, makeCertificate } from '../../test/helpers/certs.js';
import { AGENT_PATH, HOST_ID_HEADER } from '../protocol/messages.js';
import { AgentGateway, type GatewayHandlers } from './gateway.js';

const handlers = (authenticate: GatewayHandlers['authenticate']): GatewayHandlers => ({ authenticate, onHello: () => {}, onMessage: () => {}, onDisconnect: () => {} });

/** Dials the gateway as an agent would; resolves with how the connection ended. */
function dial(port: number, token = 'secret'): { ws: WebSocket; opened: Promise<void>; ended: Promise<string> } {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${AGENT_PATH}`, { headers: { [HOST_ID_HEADER]: 'h-1', authorization: `Bearer ${token}` } });
  const opened = new Promise<void>((resolve) => ws.once('open', () => resolve()));
  const ended = new Promise<string>((resolve) => {
    ws.once('close', () => resolve('closed'));
    ws.once('error', () => resolve('error'));
  });
  return { ws, opened, ended };
}

const within = <T>(ms: number, p: Promise<T>) => Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms))]);

describe('agent gateway close', () => {
  it('does not wait for an agent still being authenticated when it closes: that agent is turned away', async () => {
    let authenticating: () => void = () => {};
    const started = new Promise<void>((resolve) => (authenticating = resolve));
    let release: (v: { tenantId: string }) => void = () => {};
    const gateway = new AgentGateway({ host: '127.0.0.1', port: 0 }, handlers(() => {
      authenticating();
      return new Promise((resolve) => (release = resolve));
    }));
    const { port } = await gateway.listen();
    const agent = dial(port);
    await started;
    const closed = gateway.close();
    release({ tenantId: 'default' }); // the token checks out, after the close began
    await within(2000, closed);
    expect(await within(2000, agent.ended)).not.toBe('open');
  });

  it('does not wait for a connected agent that has not said hello', async () => {
    const gateway = new AgentGateway({ host: '127.0.0.1', port: 0 }, handlers(() => Promise.resolve({ tenantId: 'default' })));
    const { port } = await gateway.listen();
    const agent = dial(port);
    await agent.opened;
    await within(2000, gateway.close());
    expect(await within(2000, agent.ended)).toBe('closed');
  });
});

describe('agent gateway with TLS, dialled in plain', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-gateway-'));
  const ca = makeCa(dir, 'ca');
  const pair = makeCertificate(dir, 'gw', ['127.0.0.1'], ca);

  async function tlsGateway(hellos: string[]) {
    const gateway = new AgentGateway(
      { host: '127.0.0.1', port: 0, tls: pair, trust: () => ca.cert.toString(), switchTo: () => ({ url: 'wss://127.0.0.1:7071/v1/agent', ca: ca.cert.toString() }), firstByteTimeoutMs: 300 },
      { ...handlers((_id, token) => Promise.resolve(token === 'secret' ? { tenantId: 'default' } : undefined)), onHello: (hostId) => hellos.push(hostId) },
    );
    return { gateway, port: (await gateway.listen()).port };
  }

  it('tells an agent with good credentials to switch, and nothing else: no session, no hello taken', async () => {
    const hellos: string[] = [];
    const { gateway, port } = await tlsGateway(hellos);
    try {
      const agent = dial(port);
      const frame = new Promise<string>((resolve) => agent.ws.once('message', (data: Buffer) => resolve(data.toString())));
      await agent.opened;
      agent.ws.send(JSON.stringify({ type: 'hello', protocol: 1, hostId: 'h-1', agentVersion: 'x', bootId: 'b' }));
      expect(JSON.parse(await within(2000, frame))).toEqual({ type: 'switch', url: 'wss://127.0.0.1:7071/v1/agent', ca: ca.cert.toString() });
      await new Promise((r) => setTimeout(r, 100));
      expect(hellos).toEqual([]);
      expect(gateway.isConnected('h-1')).toBe(false);
      // And a server stopping does not wait for it.
      await within(2000, gateway.close());
      expect(await within(2000, agent.ended)).toBe('closed');
    } finally {
      await gateway.close();
    }
  });

  it('refuses bad credentials in plain as over TLS, and drops a connection that says nothing', async () => {
    const { gateway, port } = await tlsGateway([]);
    try {
      const refused = dial(port, 'wrong');
      const status = new Promise<number>((resolve) => refused.ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
      expect(await within(2000, status)).toBe(401);
      const silent = connect(port, '127.0.0.1');
      const t0 = performance.now();
      await within(2000, new Promise((resolve) => silent.once('close', resolve)));
      expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    } finally {
      await gateway.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
