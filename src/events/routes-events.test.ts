import Fastify, { type FastifyInstance } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { afterEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import { hashSecret } from '../core/ids.js';
import { installAuth } from '../server/http/auth.js';
import { installErrorHandling } from '../server/http/errors.js';
import { EventBus } from './event-bus.js';
import { eventRoutes } from './routes-events.js';
import type { BerthEvent, NewEvent } from './types.js';

const TOKENS = new Map([[hashSecret('tok-a'), 'ta'], [hashSecret('tok-b'), 'tb']]);

async function serve(bus: EventBus, heartbeatMs?: number): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify().withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  installAuth(app, (token) => {
    const tenantId = TOKENS.get(hashSecret(token));
    if (!tenantId) return Promise.reject(new BerthError('unauthorized', 'invalid API token', 'Use a valid token.'));
    return Promise.resolve({ tenantId, tokenId: `tk-${tenantId}`, tokenName: tenantId, role: 'read' as const });
  });
  await app.register(eventRoutes(bus, heartbeatMs !== undefined ? { heartbeatMs } : {}));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}

const ev = (tenantId: string, kind: NewEvent['kind'], id: string, state: string, extra: Partial<NewEvent> = {}): NewEvent => ({ kind, id, tenantId, state, ...extra });

/** Reads an event stream's raw text until `until` holds for it. */
async function readUntil(res: Response, until: (text: string) => boolean, timeoutMs = 5000): Promise<{ text: string; reader: ReadableStreamDefaultReader<Uint8Array> }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  const deadline = Date.now() + timeoutMs;
  while (!until(text)) {
    if (Date.now() > deadline) throw new Error(`stream did not show what was expected; got:\n${text}`);
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  return { text, reader };
}

const dataOf = (text: string): BerthEvent[] =>
  text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => JSON.parse(l.slice(6)) as BerthEvent);

describe('GET /v1/events', () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it("answers the buffered events of the token's tenant, filtered, and refuses a missing token", async () => {
    const bus = new EventBus();
    bus.emit(ev('ta', 'host', 'h-1', 'running', { hostId: 'h-1', pool: 'web' }));
    bus.emit(ev('tb', 'host', 'h-2', 'running', { hostId: 'h-2' }));
    bus.emit(ev('ta', 'claim', 'cl-1', 'ready', { claimId: 'cl-1', hostId: 'h-1', pool: 'web' }));
    bus.emit(ev('ta', 'host', 'h-3', 'running', { hostId: 'h-3' }));
    const served = await serve(bus);
    app = served.app;
    const get = async (query: string, token: string | null = 'tok-a') => {
      const res = await fetch(`${served.url}/v1/events${query}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      return { status: res.status, body: await res.json() };
    };
    expect((await get('', null)).status).toBe(401);
    expect((await get('', 'wrong')).status).toBe(401);
    const ids = async (query: string, token?: string) => ((await get(query, token)).body as BerthEvent[]).map((e) => e.id);
    expect(await ids('')).toEqual(['h-1', 'cl-1', 'h-3']);
    expect(await ids('', 'tok-b')).toEqual(['h-2']);
    expect(await ids('?since=1')).toEqual(['cl-1', 'h-3']);
    expect(await ids('?kind=claim')).toEqual(['cl-1']);
    expect(await ids('?kind=claim,host&kind=pool')).toEqual(['h-1', 'cl-1', 'h-3']);
    expect(await ids('?pool=web')).toEqual(['h-1', 'cl-1']);
    expect(await ids('?host=h-3')).toEqual(['h-3']);
    expect(await ids('?limit=1')).toEqual(['h-1']);
    const bad = await get('?kind=hosts');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'validation_failed' });
    expect((await get('?since=-1')).status).toBe(400);
  });

  it('follows as Server-Sent Events: replay, then live events with their seq as id, Last-Event-ID, heartbeats, and cleanup', async () => {
    const bus = new EventBus();
    bus.emit(ev('ta', 'host', 'h-1', 'launching', { hostId: 'h-1' }));
    bus.emit(ev('ta', 'host', 'h-1', 'running', { hostId: 'h-1' }));
    const served = await serve(bus, 50);
    app = served.app;
    const headers = { authorization: 'Bearer tok-a' };

    const controller = new AbortController();
    const res = await fetch(`${served.url}/v1/events?follow=true&since=1`, { headers, signal: controller.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    bus.emit(ev('tb', 'host', 'h-9', 'running', { hostId: 'h-9' })); // another tenant's: never sent
    bus.emit(ev('ta', 'claim', 'cl-1', 'pending', { claimId: 'cl-1' }));
    const { text, reader } = await readUntil(res, (t) => t.includes('"cl-1"') && t.includes(': heartbeat'));
    expect(text).toContain('id: 2\ndata: ');
    expect(text).toContain('id: 4\ndata: ');
    expect(dataOf(text).map((e) => `${e.seq}:${e.id}:${e.state}`)).toEqual(['2:h-1:running', '4:cl-1:pending']);
    expect(bus.subscriberCount).toBe(1);
    controller.abort();
    await reader.cancel().catch(() => undefined);
    await expect.poll(() => bus.subscriberCount).toBe(0);

    // A reconnecting EventSource sends Last-Event-ID; it wins over since.
    const again = await fetch(`${served.url}/v1/events?follow=1&since=0&kind=claim`, { headers: { ...headers, 'last-event-id': '3' } });
    const resumed = await readUntil(again, (t) => t.includes('"cl-1"'));
    expect(dataOf(resumed.text).map((e) => e.seq)).toEqual([4]);
    // The server stopping ends the stream: the reader sees its end, and close does not hang.
    const t0 = Date.now();
    await served.app.close();
    app = undefined;
    for (;;) {
      const { done } = await resumed.reader.read();
      if (done) break;
    }
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(bus.subscriberCount).toBe(0);
  });

  it('follows from the next event with replay=false, leaving the buffered ones out', async () => {
    const bus = new EventBus();
    bus.emit(ev('ta', 'host', 'h-1', 'launching', { hostId: 'h-1' }));
    bus.emit(ev('ta', 'host', 'h-1', 'running', { hostId: 'h-1' }));
    const served = await serve(bus);
    app = served.app;
    const controller = new AbortController();
    const res = await fetch(`${served.url}/v1/events?follow=true&replay=false`, { headers: { authorization: 'Bearer tok-a' }, signal: controller.signal });
    bus.emit(ev('ta', 'claim', 'cl-1', 'pending', { claimId: 'cl-1' }));
    const { text, reader } = await readUntil(res, (t) => t.includes('"cl-1"'));
    expect(dataOf(text).map((e) => `${e.seq}:${e.id}`)).toEqual(['3:cl-1']);
    controller.abort();
    await reader.cancel().catch(() => undefined);
  });

  it('ends a follower when the bus closes', async () => {
    const bus = new EventBus();
    const served = await serve(bus);
    app = served.app;
    const res = await fetch(`${served.url}/v1/events?follow=true`, { headers: { authorization: 'Bearer tok-a' } });
    const { reader } = await readUntil(res, (t) => t.includes('retry:'));
    bus.close();
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
    }
    expect(bus.subscriberCount).toBe(0);
  });
});
