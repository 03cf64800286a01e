/**
 * What a terminal on a host costs (`berth host shell`, src/shells/): opening a session until the
 * first output of the program in it, a typed character until its echo comes back, and a flood of output
 * until all of it arrived. Beside each, the same client code on a pty of this machine made the same
 * way (`script`), without berth: the difference is the API, the agent channel and the agent.
 * The client runs in its own process; berth and the baseline take turns (ABBA), two turns each.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { HostView } from '../src/hosts/views.js';
import type { startServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

const execFileAsync = promisify(execFile);
const CLIENT = new URL('./shell-client.mjs', import.meta.url).pathname;

export async function shellBench(srv: Awaited<ReturnType<typeof startServer>>, opts: { opens: number; echoes: number; floodBytes: number; progress: (line: string) => void }): Promise<string[]> {
  const host = (await srv.api.post<HostView>('/v1/hosts', {})).body;
  const client = async (via: 'berth' | 'local', mode: string, arg: number): Promise<number[]> => {
    const target = via === 'berth' ? [srv.server.url, srv.server.token, host.id] : ['local'];
    const { stdout } = await execFileAsync(process.execPath, [CLIENT, ...(via === 'berth' ? ['berth', ...target] : target), mode, String(arg)], { maxBuffer: 1 << 24, timeout: 300_000 });
    return (JSON.parse(stdout) as { samples: number[] }).samples;
  };
  const measured: Record<string, { berth: number[]; local: number[] }> = {};
  for (const [mode, arg] of [['open', Math.ceil(opts.opens / 2)], ['echo', Math.ceil(opts.echoes / 2)], ['flood', opts.floodBytes]] as const) {
    const into: { berth: number[]; local: number[] } = { berth: [], local: [] };
    measured[mode] = into;
    for (const via of ['berth', 'local', 'local', 'berth'] as const) {
      opts.progress(`shell: ${mode} via ${via}…`);
      into[via].push(...(await client(via, mode, arg)));
    }
  }
  await srv.api.delete(`/v1/hosts/${host.id}`);
  const row = (label: string, mode: string, unit: (s: ReturnType<typeof summarize>) => [string, string], compare: (b: number, l: number) => string) => {
    const m = measured[mode];
    if (!m) return '';
    const b = summarize(m.berth);
    const l = summarize(m.local);
    const [p50, p99] = unit(b);
    const [lp50] = unit(l);
    return `| ${label} | ${b.n} | ${p50} | ${p99} | on this machine's own pty: ${lp50}; ${compare(b.p50, l.p50)} | |`;
  };
  const mbps = (mib: number, msTaken: number) => `${(mib / (msTaken / 1000)).toFixed(0)} MiB/s`;
  const floodMiB = opts.floodBytes / 1024 / 1024;
  return [
    row('shell session opened -> first output of the program in it (`echo ready`)', 'open', (s) => [ms(s.p50), ms(s.p99)], (b, l) => `berth adds ${ms(b - l)}`),
    row('a typed character -> its echo (the host\'s terminal)', 'echo', (s) => [ms(s.p50), ms(s.p99)], (b, l) => `berth adds ${ms(b - l)}`),
    row(`${floodMiB.toFixed(0)} MiB of output through a session (2 runs each)`, 'flood', (s) => [mbps(floodMiB, s.p50), ''], (b, l) => `berth delivers ${((l / b) * 100).toFixed(0)} % of it`),
  ];
}
