/**
 * What a disk of its own (resources.diskMiB, src/drivers/local/disk.ts) adds to a host's launch:
 * launches with one (1 GiB) and without, taking turns so a slow spell falls on both, each until the
 * agent has enrolled; each host is removed before the next launch.
 */
import type { HostView } from '../src/hosts/views.js';
import type { startServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

export async function diskLaunchBench(srv: Awaited<ReturnType<typeof startServer>>, opts: { launches: number; progress: (line: string) => void }): Promise<string[]> {
  const plain: number[] = [];
  const withDisk: number[] = [];
  for (let i = 0; i < opts.launches; i++) {
    for (const [samples, resources] of [[plain, {}], [withDisk, { diskMiB: 1024 }]] as const) {
      opts.progress(`launch with and without a disk of its own ${i + 1}/${opts.launches}`);
      const t0 = performance.now();
      const res = await srv.api.post<HostView>('/v1/hosts', { resources });
      samples.push(performance.now() - t0);
      if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
      await srv.api.delete(`/v1/hosts/${res.body.id}`);
    }
  }
  opts.progress('');
  const p = summarize(plain);
  const d = summarize(withDisk);
  return [
    `| host launch -> agent ready with a disk of its own (1 GiB), taking turns with plain launches | ${d.n} | ${ms(d.p50)} | ${ms(d.p99)} | plain: ${ms(p.p50)} / ${ms(p.p99)}; the disk adds ${ms(d.p50 - p.p50)} at p50 | |`,
  ];
}
