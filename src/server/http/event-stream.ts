/**
 * Server-Sent Events responses (GET /v1/events?follow, the dashboard's stream): the headers, the
 * client's retry hint, a comment every so often so proxies keep the connection, and one end —
 * the client leaving, the server closing, or the route deciding — after which writes are dropped.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';

export interface EventStream {
  /** Writes SSE text; dropped once the stream has ended. */
  write(text: string): void;
  /** Bytes written but not yet sent to the client. */
  readonly unsent: number;
  readonly ended: boolean;
  /** Runs `cleanup` when the stream ends (at once if it has). */
  onEnd(cleanup: () => void): void;
  end(): void;
}

/** The streams open in `app`: each is ended when the server closes (they would keep it from closing). */
export function streamsOf(app: FastifyInstance): Set<() => void> {
  const open = new Set<() => void>();
  app.addHook('preClose', (done) => {
    for (const end of [...open]) end();
    done();
  });
  return open;
}

export function openEventStream(res: ServerResponse, opts: { heartbeatMs: number; open: Set<() => void> }): EventStream {
  let ended = false;
  const cleanups: (() => void)[] = [];
  const end = (): void => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    opts.open.delete(end);
    for (const cleanup of cleanups) cleanup();
    res.end();
  };
  const write = (text: string): void => {
    if (!ended) res.write(text);
  };
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', 'x-accel-buffering': 'no' });
  write('retry: 2000\n\n');
  const heartbeat = setInterval(() => write(': heartbeat\n\n'), opts.heartbeatMs);
  heartbeat.unref();
  opts.open.add(end);
  res.on('close', end);
  return {
    write,
    get unsent() {
      return res.writableLength;
    },
    get ended() {
      return ended;
    },
    onEnd(cleanup) {
      if (ended) cleanup();
      else cleanups.push(cleanup);
    },
    end,
  };
}
