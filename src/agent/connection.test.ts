import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { AgentConnection } from './connection.js';

/** A plain ws:// server that sends one frame to each agent connection, and counts them. */
async function serverSending(frame: (port: number) => unknown): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const port = (wss.address() as AddressInfo).port;
  let connections = 0;
  wss.on('connection', (ws) => {
    connections++;
    ws.send(JSON.stringify(frame(port)));
  });
  return { port, connections: () => connections, close: () => new Promise((resolve) => wss.close(() => resolve())) };
}

describe("the agent's connection told to switch to TLS", () => {
  let stop: (() => void) | undefined;
  afterEach(() => stop?.());

  const connect = (port: number) => {
    const logs: string[] = [];
    const switched: Array<[string, string | undefined]> = [];
    const conn = new AgentConnection({
      serverUrl: `ws://127.0.0.1:${port}/v1/agent`,
      hostId: 'h-1',
      token: 't',
      hello: () => ({ type: 'heartbeat', at: new Date().toISOString() }),
      onMessage: () => undefined,
      onSwitch: (url, ca) => switched.push([url, ca]),
      log: (line) => logs.push(line),
    });
    conn.start();
    stop = () => conn.stop();
    return { logs, switched };
  };

  it('dials wss:// on the same address from then on, keeping the URL and CA', async () => {
    const server = await serverSending((port) => ({ type: 'switch', url: `wss://127.0.0.1:${port}/v1/agent`, ca: 'PEM' }));
    try {
      const { logs, switched } = connect(server.port);
      await expect.poll(() => switched, { timeout: 5000 }).toEqual([[`wss://127.0.0.1:${server.port}/v1/agent`, 'PEM']]);
      // It redials over TLS, which this plain server cannot answer: no second plain connection, and the refusal is a TLS one.
      await new Promise((r) => setTimeout(r, 300));
      expect(server.connections()).toBe(1);
      expect(logs).toContain(`the server now serves the agent channel over TLS: dialling wss://127.0.0.1:${server.port}/v1/agent`);
    } finally {
      await server.close();
    }
  });

  it('refuses a switch to another address, or one that is not to wss://', async () => {
    const targets = (port: number) => [`wss://10.9.9.9:${port}/v1/agent`, `wss://127.0.0.1:${port + 1}/v1/agent`, `ws://127.0.0.1:${port}/v1/agent`, 'not a url'];
    for (let i = 0; i < 4; i++) {
      const server = await serverSending((port) => ({ type: 'switch', url: targets(port)[i] }));
      try {
        const { logs, switched } = connect(server.port);
        await expect.poll(() => logs.some((l) => l.startsWith('refused to switch')), { timeout: 5000 }).toBe(true);
        expect(switched).toEqual([]);
      } finally {
        stop?.();
        stop = undefined;
        await server.close();
      }
    }
  });
});
