import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { isAlive, makeSpec, Sandbox, sleep, statusOf, waitFor } from './test-helpers.js';

const box = new Sandbox();
afterAll(() => box.cleanup());

describe('agent restart', () => {
  it('a new supervisor adopts running services without restarting them, and keeps supervising them', async () => {
    const ticker = makeSpec('ticker', 'while :; do echo tick; sleep 0.05; done', { restart: { policy: 'always', initialDelayMs: 50 } });
    const api = makeSpec('api', 'exec sleep 1000', { dependsOn: ['ticker'] });
    const first = box.supervisor();
    await first.converge([ticker, api]);
    const pids = { ticker: statusOf(first, 'ticker').pid!, api: statusOf(first, 'api').pid! };

    // The agent goes away without stopping anything; the service keeps writing into its FIFO meanwhile.
    first.detach();
    await sleep(300);
    expect(isAlive(pids.ticker) && isAlive(pids.api)).toBe(true);

    const second = box.supervisor({ adoptedPollMs: 50 });
    expect(second.status().map((s) => [s.name, s.state, s.pid])).toEqual([
      ['ticker', 'ready', pids.ticker],
      ['api', 'ready', pids.api],
    ]);
    expect(statusOf(second, 'ticker').reason).toBe(`adopted from a previous agent (pid ${pids.ticker})`);
    // The server sends the same set again after the reconnect: nothing restarts.
    await second.converge([ticker, api]);
    expect(second.status().map((s) => s.pid)).toEqual([pids.ticker, pids.api]);

    // Its output reaches the log through the new agent.
    const logPath = second.logFiles('ticker').at(-1)!;
    const ticksNow = countTicks(logPath);
    await waitFor('more ticks', () => countTicks(logPath) > ticksNow + 3);

    // A later death of the adopted process is noticed (by polling: it is not this supervisor's child).
    process.kill(pids.ticker, 'SIGKILL');
    const restarted = await waitFor('ticker restarted', () => {
      const s = statusOf(second, 'ticker');
      return s.state === 'ready' && s.pid !== pids.ticker && s;
    });
    expect(restarted.restarts).toBe(1);
    expect(restarted.lastExit).toMatchObject({ code: null, signal: null });
    expect(box.events.some((e) => e.name === 'ticker' && e.state === 'backoff' && e.reason.includes('exit status unknown'))).toBe(true);
    expect(statusOf(second, 'api').pid).toBe(pids.api);

    await second.stopAll();
    expect([pids.api, restarted.pid!].filter(isAlive)).toEqual([]);
    expect(box.processes()).toEqual([]);
  });

  it('a service that died while no agent ran is restarted by the next one, which says the status is unknown', async () => {
    const spec = makeSpec('lonely', 'exec sleep 1000');
    const first = box.supervisor();
    await first.converge([spec]);
    const pid = statusOf(first, 'lonely').pid!;
    first.detach();
    process.kill(pid, 'SIGKILL');
    await waitFor('lonely gone', () => !isAlive(pid));
    const second = box.supervisor();
    const s = await waitFor('lonely back', () => statusOf(second, 'lonely').state === 'ready' && statusOf(second, 'lonely'));
    expect(s.pid).not.toBe(pid);
    expect(s.restarts).toBe(1);
    expect(s.lastExit).toMatchObject({ code: null, signal: null });
    await second.stopAll();
  });

  it('stopped services stay stopped across an agent restart', async () => {
    const first = box.supervisor();
    await first.converge([makeSpec('idle', 'exec sleep 1000')]);
    await first.stopAll();
    first.detach();
    const second = box.supervisor();
    await sleep(100);
    expect(statusOf(second, 'idle')).toMatchObject({ state: 'stopped', pid: null });
    await second.stopAll();
  });
});

function countTicks(path: string): number {
  return (readFileSync(path, 'utf8').match(/ tick$/gm) ?? []).length;
}
