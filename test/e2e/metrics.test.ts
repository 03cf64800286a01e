/**
 * /metrics on a real server: the numbers equal what the API (and so the CLI's --json) says for
 * the same moment, the router's requests are counted by environment and status, and the endpoint
 * refuses a missing or wrong token like every other route.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { samples } from '../helpers/metrics-text.js';

const NET = { bridge: 'berthmet0', subnet: '10.239.0.0/22', cgroupName: 'berthmet' };

describe('/metrics', () => {
  let srv: InProcessServer;
  const server = useServer(NET);
  beforeAll(() => {
    srv = server.srv;
  });

  const scrape = async (token: string | null) => {
    const res = await fetch(`${srv.server.url}/metrics`, { headers: token !== null ? { authorization: `Bearer ${token}` } : {} });
    return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
  };

  it('matches the pool status and the claims the API reports, and refuses a missing or wrong token', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'met', size: 2 })).status).toBe(201);
    await waitFor('pool met to fill', async () => ((await srv.api.get<PoolStatusView>('/v1/pools/met')).body.status.ready === 2 ? true : undefined), { timeoutMs: 60_000 });
    const claim = await srv.api.post<ClaimView>('/v1/pools/met/claims', { group: 'ops', init: ['true'] });
    expect(claim.status).toBe(201);
    // Let the refill settle so both reads see the same moment.
    await waitFor('pool met to refill', async () => ((await srv.api.get<PoolStatusView>('/v1/pools/met')).body.status.ready === 2 ? true : undefined), { timeoutMs: 60_000 });
    await srv.server.pools.reconciler.settled();

    const [metrics, pool] = [await scrape(srv.server.token), (await srv.api.get<PoolStatusView>('/v1/pools/met')).body];
    expect(metrics.status).toBe(200);
    expect(metrics.type).toContain('text/plain; version=0.0.4');
    const m = samples(metrics.text);
    const tenant = 'tenant="default"';
    expect(m.get(`berth_pool_hosts{${tenant},pool="met",slot="ready"}`)).toBe(pool.status.ready);
    expect(m.get(`berth_pool_hosts{${tenant},pool="met",slot="claimed"}`)).toBe(pool.status.claimed);
    expect(m.get(`berth_pool_size{${tenant},pool="met"}`)).toBe(2);
    expect(m.get(`berth_claims_total{${tenant},pool="met",outcome="hit"}`)).toBe(pool.status.hits);

    // Every pool host the store has (the 3 launched) counted once in both readiness histograms, and a
    // refill (boot, warm-up, health check) takes at least as long as the agent's start within it.
    const hosts = (await srv.api.get<{ hosts: { id: string }[] }>('/v1/pools/met/hosts')).body.hosts;
    expect(hosts.length).toBe(3);
    expect(m.get(`berth_host_ready_seconds_count{${tenant},pool="met"}`)).toBe(3);
    expect(m.get(`berth_pool_refill_seconds_count{${tenant},pool="met"}`)).toBe(3);
    expect(m.get(`berth_host_ready_seconds_bucket{${tenant},pool="met",le="+Inf"}`)).toBe(3);
    const hostSum = m.get(`berth_host_ready_seconds_sum{${tenant},pool="met"}`) ?? 0;
    expect(hostSum).toBeGreaterThan(0);
    expect(m.get(`berth_pool_refill_seconds_sum{${tenant},pool="met"}`)).toBeGreaterThanOrEqual(hostSum);

    expect((await scrape(null)).status).toBe(401);
    expect((await scrape('not-the-token')).status).toBe(401);
  }, 120_000);

  it('counts a crashing service\'s restarts as its agent reports them, and services by state', async () => {
    const host = (await srv.api.post<{ id: string }>('/v1/hosts', {})).body;
    const set = await srv.api.put(`/v1/hosts/${host.id}/services`, {
      services: [
        { name: 'flaky', cmd: 'sleep 0.2; exit 1', restart: { policy: 'always', initialDelayMs: 50 } },
        { name: 'steady', cmd: 'exec sleep 1000', restart: { policy: 'always' } },
      ],
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    type Services = { services: { name: string; status: { state: string; restarts: number } | null }[] };
    const flakyRestarts = async () => (await srv.api.get<Services>(`/v1/hosts/${host.id}/services`)).body.services.find((s) => s.name === 'flaky')?.status?.restarts ?? 0;
    await waitFor('two restarts of flaky', async () => ((await flakyRestarts()) >= 2 ? true : undefined), { timeoutMs: 30_000 });
    // The same report read both ways: restarts only grow, so the scrape sees at least what the API saw before it.
    const before = await flakyRestarts();
    const m = samples((await scrape(srv.server.token)).text);
    const after = await flakyRestarts();
    const scraped = m.get(`berth_service_restarts_total{tenant="default",host="${host.id}",service="flaky"}`) ?? -1;
    expect(scraped).toBeGreaterThanOrEqual(before);
    expect(scraped).toBeLessThanOrEqual(after);
    expect(m.get(`berth_service_restarts_total{tenant="default",host="${host.id}",service="steady"}`)).toBe(0);
    const states = [...m].filter(([k]) => k.startsWith('berth_services{')).reduce((n, [, v]) => n + v, 0);
    expect(states).toBe(2);
  }, 60_000);

  it("reports what each running host uses, as GET /v1/hosts/{id}/stats reads it", async () => {
    const host = (await srv.api.post<{ id: string }>('/v1/hosts', { resources: { memoryMiB: 300, pids: 150, diskMiB: 48 } })).body;
    const m = samples((await scrape(srv.server.token)).text);
    const stats = (await srv.api.get<{ memoryLimitBytes?: number; pidsLimit?: number; diskSizeBytes?: number; cpuSeconds?: number }>(`/v1/hosts/${host.id}/stats`)).body;
    const of = (name: string) => m.get(`${name}{tenant="default",host="${host.id}"}`);
    expect(of('berth_host_memory_limit_bytes')).toBe(300 * 1024 * 1024);
    expect(of('berth_host_processes_limit')).toBe(150);
    expect(of('berth_host_disk_size_bytes')).toBe(stats.diskSizeBytes);
    expect(of('berth_host_memory_bytes')).toBeGreaterThan(0);
    expect(of('berth_host_processes')).toBeGreaterThanOrEqual(2);
    // CPU time only grows: the scrape came first.
    expect(of('berth_host_cpu_seconds_total')).toBeLessThanOrEqual(stats.cpuSeconds ?? 0);
    await srv.api.delete(`/v1/hosts/${host.id}`);
    expect(samples((await scrape(srv.server.token)).text).has(`berth_host_memory_bytes{tenant="default",host="${host.id}"}`)).toBe(false);
  }, 60_000);
});
