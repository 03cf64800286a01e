/**
 * Waiting for pools to be full of their current generation: every ready host the pool keeps now
 * (its target) is there and no host of an older generation waits in it (its roll is complete).
 * `berth up` and `berth apply --wait`; progress on stderr, a line each time it changes.
 */
import { BerthError } from '../core/errors.js';
import type { PoolStatusView } from '../pools/views.js';
import type { ApiClient } from './client.js';

/**
 * The pools that keep failing this many times in a row (since the wait began) cannot fill: the count
 * after which the server fails their claims fast (pools/cold-launch.ts, not imported: the CLI loads
 * no server code).
 */
const FAILING_AFTER = 3;
const POLL_MS = 250;

export async function waitForPools(client: ApiClient, names: string[], timeoutMs: number, say: (line: string) => void): Promise<PoolStatusView[]> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last = '';
  for (;;) {
    const views = await Promise.all(names.map((name) => client.get<PoolStatusView>(`/v1/pools/${encodeURIComponent(name)}`)));
    const line = views.map(progressOf).join('; ');
    if (line !== last) {
      say(`  ${line}`);
      last = line;
    }
    if (views.every(isFull)) return views;
    // Failures from before the wait (an image the apply just replaced) do not count against it.
    const failing = views.find((p) => p.status.consecutiveFailures >= FAILING_AFTER && p.status.lastFailure && Date.parse(p.status.lastFailure.at) >= started - 1000);
    if (failing) throw new BerthError('launch_failed', `pool ${failing.name} cannot fill: its hosts failed ${failing.status.consecutiveFailures} times in a row (last: ${failing.status.lastFailure?.reason ?? ''})`, `See berth pool show ${failing.name}.`);
    if (Date.now() > deadline) throw new BerthError('deadline_exceeded', `the pools were not full within ${timeoutMs / 1000} s (${line})`, 'Wait longer (--wait), or see berth pool show NAME.');
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function isFull(p: PoolStatusView): boolean {
  return p.status.ready >= p.status.targetSize && !p.status.rolling;
}

function progressOf(p: PoolStatusView): string {
  const { ready, targetSize, warming, stale } = p.status;
  return `pool ${p.name}: ${ready}/${targetSize} ready${warming ? `, ${warming} warming` : ''}${stale ? `, ${stale} of an older generation to replace` : ''}`;
}
