/**
 * GET /v1/events: the token's tenant's events. Without `follow`, the buffered ones after `since` as
 * a JSON array; with `follow=true`, Server-Sent Events — the buffered ones first, then each as it
 * happens (`id:` is the seq, so a reconnecting EventSource resumes with Last-Event-ID), a comment
 * every 15 s to keep proxies from timing out, and the end when the client goes or the server stops.
 * A client too slow to keep up is disconnected (it resumes from its last id) rather than buffered
 * without bound.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BerthError } from '../core/errors.js';
import { openEventStream, streamsOf } from '../server/http/event-stream.js';
import { errorBody } from '../server/http/schemas.js';
import { DEFAULT_EVENT_CAPACITY, type EventBus, type EventFilter } from './event-bus.js';
import { EVENT_KINDS, isEventKind, type BerthEvent, type EventKind } from './types.js';

export const HEARTBEAT_MS = 15_000;
/** Bytes a follower may have waiting in its socket before it is disconnected. */
const MAX_UNSENT_BYTES = 4 * 1024 * 1024;

const optionalId = z.string().optional();
export const eventSchema = z.object({
  seq: z.number().int(),
  at: z.string(),
  kind: z.enum(EVENT_KINDS),
  id: z.string(),
  tenantId: z.string(),
  state: z.string(),
  from: optionalId,
  hostId: optionalId,
  claimId: optionalId,
  commandId: optionalId,
  pool: optionalId,
  group: optionalId,
  environment: optionalId,
  service: optionalId,
  reason: optionalId,
  actor: z.string().optional().describe("The API token (its name) whose request made the change; absent for berth's own work"),
});

const eventsQuery = z.object({
  since: z.coerce.number().int().min(0).optional().describe('Only events with a greater seq (default 0: every buffered event)'),
  follow: z.enum(['true', 'false', '1', '0']).optional().describe('Stream as text/event-stream until the client goes away'),
  replay: z.enum(['true', 'false', '1', '0']).optional().describe('With follow and no `since`: false starts with the next event, leaving the buffered ones out (a client watching what its own request is about to do)'),
  kind: z.union([z.string(), z.array(z.string())]).optional().describe(`Only these kinds (${EVENT_KINDS.join(', ')}); repeat it or separate with commas`),
  pool: z.string().min(1).optional().describe("Only events of this pool (its hosts' slots, claims, environments)"),
  host: z.string().min(1).optional().describe('Only events about this host'),
  actor: z.string().min(1).optional().describe('Only changes made by this API token (its name)'),
  limit: z.coerce.number().int().positive().max(DEFAULT_EVENT_CAPACITY).optional().describe('At most this many, oldest first (without follow)'),
});

export function eventRoutes(events: EventBus, opts: { heartbeatMs?: number } = {}): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    const open = streamsOf(app);
    app.get(
      '/v1/events',
      {
        schema: {
          tags: ['server'],
          summary: 'State changes of hosts, pool slots, claims, commands, invocations, services, environments and shell sessions',
          description:
            'The buffered events (the last 10 000 of this server process) after `since`, oldest first. With `follow=true` the answer is `text/event-stream`: ' +
            'the same events, then each new one as it happens, `id:` being its seq; `Last-Event-ID` takes the place of `since`, and a comment is sent every 15 s. ' +
            'Seqs start again at 1 when the server restarts; a `since` beyond the newest seq gets every buffered event.',
          querystring: eventsQuery,
          response: { 200: z.array(eventSchema), '4xx': errorBody },
        },
      },
      async (request, reply) => {
        const q = request.query;
        const filter: EventFilter = { tenantId: request.tenantId, kinds: kindsOf(q.kind), ...(q.pool ? { pool: q.pool } : {}), ...(q.host ? { hostId: q.host } : {}), ...(q.actor ? { actor: q.actor } : {}) };
        if (q.follow !== 'true' && q.follow !== '1') return events.since(q.since ?? 0, filter, q.limit);
        const lastId = request.headers['last-event-id'];
        const fromNow = (q.replay === 'false' || q.replay === '0') && q.since === undefined;
        const since = typeof lastId === 'string' && /^\d+$/.test(lastId.trim()) ? Number(lastId) : fromNow ? events.lastSeq : (q.since ?? 0);
        reply.hijack();
        follow(reply.raw, events, filter, since, opts.heartbeatMs ?? HEARTBEAT_MS, open);
        return reply;
      },
    );
    done();
  };
}

function kindsOf(raw: string | string[] | undefined): EventKind[] {
  const names = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).flatMap((k) => k.split(',')).map((k) => k.trim()).filter(Boolean);
  const bad = names.filter((k) => !isEventKind(k));
  if (bad.length > 0) throw new BerthError('validation_failed', `unknown event kind ${bad.map((k) => JSON.stringify(k)).join(', ')}`, `Kinds are ${EVENT_KINDS.join(', ')}.`);
  return names.filter(isEventKind);
}

function follow(res: ServerResponse, events: EventBus, filter: EventFilter, since: number, heartbeatMs: number, open: Set<() => void>): void {
  const stream = openEventStream(res, { heartbeatMs, open });
  const send = (event: BerthEvent) => {
    stream.write(`id: ${event.seq}\ndata: ${JSON.stringify(event)}\n\n`);
    if (stream.unsent > MAX_UNSENT_BYTES) stream.end();
  };
  // Nothing awaits between the replay and the subscription: no event can fall in between.
  for (const event of events.since(since, filter)) send(event);
  if (stream.ended) return;
  stream.onEnd(events.subscribe(send, { filter, onClose: () => stream.end() }));
}
