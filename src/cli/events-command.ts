/**
 * `berth events [-f] [--json] [--kind K] [--pool P] [--host H] [--since SEQ]`: the server's state
 * changes (GET /v1/events), as lines or JSON lines; `-f` keeps streaming them (the server's
 * text/event-stream, resumed from the last seq if the connection drops) until Ctrl-C, which ends
 * with exit 0.
 */
import type { Command } from 'commander';
import { isBerthError } from '../core/errors.js';
import { formatEvent } from '../events/format.js';
import { EVENT_KINDS, isEventKind, type BerthEvent } from '../events/types.js';
import type { ApiClient } from './client.js';
import type { Context } from './context.js';
import { collect, UsageError } from './output.js';

interface EventsOptions {
  follow?: boolean;
  json?: boolean;
  kind: string[];
  pool?: string;
  host?: string;
  by?: string;
  since?: string;
}

export function registerEventsCommand(program: Command, ctx: Context): void {
  program
    .command('events')
    .description('state changes of hosts, pool slots, claims, commands and their invocations, services and environments (the last 10 000 the server keeps; -f: then each as it happens)')
    .option('-f, --follow', 'keep printing events as they happen, until Ctrl-C')
    .option('--json', 'one JSON object a line')
    .option('--kind <kind>', `only events of this kind (${EVENT_KINDS.join(', ')}); repeatable, or comma-separated`, collect, [])
    .option('--pool <pool>', 'only events of this pool (its hosts\' slots, its claims, its environments)')
    .option('--host <id>', 'only events about this host')
    .option('--by <token>', 'only changes made by this API token (its name, as `berth token ls` shows it)')
    .option('--since <seq>', 'only events after this seq (each event has one: see --json)')
    .action(async (opts: EventsOptions) => {
      const kinds = opts.kind.flatMap((k) => k.split(',')).map((k) => k.trim()).filter(Boolean);
      const bad = kinds.find((k) => !isEventKind(k));
      if (bad !== undefined) throw new UsageError(`--kind ${bad}: kinds are ${EVENT_KINDS.join(', ')}`);
      if (opts.since !== undefined && !/^\d+$/.test(opts.since)) throw new UsageError(`--since must be an event's seq, a whole number (got ${opts.since})`);
      const query = new URLSearchParams();
      if (kinds.length > 0) query.set('kind', kinds.join(','));
      if (opts.pool) query.set('pool', opts.pool);
      if (opts.host) query.set('host', opts.host);
      if (opts.by) query.set('actor', opts.by);
      const print = (event: BerthEvent) => process.stdout.write(`${opts.json ? JSON.stringify(event) : formatEvent(event)}\n`);
      const client = ctx.client();
      if (!opts.follow) {
        if (opts.since !== undefined) query.set('since', opts.since);
        for (const event of await client.get<BerthEvent[]>(`/v1/events?${query.toString()}`)) print(event);
        return;
      }
      query.set('follow', 'true');
      await follow(client, query, opts.since, print);
    });
}

/** Streams until SIGINT or SIGTERM; a dropped connection (the server restarting) is resumed. */
async function follow(client: ApiClient, query: URLSearchParams, since: string | undefined, print: (event: BerthEvent) => void): Promise<void> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let last = since;
  let opened = false;
  let told = false;
  try {
    while (!controller.signal.aborted) {
      try {
        const path = `/v1/events?${query.toString()}${last !== undefined ? `&since=${last}` : ''}`;
        const stream = client.sse(path, { signal: controller.signal, ...(last !== undefined ? { lastEventId: last } : {}), onOpen: () => (opened = true) });
        for await (const message of stream) {
          if (told) process.stderr.write('berth: reconnected\n');
          told = false;
          if (message.id) last = message.id;
          print(JSON.parse(message.data) as BerthEvent);
        }
      } catch (err) {
        if (controller.signal.aborted) break;
        // Refused (a bad token, a bad filter), or never reached: nothing to wait for.
        if (!opened || (isBerthError(err) && err.status >= 400 && err.status < 500)) throw err;
      }
      if (controller.signal.aborted) break;
      if (!told) process.stderr.write('berth: the event stream ended (is the server restarting?); reconnecting… (Ctrl-C ends)\n');
      told = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        controller.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
