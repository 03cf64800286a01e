/**
 * What TLS on the agent channel costs (`npm run bench -- foundation`): the bench's plain server
 * beside a second server of the same build whose agent channel serves TLS (a P-256 certificate
 * issued by a test CA, made by openssl as the tests make theirs), launches and Run Command round
 * trips taking turns (ABBA), then both last agents' RSS read at the same moment after the same idle
 * wait. Clients run in this process, the same for both.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostView } from '../src/hosts/views.js';
import { makeCa, makeCertificate } from '../test/helpers/certs.js';
import { agentPidOf, startServer, type InProcessServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

const NET = { bridge: 'berthatb0', subnet: '10.221.0.0/24', cgroupName: 'berthatb' };
const IDLE_MS = 12_000;

type Side = 'plain' | 'tls';

export async function agentTlsBench(plain: InProcessServer, opts: { launches: number; trips: number; progress: (line: string) => void }): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-agent-tls-'));
  const ca = makeCa(dir, 'bench');
  const cert = makeCertificate(dir, 'agent', ['10.221.0.1'], ca);
  const tls = await startServer(NET, { agentTls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile: ca.certFile } });
  const servers: Record<Side, InProcessServer> = { plain, tls };
  const launch: Record<Side, number[]> = { plain: [], tls: [] };
  const agentCpu: Record<Side, number[]> = { plain: [], tls: [] };
  const trips: Record<Side, number[]> = { plain: [], tls: [] };
  const last: Partial<Record<Side, HostView>> = {};
  try {
    const launchOne = async (side: Side): Promise<void> => {
      const srv = servers[side];
      const t0 = performance.now();
      const res = await srv.api.post<HostView>('/v1/hosts', {});
      if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
      launch[side].push(performance.now() - t0);
      agentCpu[side].push(cpuMs(agentPidOf(srv.dataDir, res.body.id)));
      const previous = last[side];
      last[side] = res.body;
      if (previous) await srv.api.delete(`/v1/hosts/${previous.id}`);
    };
    for (let i = 0; i < opts.launches; i++) {
      opts.progress(`agent channel over TLS: launch -> ready ${i + 1}/${opts.launches}`);
      for (const side of i % 2 === 0 ? (['plain', 'tls'] as const) : (['tls', 'plain'] as const)) await launchOne(side);
    }
    const block = 50;
    for (let done = 0; done < opts.trips; done += block) {
      opts.progress(`agent channel over TLS: round trips ${done}/${opts.trips}`);
      for (const side of (done / block) % 2 === 0 ? (['plain', 'tls'] as const) : (['tls', 'plain'] as const)) {
        const host = last[side];
        if (!host) throw new Error('no host');
        for (let i = 0; i < block; i++) {
          const t0 = performance.now();
          const res = await servers[side].api.post<{ status: string }>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: ['true'] }, wait: 10 });
          if (res.body.status !== 'Success') throw new Error(`round trip ended ${res.body.status}`);
          trips[side].push(performance.now() - t0);
        }
      }
    }
    opts.progress(`agent channel over TLS: both agents idle ${IDLE_MS / 1000} s…`);
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const rss = (side: Side): number => {
      const host = last[side];
      return host ? Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agentPidOf(servers[side].dataDir, host.id)}/status`, 'utf8'))?.[1] ?? 0) / 1024 : 0;
    };
    const [rssPlain, rssTls] = [rss('plain'), rss('tls')];
    const [lp, lt, cp, ct, tp, tt] = [launch.plain, launch.tls, agentCpu.plain, agentCpu.tls, trips.plain, trips.tls].map(summarize) as [ReturnType<typeof summarize>, ReturnType<typeof summarize>, ReturnType<typeof summarize>, ReturnType<typeof summarize>, ReturnType<typeof summarize>, ReturnType<typeof summarize>];
    return [
      `| agent channel plain / TLS (ABBA): launch -> ready | ${lp.n} / ${lt.n} | ${ms(lp.p50)} / ${ms(lt.p50)} | ${ms(lp.p99)} / ${ms(lt.p99)} | TLS / plain p50 ${(lt.p50 / lp.p50).toFixed(2)}x | |`,
      `| of which the new agent's CPU until ready | ${cp.n} / ${ct.n} | ${ms(cp.p50)} / ${ms(ct.p50)} | ${ms(cp.p99)} / ${ms(ct.p99)} | +${ms(ct.p50 - cp.p50)} with TLS | |`,
      `| agent channel plain / TLS (ABBA): Run Command round trip (\`true\`) | ${tp.n} / ${tt.n} | ${ms(tp.p50)} / ${ms(tt.p50)} | ${ms(tp.p99)} / ${ms(tt.p99)} | TLS / plain p50 ${(tt.p50 / tp.p50).toFixed(2)}x | |`,
      `| agent RSS after ${IDLE_MS / 1000} s idle, plain / TLS (read together) | 1 / 1 | ${rssPlain.toFixed(1)} / ${rssTls.toFixed(1)} MiB | | +${(rssTls - rssPlain).toFixed(1)} MiB with TLS | |`,
    ];
  } finally {
    for (const side of ['plain', 'tls'] as const) {
      const host = last[side];
      if (host) await servers[side].api.delete(`/v1/hosts/${host.id}`);
    }
    await tls.stop();
    rmSync(dir, { recursive: true, force: true });
    opts.progress('');
  }
}

/** A process's CPU time so far (user + system), ms: /proc/<pid>/schedstat's first field is ns on the CPU. */
function cpuMs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
}
