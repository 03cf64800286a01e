/**
 * What the machine-ports table (src/drivers/local/machine-ports.ts) costs a round trip: it turns
 * conntrack on for the machine's network namespace, loopback included. Rounds of Run Command round
 * trips (`true`, berth's client in its own process: bench/client-loop.mjs) with the bridge's table
 * in place and with it deleted, in ABBA order so a drift of the machine falls on both; the table is
 * put back as it was at the end. Without nft (no table), the part is skipped.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { HostView } from '../src/hosts/views.js';
import { packageRoot } from '../src/cli/paths.js';
import { tableName } from '../src/drivers/local/machine-ports.js';
import type { startServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

const run = promisify(execFile);

async function nft(args: string[], input?: string): Promise<string> {
  const child = run('nft', args);
  if (input !== undefined) child.child.stdin?.end(input);
  return (await child).stdout;
}

export async function machinePortsBench(srv: Awaited<ReturnType<typeof startServer>>, opts: { bridge: string; rounds: number; perRound: number; progress: (line: string) => void }): Promise<string[]> {
  const table = tableName(opts.bridge);
  const saved = await nft(['list', 'table', 'inet', table]).catch(() => '');
  if (!saved) return [];
  const res = await srv.api.post<HostView>('/v1/hosts', {});
  if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
  const host = res.body;
  const samples = { with: [] as number[], without: [] as number[] };
  let present = true;
  try {
    for (let r = 0; r < opts.rounds; r++) {
      const mode = r % 4 === 0 || r % 4 === 3 ? 'with' : 'without';
      opts.progress(`round trip with and without the machine-ports table: round ${r + 1}/${opts.rounds}`);
      if (mode === 'without' && present) await nft(['delete', 'table', 'inet', table]);
      if (mode === 'with' && !present) await nft(['-f', '-'], saved);
      present = mode === 'with';
      const { stdout } = await run(process.execPath, [join(packageRoot(), 'bench', 'client-loop.mjs'), srv.server.url, srv.server.token, host.id, String(opts.perRound)], { maxBuffer: 16 * 1024 * 1024 });
      samples[mode].push(...(JSON.parse(stdout) as number[]));
    }
  } finally {
    if (!present) await nft(['-f', '-'], saved);
    await srv.api.delete(`/v1/hosts/${host.id}`);
  }
  opts.progress('');
  const w = summarize(samples.with);
  const o = summarize(samples.without);
  return [
    `| Run Command round trip with the machine-ports table (conntrack on), rounds taking turns (ABBA) with it deleted | ${w.n} | ${ms(w.p50)} | ${ms(w.p99)} | without: ${ms(o.p50)} / ${ms(o.p99)}; the table adds ${ms(w.p50 - o.p50)} at p50 | |`,
  ];
}
