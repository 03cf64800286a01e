/**
 * The gateway stops promptly whatever its agents are doing: a connection still being authenticated
 * when it closes, or one that never said hello, must not keep the server's stop waiting.
 */
import { describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { AGENT_PATH, HOST_ID_HEADER } from '../protocol/messages.js';
import { AgentGateway, type GatewayHandlers } from './gateway.js';

const handlers = (authenticate: GatewayHandlers['authenticate']): GatewayHandlers => ({ authenticate, onHello: () => {}, onMessage: () => {}, onDisconnect: () => {} });

/** Dials the gateway as an agent would; resolves with how the connection ended. */
function dial(port: number): { opened: Promise<void>; ended: Promise<string> } {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${AGENT_PATH}`, { headers: { [HOST_ID_HEADER]: 'h-1', authorization: 'Bearer secret' } });
  const opened = new Promise<void>((resolve) => ws.once('open', () => resolve()));
  const ended = new Promise<string>((resolve) => {
    ws.once('close', () => resolve('closed'));
    ws.once('error', () => resolve('error'));
  });
  return { opened, ended };
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
