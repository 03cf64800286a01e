import { createServer as createHttpServer, type Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { serviceReadyCheck } from '../../protocol/messages.js';
import { waitUntilReady } from './readiness.js';
import { freePort } from './test-helpers.js';

const ctx = { env: process.env };

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

describe('readiness checks', () => {
  it('tcp: refused until the port listens; the reason names the check', async () => {
    const port = await freePort();
    const check = serviceReadyCheck.parse({ tcp: { port }, timeoutSeconds: 0.3, intervalMs: 50 });
    const result = await waitUntilReady(check, ctx, new AbortController().signal);
    expect(result).toEqual({ outcome: 'timeout', reason: `not ready within 0.3 s: tcp 127.0.0.1:${port} refused` });
  });

  it('http: 2xx/3xx pass, others are reported with their status', async () => {
    let status = 503;
    const server = createHttpServer((_req, res) => {
      res.statusCode = status;
      res.end();
    });
    const port = await listen(server);
    try {
      const check = serviceReadyCheck.parse({ http: { port, path: '/health' }, timeoutSeconds: 0.3, intervalMs: 50 });
      expect(await waitUntilReady(check, ctx, new AbortController().signal)).toEqual({
        outcome: 'timeout',
        reason: `not ready within 0.3 s: http GET http://127.0.0.1:${port}/health answered 503`,
      });
      setTimeout(() => (status = 302), 100);
      const slow = serviceReadyCheck.parse({ http: { port, path: '/health' }, timeoutSeconds: 5, intervalMs: 20 });
      expect(await waitUntilReady(slow, ctx, new AbortController().signal)).toEqual({ outcome: 'ready' });
    } finally {
      server.close();
    }
  });

  it('command: exit 0 passes; a hung command is bounded by the deadline', async () => {
    const ok = serviceReadyCheck.parse({ command: 'test "$X" = yes', timeoutSeconds: 2 });
    expect(await waitUntilReady(ok, { env: { ...process.env, X: 'yes' } }, new AbortController().signal)).toEqual({ outcome: 'ready' });
    const hung = serviceReadyCheck.parse({ command: 'sleep 100', timeoutSeconds: 0.3 });
    const t0 = performance.now();
    const result = await waitUntilReady(hung, ctx, new AbortController().signal);
    expect(result.outcome).toBe('timeout');
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('abort ends the wait at once', async () => {
    const port = await freePort();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const check = serviceReadyCheck.parse({ tcp: { port }, timeoutSeconds: 30 });
    expect(await waitUntilReady(check, ctx, ac.signal)).toEqual({ outcome: 'aborted' });
  });
});
