/**
 * Supervision figures for `npm run bench`:
 *   - time from a service's crash to its restart (no backoff delay configured: the supervisor's own
 *     reaction), from the agent's clock: the exit it saw -> the new process running;
 *   - a converge: one of 20 services' config changed, through the API until it alone is ready again;
 *   - supervisor overhead: the agent's RSS and CPU with 20 idle services beside an agent with none,
 *     on two hosts of the same run.
 */
import { readFileSync } from 'node:fs';
import type { CommandView } from '../src/commands/views.js';
import type { HostView } from '../src/hosts/views.js';
import type { HostServicesView } from '../src/services/services-service.js';
import { agentPidOf, type InProcessServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

export interface ServiceBenchOptions {
  crashes: number;
  idleSeconds: number;
  progress: (line: string) => void;
}

const idleService = (name: string) => ({ name, cmd: 'exec sleep 1000000', ports: [], env: {}, dependsOn: [], restart: { policy: 'always', initialDelayMs: 0 } });

export async function serviceBench(srv: InProcessServer, opts: ServiceBenchOptions): Promise<string[]> {
  const [busy, bare] = await Promise.all([launch(srv), launch(srv)]);
  try {
    opts.progress('services: starting 20 services…');
    const set = await srv.api.put<HostServicesView>(`/v1/hosts/${busy.id}/services?wait=30`, { services: Array.from({ length: 20 }, (_, i) => idleService(`svc${i}`)) });
    if (set.status !== 200 || set.body.services.some((s) => s.status?.state !== 'ready')) throw new Error(`services did not start: ${JSON.stringify(set.body)}`);

    const restart: number[] = [];
    for (let i = 0; i < opts.crashes; i++) {
      opts.progress(`services: crash -> restart ${i + 1}/${opts.crashes}`);
      // Round the services: one crashed again and again would reach its crash-loop limit (5).
      const name = `svc${i % 20}`;
      const before = (await servicesOf(srv, busy.id)).find((s) => s.name === name)?.status;
      await run(srv, busy.id, `kill -9 ${before?.pid ?? 0}`);
      const after = await until(async () => {
        const st = (await servicesOf(srv, busy.id)).find((s) => s.name === name)?.status;
        return st && st.state === 'ready' && st.pid !== before?.pid && st.lastExit ? st : undefined;
      });
      restart.push(new Date(after.since).getTime() - new Date(after.lastExit?.at ?? after.since).getTime());
    }

    // A converge: one service of the 20 gets a new config; the answer comes once it alone is ready again.
    const converge: number[] = [];
    const pidsOf = async () => new Map((await servicesOf(srv, busy.id)).map((s) => [s.name, s.status?.pid]));
    for (let i = 0; i < opts.crashes; i++) {
      opts.progress(`services: converge ${i + 1}/${opts.crashes}`);
      const before = await pidsOf();
      const services = Array.from({ length: 20 }, (_, k) => (k === 0 ? { ...idleService('svc0'), env: { ROUND: String(i) } } : idleService(`svc${k}`)));
      const started = performance.now();
      const res = await srv.api.put<HostServicesView>(`/v1/hosts/${busy.id}/services?wait=30`, { services });
      converge.push(performance.now() - started);
      const after = await pidsOf();
      const restarted = [...after].filter(([name, pid]) => before.get(name) !== pid).map(([name]) => name);
      if (res.status !== 200 || restarted.join() !== 'svc0') throw new Error(`converge restarted ${restarted.join(', ') || 'nothing'}: ${JSON.stringify(res.body).slice(0, 300)}`);
    }

    opts.progress(`services: agents idle for ${opts.idleSeconds} s…`);
    const [withServices, without] = await Promise.all([idle(srv, busy.id, opts.idleSeconds), idle(srv, bare.id, opts.idleSeconds)]);
    opts.progress('');
    const r = summarize(restart);
    const c = summarize(converge);
    return [
      `| service crash -> restarted (agent clock; no backoff delay) | ${r.n} | ${ms(r.p50)} | ${ms(r.p99)} | | |`,
      `| converge: 1 of 20 services' config changed -> it alone restarted and ready (API round trip) | ${c.n} | ${ms(c.p50)} | ${ms(c.p99)} | | |`,
      `| agent with 20 idle services: RSS / CPU over ${opts.idleSeconds} s | 1 | ${withServices.rssMiB.toFixed(1)} MiB / ${withServices.cpuPercent.toFixed(2)} % | | | |`,
      `| baseline: agent with no services, same run: RSS / CPU | 1 | ${without.rssMiB.toFixed(1)} MiB / ${without.cpuPercent.toFixed(2)} % | | supervisor overhead: +${(withServices.rssMiB - without.rssMiB).toFixed(1)} MiB, +${(withServices.cpuPercent - without.cpuPercent).toFixed(2)} % CPU | |`,
    ];
  } finally {
    await Promise.all([busy, bare].map((h) => srv.api.delete(`/v1/hosts/${h.id}`)));
  }
}

async function launch(srv: InProcessServer): Promise<HostView> {
  const res = await srv.api.post<HostView>('/v1/hosts', {});
  if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
  return res.body;
}

async function servicesOf(srv: InProcessServer, hostId: string) {
  return (await srv.api.get<HostServicesView>(`/v1/hosts/${hostId}/services`)).body.services;
}

async function run(srv: InProcessServer, hostId: string, command: string): Promise<void> {
  const { body } = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: [command] }, wait: 30 });
  if (body.status !== 'Success') throw new Error(`${command} failed: ${JSON.stringify(body.invocations[0])}`);
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** RSS (MiB) and CPU (% of one core) of a host's agent over `seconds`. */
async function idle(srv: InProcessServer, hostId: string, seconds: number): Promise<{ rssMiB: number; cpuPercent: number }> {
  const pid = agentPidOf(srv.dataDir, hostId);
  const ticks = () => {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return Number(fields[11]) + Number(fields[12]);
  };
  const before = ticks();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const cpuPercent = ((ticks() - before) / 100 / seconds) * 100;
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return { rssMiB: rssKiB / 1024, cpuPercent };
}
