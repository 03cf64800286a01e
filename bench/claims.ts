/**
 * The claim benchmarks, side by side in one run on one server: a warm claim (claim + `true` as init,
 * on a full pool) against the cold path (launch a host, wait for its agent, run `true`), and claims
 * per second sustained by concurrent clients (each claim released at once, so the pool must refill).
 * The client runs in its own process (bench/claim-loop.mjs).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packageRoot } from '../src/cli/paths.js';
import type { InProcessServer } from '../test/helpers/server.js';
import { demandBench } from './demand.js';
import { ms, summarize } from './stats.js';

const execFileAsync = promisify(execFile);

export interface ClaimBenchOptions {
  warm: number;
  cold: number;
  sustainedSeconds: number;
  concurrency: number;
  progress: (line: string) => void;
}

interface LoopResult {
  samples: number[];
  count: number;
  seconds?: number;
  hits: number;
  hosts?: string[];
}

export async function claimBench(srv: InProcessServer, opts: ClaimBenchOptions): Promise<string[]> {
  const loop = async (...args: string[]): Promise<LoopResult> => loopWith({}, ...args);
  const loopWith = async (env: Record<string, string>, ...args: string[]): Promise<LoopResult> => {
    const { stdout } = await execFileAsync(process.execPath, [join(packageRoot(), 'bench', 'claim-loop.mjs'), srv.server.url, srv.server.token, ...args], {
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, ...env },
    });
    return JSON.parse(stdout) as LoopResult;
  };
  const created = await srv.api.post('/v1/pools', { name: 'bench', size: 8, maxLaunching: 4 });
  if (created.status !== 201) throw new Error(`pool create failed: ${JSON.stringify(created.body)}`);
  try {
    opts.progress(`warm claims x${opts.warm} (each on a full pool)…`);
    const warm = await loop('warm', 'bench', String(opts.warm));
    opts.progress(`cold path x${opts.cold} (launch + init, no pool)…`);
    const cold = await loop('cold', String(opts.cold));
    opts.progress(`sustained claims for ${opts.sustainedSeconds} s at concurrency ${opts.concurrency}…`);
    const sustained = await loop('sustained', 'bench', String(opts.sustainedSeconds), String(opts.concurrency));
    opts.progress(`sustained claims with release --reuse for ${opts.sustainedSeconds} s…`);
    const reused = await loopWith({ BENCH_REUSE: '1' }, 'sustained', 'bench', String(opts.sustainedSeconds), String(opts.concurrency));
    const breakdown = await serverBreakdown(srv, opts.warm);
    const burst = await stockedBurst(srv, loop, opts);
    opts.progress('a pool sized by demand against one of fixed size…');
    const demandRows = await demandBench(srv, loop, opts.progress);
    const w = summarize(warm.samples);
    const c = summarize(cold.samples);
    const s = summarize(sustained.samples);
    const rate = sustained.count / (sustained.seconds ?? opts.sustainedSeconds);
    const r = summarize(reused.samples);
    const reuseRate = reused.count / (reused.seconds ?? opts.sustainedSeconds);
    const ratio = c.p50 / w.p50;
    return [
      `| warm claim (claim + \`true\` init, pool of 8 full; ${warm.hits}/${warm.count} hits) | ${w.n} | ${ms(w.p50)} | ${ms(w.p99)} | p50 <= 15 ms, p99 <= 60 ms | ${verdict(w.p50 <= 15 && w.p99 <= 60)} |`,
      `| of which, inside the server: pick / init / whole claim | ${breakdown.n} | ${ms(breakdown.pick)} / ${ms(breakdown.init)} / ${ms(breakdown.total)} | | | |`,
      `| cold path (launch + wait for agent + \`true\`) | ${c.n} | ${ms(c.p50)} | ${ms(c.p99)} | cold / warm p50 = ${ratio.toFixed(1)}x (>= 20x) | ${verdict(ratio >= 20)} |`,
      `| sustained claims, ${opts.concurrency} clients, each host released (terminated) at once (${sustained.hits}/${sustained.count} hits) | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | ${rate.toFixed(1)} claims/s (>= 100) | ${verdict(rate >= 100)} |`,
      `| the same, released with --reuse (host reset in place, back to the pool) (${reused.hits}/${reused.count} hits) | ${r.n} | ${ms(r.p50)} | ${ms(r.p99)} | ${reuseRate.toFixed(1)} claims/s (>= 100) | ${verdict(reuseRate >= 100)} |`,
      `| claim path capacity: ${burst.count} claims from ${opts.concurrency} clients on a stocked pool of ${STOCK} (refill: 1 launch at a time), none released (${burst.hits}/${burst.count} hits) | ${summarize(burst.samples).n} | ${ms(summarize(burst.samples).p50)} | ${ms(summarize(burst.samples).p99)} | ${(burst.count / (burst.seconds ?? 1)).toFixed(1)} claims/s | |`,
      ...demandRows,
    ];
  } finally {
    await srv.api.delete('/v1/pools/bench');
    await srv.server.pools.reconciler.settled();
  }
}

const STOCK = 64;

/**
 * The claim path's own throughput, apart from host boots: a pool stocked with STOCK ready hosts is
 * claimed empty by concurrent clients (nothing released meanwhile), then the hosts are removed.
 */
async function stockedBurst(srv: InProcessServer, loop: (...args: string[]) => Promise<LoopResult>, opts: ClaimBenchOptions): Promise<LoopResult> {
  opts.progress(`stocking a pool of ${STOCK} ready hosts…`);
  await srv.api.post('/v1/pools', { name: 'stock', size: STOCK, maxLaunching: 8 });
  const deadline = Date.now() + 300_000;
  for (;;) {
    const { body } = await srv.api.get<{ status: { ready: number } }>('/v1/pools/stock');
    if (body.status.ready >= STOCK) break;
    if (Date.now() > deadline) throw new Error('the stock pool did not fill in 5 minutes');
    await new Promise((r) => setTimeout(r, 200));
  }
  // The refill keeps running during the burst, one launch at a time (the least it can do).
  await srv.api.put('/v1/pools/stock', { size: STOCK, maxLaunching: 1 });
  opts.progress(`claiming ${STOCK} hosts at concurrency ${opts.concurrency}…`);
  const burst = await loop('burst', 'stock', String(STOCK), String(opts.concurrency));
  await srv.api.delete('/v1/pools/stock');
  for (const id of burst.hosts ?? []) await srv.api.post(`/v1/hosts/${id}/release`, {});
  return burst;
}

/** Medians of the timings the server recorded for the last `n` warm claims. */
async function serverBreakdown(srv: InProcessServer, n: number): Promise<{ n: number; pick: number; init: number; total: number }> {
  const { body } = await srv.api.get<{ claims: { timings: Record<string, number>; hit: boolean | null }[] }>(`/v1/claims?pool=bench&limit=1000`);
  // Oldest first: the warm ones were made before the sustained run.
  const warm = body.claims.slice(-n).filter((c) => c.hit);
  const med = (key: string) => summarize(warm.map((c) => c.timings[key] ?? NaN).filter(Number.isFinite)).p50;
  return { n: warm.length, pick: med('pickMs'), init: med('initMs'), total: med('totalMs') };
}

function verdict(ok: boolean): string {
  return ok ? 'met' : 'MISSED';
}
