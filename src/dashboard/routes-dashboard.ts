/**
 * The web dashboard: a page and its script and style (plain files, no build step, served from
 * memory), the snapshot they render (GET /v1/dashboard) and its live feed (GET /v1/dashboard/stream,
 * Server-Sent Events: `snapshot` events, and `change` events with each state change for the
 * activity list). Behind the API token like every route: a browser opens `/dashboard?token=…` once,
 * the token goes into an HttpOnly cookie (see auth.ts) and the address bar is cleared by a redirect.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { openEventStream, streamsOf } from '../server/http/event-stream.js';
import { errorBody } from '../server/http/schemas.js';
import type { DashboardFeed } from './dashboard-feed.js';

const PUBLIC_DIR = new URL('./public/', import.meta.url);
const ASSETS = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
  'terminal.js': 'text/javascript; charset=utf-8',
} as const;
/**
 * The terminal (xterm.js, the VS Code team's), served from its package as published: loaded by
 * the page only when a terminal is opened (half a megabyte), and read from disk only then.
 */
const VENDOR = {
  'xterm.mjs': { module: '@xterm/xterm/lib/xterm.mjs', type: 'text/javascript; charset=utf-8' },
  'xterm.css': { module: '@xterm/xterm/css/xterm.css', type: 'text/css; charset=utf-8' },
  'addon-fit.mjs': { module: '@xterm/addon-fit/lib/addon-fit.mjs', type: 'text/javascript; charset=utf-8' },
} as const;
const requireFrom = createRequire(import.meta.url);
/** Bytes a viewer may have waiting before snapshots are skipped for it (the next one supersedes them). */
const MAX_UNSENT_BYTES = 8 * 1024 * 1024;
const HEARTBEAT_MS = 15_000;
/** Events a new viewer's activity list starts with. */
const RECENT_EVENTS = 100;

function readPublic(name: string): string {
  return readFileSync(new URL(name, PUBLIC_DIR), 'utf8');
}

/** The page shown for a missing or wrong token: a form to paste one. Holds nothing secret. */
export function loginPage(message: string): string {
  return readPublic('login.html').replace('{{message}}', escapeHtml(message));
}

function once(read: () => string): () => string {
  let value: string | undefined;
  return () => (value ??= read());
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function dashboardRoutes(feed: DashboardFeed, opts: { heartbeatMs?: number } = {}): FastifyPluginCallbackZod {
  const page = readPublic('index.html');
  const assets = new Map<string, { type: string; body: () => string }>(Object.entries(ASSETS).map(([name, type]) => [name, { type, body: once(() => readPublic(name)) }]));
  for (const [name, { module, type }] of Object.entries(VENDOR)) assets.set(name, { type, body: once(() => readFileSync(requireFrom.resolve(module), 'utf8')) });
  return (app, _opts, done) => {
    const open = streamsOf(app);
    app.addHook('onClose', (_instance, hookDone) => {
      feed.close();
      hookDone();
    });
    app.get(
      '/dashboard',
      { schema: { tags: ['dashboard'], summary: 'The web dashboard (open it once with ?token=…; the token is then kept in a cookie)', querystring: z.object({ token: z.string().optional() }) } },
      async (request, reply) => {
        // The token has been checked and put in the cookie: take it out of the address bar and history.
        if (request.query.token !== undefined) return reply.redirect('/dashboard', 303);
        return reply.header('cache-control', 'no-store').header('content-security-policy', CSP).type('text/html; charset=utf-8').send(page);
      },
    );
    app.get('/dashboard/:asset', { schema: { hide: true, params: z.object({ asset: z.string() }) } }, async (request, reply) => {
      const asset = assets.get(request.params.asset);
      if (!asset) return reply.status(404).send({ code: 'not_found', message: `no dashboard file ${request.params.asset}`, hint: 'Open /dashboard.' });
      return reply.header('cache-control', 'no-cache').type(asset.type).send(asset.body());
    });
    app.get(
      '/v1/dashboard',
      { schema: { tags: ['dashboard'], summary: "What the dashboard shows, now: pools, claim latency, hosts, environments, recent commands", response: { 200: z.record(z.string(), z.unknown()), '4xx': errorBody } } },
      async (request) => feed.snapshot(request.tenantId) as unknown as Promise<Record<string, unknown>>,
    );
    app.get(
      '/v1/dashboard/stream',
      {
        schema: {
          tags: ['dashboard'],
          summary: 'The dashboard, live (text/event-stream)',
          description: '`snapshot` events carry the whole of GET /v1/dashboard, sent at once and again after changes (at most two a second); `change` events carry each state change as GET /v1/events does.',
        },
      },
      (request, reply) => {
        reply.hijack();
        const stream = openEventStream(reply.raw, { heartbeatMs: opts.heartbeatMs ?? HEARTBEAT_MS, open });
        // A viewer that falls behind skips snapshots and changes: the next snapshot supersedes them.
        const send = (text: string) => {
          if (stream.unsent <= MAX_UNSENT_BYTES) stream.write(text);
        };
        // Nothing awaits between the replay and the subscription: no event falls in between.
        for (const e of feed.recentEvents(request.tenantId, RECENT_EVENTS)) stream.write(`event: change\ndata: ${JSON.stringify(e)}\n\n`);
        stream.onEnd(
          feed.watch(request.tenantId, {
            snapshot: (s) => send(`event: snapshot\ndata: ${JSON.stringify(s)}\n\n`),
            event: (e) => send(`event: change\ndata: ${JSON.stringify(e)}\n\n`),
            failed: (err) => send(`event: failure\ndata: ${JSON.stringify({ message: err instanceof Error ? err.message : String(err) })}\n\n`),
          }),
        );
      },
    );
    done();
  };
}

/**
 * The page loads only its own scripts and styles, and talks only to this server (its terminals'
 * WebSockets too). Bar widths are style attributes; the terminal writes its own style elements
 * (character metrics, colours), hence inline style elements, while scripts stay 'self' only.
 */
const CSP = "default-src 'none'; script-src 'self'; style-src-elem 'self' 'unsafe-inline'; style-src-attr 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
