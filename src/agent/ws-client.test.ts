/** The agent's WebSocket client against the `ws` server the control plane uses. */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { WsClient } from './ws-client.js';

describe('WsClient', () => {
  let wss: WebSocketServer | undefined;
  afterEach(() => wss?.close());

  const server = async (onUpgradeHeaders?: (h: Record<string, string | string[] | undefined>) => boolean) => {
    wss = new WebSocketServer({
      port: 0,
      host: '127.0.0.1',
      verifyClient: (info: { req: { headers: Record<string, string | string[] | undefined> } }) => onUpgradeHeaders?.(info.req.headers) ?? true,
    });
    await once(wss, 'listening');
    return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v1/agent`;
  };

  it('sends headers, exchanges text both ways, small and large, and closes cleanly', async () => {
    let auth: unknown;
    const url = await server((h) => ((auth = h['authorization']), true));
    const client = new WsClient(url, { headers: { authorization: 'Bearer t0k' } });
    const [peer] = (await once(wss as WebSocketServer, 'connection')) as [WebSocket];
    await once(client, 'open');
    expect(auth).toBe('Bearer t0k');
    const got: string[] = [];
    peer.on('message', (d: Buffer) => got.push(d.toString()));
    const sizes = [0, 1, 2, 3, 5, 125, 126, 65535, 65536, 1_000_001];
    for (const n of sizes) client.send('é'.repeat(n));
    const echoed: string[] = [];
    client.on('message', (m: string) => echoed.push(m));
    peer.send('x'.repeat(70_000));
    peer.send('hi');
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual(sizes.map((n) => 'é'.repeat(n)));
    client.send('abc');
    client.send(`{"mixed":"ascii and ü, ${'0123456'.repeat(20)}"}`);
    await new Promise((r) => setTimeout(r, 100));
    expect(got.slice(sizes.length)).toEqual(['abc', `{"mixed":"ascii and ü, ${'0123456'.repeat(20)}"}`]);
    expect(echoed).toEqual(['x'.repeat(70_000), 'hi']);
    const closed = once(client, 'close');
    peer.close(1000, 'bye');
    expect((await closed)[0]).toBe(1000);
    expect(client.isOpen).toBe(false);
  });

  it('answers pings (so the server sees it alive)', async () => {
    const url = await server();
    const client = new WsClient(url);
    const [peer] = (await once(wss as WebSocketServer, 'connection')) as [WebSocket];
    await once(client, 'open');
    const pong = once(peer, 'pong');
    peer.ping(Buffer.from('are you there'));
    expect(String((await pong)[0])).toBe('are you there');
    client.close();
  });

  it('reports a refused upgrade with its status, then closes', async () => {
    const url = await server(() => false);
    const client = new WsClient(url);
    const statuses: number[] = [];
    client.on('unexpected-response', (status: number) => statuses.push(status));
    await new Promise((resolve) => client.once('close', resolve));
    expect(statuses).toEqual([401]);
  });

  it('emits error and close when nothing listens', async () => {
    const client = new WsClient('ws://127.0.0.1:1/');
    const errors: Error[] = [];
    client.on('error', (e: Error) => errors.push(e));
    await new Promise((resolve) => client.once('close', resolve));
    expect(errors[0]?.message).toMatch(/ECONNREFUSED/);
  });
});
