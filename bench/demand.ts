/**
 * What sizing a pool by demand buys, side by side in one run: two pools of size 2, one fixed and one
 * with `demand` (up to RUSH ready hosts). Each gets a rush of RUSH claims at once, its hosts are
 * released, the pool refills to what it now keeps, and a second rush comes. The fixed pool meets
 * the second rush with 2 ready hosts and launches the rest cold; the demand-sized one has kept
 * stock for it. Printed: the second rush's hits and claim latency, and what the stock cost in idle
 * host-seconds until then.
 */
import type { InProcessServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

const RUSH = 12;

interface RushResult {
  samples: number[];
  count: number;
  hits: number;
  hosts?: string[];
}

interface PoolStatus {
  status: { ready: number; warming: number; retiring: number; targetSize: number; idleHostSeconds: number };
}

export async function demandBench(srv: InProcessServer, loop: (...args: string[]) => Promise<RushResult>, progress: (line: string) => void): Promise<string[]> {
  const results: { name: string; second: RushResult; kept: number; idle: number }[] = [];
  for (const [name, extra] of [
    ['rush-fixed', {}],
    ['rush-demand', { demand: { max: RUSH, window: 600 } }],
  ] as const) {
    const created = await srv.api.post('/v1/pools', { name, size: 2, maxLaunching: 4, ...extra });
    if (created.status !== 201) throw new Error(`pool create failed: ${JSON.stringify(created.body)}`);
    try {
      await settled(srv, name);
      progress(`${name}: a first rush of ${RUSH} claims at once…`);
      const first = await loop('burst', name, String(RUSH), String(RUSH));
      for (const id of first.hosts ?? []) await srv.api.post(`/v1/hosts/${id}/release`, {});
      const kept = await settled(srv, name);
      progress(`${name}: the second rush…`);
      const idle = (await srv.api.get<PoolStatus>(`/v1/pools/${name}`)).body.status.idleHostSeconds;
      const second = await loop('burst', name, String(RUSH), String(RUSH));
      for (const id of second.hosts ?? []) await srv.api.post(`/v1/hosts/${id}/release`, {});
      results.push({ name, second, kept, idle });
    } finally {
      await srv.api.delete(`/v1/pools/${name}`);
    }
  }
  await srv.server.pools.reconciler.settled();
  const [fixed, demand] = results;
  if (!fixed || !demand) return [];
  const f = summarize(fixed.second.samples);
  const d = summarize(demand.second.samples);
  return [
    `| a second rush of ${RUSH} claims at once, pool of fixed size 2 (${fixed.second.hits}/${fixed.second.count} hits; ${fixed.idle.toFixed(0)} idle host-seconds until then) | ${f.n} | ${ms(f.p50)} | ${ms(f.p99)} | | |`,
    `| the same, pool of size 2 sized by demand (up to ${RUSH}; it kept ${demand.kept} ready after the first rush) (${demand.second.hits}/${demand.second.count} hits; ${demand.idle.toFixed(0)} idle host-seconds until then) | ${d.n} | ${ms(d.p50)} | ${ms(d.p99)} | fixed / demand p50 = ${(f.p50 / d.p50).toFixed(1)}x | |`,
  ];
}

/** Waits until the pool holds what it aims for, nothing warming or retiring; returns its ready count. */
async function settled(srv: InProcessServer, name: string): Promise<number> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    const { status } = (await srv.api.get<PoolStatus>(`/v1/pools/${name}`)).body;
    if (status.ready >= status.targetSize && status.warming === 0 && status.retiring === 0) return status.ready;
    if (Date.now() > deadline) throw new Error(`pool ${name} did not settle: ${JSON.stringify(status)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
