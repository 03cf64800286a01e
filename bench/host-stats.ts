/**
 * What reading a host's use costs (`GET /v1/hosts/ID/stats`: its cgroups, its disk; what
 * `berth host stats` and each host's series of a /metrics scrape read), beside `GET /v1/hosts/ID`
 * (auth, one store read) on the same hosts, taking turns; hosts with limits and a disk of their own,
 * so every field is read.
 */
import type { HostView } from '../src/hosts/views.js';
import type { startServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

export async function hostStatsBench(srv: Awaited<ReturnType<typeof startServer>>, opts: { hosts: number; rounds: number; progress: (line: string) => void }): Promise<string[]> {
  const hosts: HostView[] = [];
  for (let i = 0; i < opts.hosts; i++) {
    opts.progress(`host stats: launching ${i + 1}/${opts.hosts}`);
    const res = await srv.api.post<HostView>('/v1/hosts', { resources: { memoryMiB: 256, pids: 200, diskMiB: 64 } });
    if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
    hosts.push(res.body);
  }
  const stats: number[] = [];
  const plain: number[] = [];
  try {
    for (let r = 0; r < opts.rounds; r++) {
      opts.progress(`host stats: round ${r + 1}/${opts.rounds}`);
      for (const host of hosts) {
        for (const [samples, path] of [[stats, `/v1/hosts/${host.id}/stats`], [plain, `/v1/hosts/${host.id}`]] as const) {
          const t0 = performance.now();
          const res = await srv.api.get(path);
          samples.push(performance.now() - t0);
          if (res.status !== 200) throw new Error(`${path} answered ${res.status}`);
        }
      }
    }
  } finally {
    for (const host of hosts) await srv.api.delete(`/v1/hosts/${host.id}`);
  }
  opts.progress('');
  const s = summarize(stats);
  const p = summarize(plain);
  return [
    `| host stats reading (\`GET /v1/hosts/ID/stats\`: cgroups and own disk), ${opts.hosts} hosts, taking turns with \`GET /v1/hosts/ID\` | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | GET host: ${ms(p.p50)} / ${ms(p.p99)}; the reading adds ${ms(s.p50 - p.p50)} at p50 | |`,
  ];
}
