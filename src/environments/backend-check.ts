/**
 * Before a route goes to a host: its web service answers over the network (not only on the host's
 * loopback, where the supervisor's ready check looks). Retried until the deadline.
 */
import http from 'node:http';
import { BerthError } from '../core/errors.js';

export async function checkBackend(url: string, deadline: number, signal?: AbortSignal): Promise<void> {
  const started = performance.now();
  let last = 'no answer';
  for (;;) {
    signal?.throwIfAborted();
    const status = await getStatus(url, Math.max(50, Math.min(2000, deadline - Date.now()))).catch((err: unknown) => {
      last = err instanceof Error ? err.message : String(err);
      return undefined;
    });
    if (status !== undefined && status < 500) return;
    if (status !== undefined) last = `HTTP ${status}`;
    if (Date.now() >= deadline) {
      throw new BerthError('deadline_exceeded', `${url} did not answer in time (${last})`, 'Check that the service listens on all interfaces (0.0.0.0), not only 127.0.0.1.');
    }
    // Sooner while young (as the supervisor's readiness polls): it runs while the services start.
    await new Promise((resolve) => setTimeout(resolve, Math.min(50, Math.max(5, (performance.now() - started) / 4))));
  }
}

function getStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs, headers: { 'user-agent': 'berth-check' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
