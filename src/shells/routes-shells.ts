/**
 * The open shell sessions, as SSM's DescribeSessions and TerminateSession give them: who has a
 * terminal on which host right now, and a way to end one. (A session itself is opened on the
 * WebSocket endpoint, shell-endpoint.ts.)
 */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorBody } from '../server/http/schemas.js';
import { BerthError } from '../core/errors.js';
import type { ShellBroker } from './shell-broker.js';
import type { ShellRecorder } from './shell-recorder.js';

export interface ShellRouteDeps {
  broker: ShellBroker;
  /** Present when the server records sessions (--record-shells). */
  recorder?: ShellRecorder;
}

const recordingInfo = z.object({
  session: z.string(),
  tenantId: z.string(),
  hostId: z.string(),
  command: z.string().optional(),
  user: z.string().optional(),
  openedBy: z.string().optional(),
  startedAt: z.string(),
  ended: z.object({ at: z.string(), how: z.string() }).optional(),
  bytes: z.number().int(),
});

const sessionView = z.object({
  id: z.string(),
  hostId: z.string(),
  state: z.enum(['opening', 'open']),
  command: z.string().optional(),
  user: z.string().optional(),
  openedBy: z.string().optional().describe('The name of the API token that opened it'),
  openedAt: z.string(),
  pid: z.number().int().optional(),
  bytesIn: z.number().int(),
  bytesOut: z.number().int(),
});

export function shellRoutes({ broker, recorder }: ShellRouteDeps): FastifyPluginCallbackZod {
  const recordings = (): ShellRecorder => {
    if (!recorder) throw new BerthError('not_found', 'this server does not record shell sessions', 'Start it with `berth server --record-shells`; sessions are recorded from then on.');
    return recorder;
  };
  return (app, _opts, done) => {
    app.get(
      '/v1/shells/recordings',
      {
        schema: {
          tags: ['shells'],
          summary: 'Recorded shell sessions, newest first (the server runs with --record-shells)',
          querystring: z.object({ host: z.string().min(1).optional().describe('Only the sessions on this host') }),
          response: { 200: z.object({ recordings: z.array(recordingInfo) }), '4xx': errorBody },
        },
      },
      (request) => ({ recordings: recordings().list(request.tenantId, request.query.host) }),
    );
    app.get(
      '/v1/shells/:id/recording',
      {
        schema: {
          tags: ['shells'],
          summary: "A session's recording: its output, timed, as asciicast v2 (`asciinema play` replays it); what was typed is not recorded",
          params: z.object({ id: z.string() }),
        },
      },
      (request, reply) => reply.type('application/x-asciicast').send(recordings().read(request.tenantId, request.params.id)),
    );
    app.get(
      '/v1/shells',
      {
        schema: {
          tags: ['shells'],
          summary: 'Open shell sessions, oldest first (open one at GET /v1/hosts/:id/shell, as a WebSocket)',
          querystring: z.object({ host: z.string().min(1).optional().describe('Only the sessions on this host') }),
          response: { 200: z.object({ sessions: z.array(sessionView) }), '4xx': errorBody },
        },
      },
      (request) => ({ sessions: broker.list(request.tenantId, request.query.host) }),
    );
    app.delete(
      '/v1/shells/:id',
      {
        schema: {
          tags: ['shells'],
          summary: "End a shell session: its terminal hangs up, and its client is told who ended it",
          params: z.object({ id: z.string() }),
          response: { 200: sessionView, '4xx': errorBody },
        },
      },
      (request) => broker.terminate(request.tenantId, request.params.id),
    );
    done();
  };
}
