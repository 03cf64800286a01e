/**
 * kill -9 of the server in the middle of a claim storm, then restart: no host is in two groups, no
 * claim is left half-done, and the pool converges back to its size. And a health-checked pool's
 * ready hosts are adopted, not failed for an agent that had no time to reconnect; and a claim made
 * before the agents have redialled waits for one of them instead of finding the pool empty.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LeftoverCounts } from '../../src/drivers/local/index.js';
import type { ClaimView, PoolHostView, PoolStatusView } from '../../src/pools/views.js';
import { agentPidOf, ServerProcess, type Api } from '../helpers/server.js';
import { waitFor as poll } from '../helpers/wait.js';

/** The server is down for a moment in these tests: a failed probe is a "not yet". */
const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000) => poll(what, probe, { timeoutMs, intervalMs: 200, ignoreErrors: true });

const NET = { bridge: 'berthprs0', subnet: '10.226.0.0/22', cgroupName: 'berthprs' };
const PORTS = { api: 17380, agent: 17381 };

describe('claim storm across a control-plane crash', () => {
  let proc: ServerProcess;
  let api: Api;
  let baseline: LeftoverCounts;

  beforeAll(async () => {
    proc = await ServerProcess.start('pool-restart', NET, PORTS);
    api = proc.api;
    // After the server's start-up recovery, which removes what an earlier, aborted run left behind.
    baseline = proc.leftovers();
  });

  afterAll(async () => {
    await proc?.remove();
  });

  it('leaves no claim half-done and converges after kill -9', async () => {
    expect((await api.post('/v1/pools', { name: 'crash', size: 8, maxLaunching: 4 })).status).toBe(201);
    await waitFor('8 ready hosts', async () => ((await api.get<PoolStatusView>('/v1/pools/crash')).body.status.ready === 8 ? true : undefined));

    // A storm whose claims hold their hosts for a moment (init sleeps), so the kill lands mid-claim.
    let stop = false;
    let completed = 0;
    const worker = async (w: number) => {
      for (let n = 0; !stop; n++) {
        const res = await api.post<ClaimView>('/v1/pools/crash/claims', { group: `u${w}-${n}`, init: ['sleep 0.05'] }).catch(() => undefined);
        if (res?.status === 201) completed++;
        else if (!res) return; // the server is gone
      }
    };
    const load = Promise.all(Array.from({ length: 16 }, (_, w) => worker(w)));
    await waitFor('claims under way', () => Promise.resolve(completed >= 20 ? true : undefined), 30_000);
    await proc.kill();
    stop = true;
    await load;

    await proc.restart();
    api = proc.api;
    const converged = await waitFor('the pool to converge', async () => {
      const pool = (await api.get<PoolStatusView>('/v1/pools/crash')).body;
      const hosts = (await api.get<{ hosts: PoolHostView[] }>('/v1/pools/crash/hosts')).body.hosts;
      const waiting = hosts.filter((h) => h.slot !== 'claimed');
      // Converged also means every claimed host's agent has redialled (under load that can trail the refill).
      const reconnected = hosts.filter((h) => h.slot === 'claimed').every((h) => h.agent.connected);
      return pool.status.ready === 8 && waiting.every((h) => h.slot === 'ready') && reconnected ? { pool, hosts } : undefined;
    });

    const claims = (await api.get<{ claims: ClaimView[] }>('/v1/claims?pool=crash&limit=1000')).body.claims;
    expect(claims.filter((c) => c.state === 'pending')).toEqual([]);
    // Some claims were cut short by the kill: they failed, and kept nothing.
    const ready = claims.filter((c) => c.state === 'ready');
    expect(ready.length).toBeGreaterThanOrEqual(completed);
    // No host is in two groups, and every claimed host belongs to exactly the one ready claim naming it.
    const hostsOfReady = ready.map((c) => c.host?.id);
    expect(new Set(hostsOfReady).size).toBe(hostsOfReady.length);
    const claimed = converged.hosts.filter((h) => h.slot === 'claimed');
    expect(claimed.map((h) => h.id).sort()).toEqual([...hostsOfReady].sort());
    for (const host of claimed) {
      const claim = ready.find((c) => c.host?.id === host.id);
      expect(host.group).toBe(claim?.group);
      expect(host.agent.connected).toBe(true);
    }
    const failed = claims.filter((c) => c.state === 'failed');
    expect(failed.length).toBeGreaterThan(0); // the kill did land mid-claim
    for (const claim of failed) expect(claimed.some((h) => h.claimId === claim.id)).toBe(false);

    // Removing the pool and releasing every claimed host leaves nothing behind.
    await api.delete('/v1/pools/crash');
    for (const host of claimed) expect((await api.post(`/v1/hosts/${host.id}/release`, {})).status).toBe(200);
    await waitFor('every host to go', async () => ((await api.get<{ hosts: unknown[] }>('/v1/hosts')).body.hosts.length === 0 ? true : undefined));
    expect(proc.leftovers()).toEqual(baseline);
  }, 180_000);

  it('adopts the ready hosts of a health-checked pool after kill -9: none quarantined before its agent is back', async () => {
    expect((await api.post('/v1/pools', { name: 'checked', size: 2, healthCheck: { command: 'true', interval: 30 } })).status).toBe(201);
    const before = await waitFor('2 ready hosts', async () => {
      const hosts = (await api.get<{ hosts: PoolHostView[] }>('/v1/pools/checked/hosts')).body.hosts.filter((h) => h.slot === 'ready');
      return hosts.length === 2 ? hosts.map((h) => h.id).sort() : undefined;
    });
    await proc.kill();
    await proc.restart();
    api = proc.api;
    await waitFor('both agents back', async () => {
      const hosts = (await api.get<{ hosts: PoolHostView[] }>('/v1/pools/checked/hosts')).body.hosts;
      return hosts.length === 2 && hosts.every((h) => h.agent.connected) ? true : undefined;
    });
    // Passes run every second: give them a few to quarantine what they should not.
    await new Promise((r) => setTimeout(r, 3000));
    const hosts = (await api.get<{ hosts: PoolHostView[] }>('/v1/pools/checked/hosts')).body.hosts;
    expect(hosts.map((h) => [h.id, h.slot]).sort()).toEqual(before.map((id) => [id, 'ready']));
    await api.delete('/v1/pools/checked');
    await waitFor('every host to go', async () => ((await api.get<{ hosts: unknown[] }>('/v1/hosts')).body.hosts.length === 0 ? true : undefined));
    expect(proc.leftovers()).toEqual(baseline);
  }, 120_000);

  it('a claim right after a restart waits for a ready host whose agent has not redialled yet, and gets it', async () => {
    expect((await api.post('/v1/pools', { name: 'redial', size: 2, onEmpty: 'fail' })).status).toBe(201);
    const before = await waitFor('2 ready hosts', async () => {
      const hosts = (await api.get<{ hosts: PoolHostView[] }>('/v1/pools/redial/hosts')).body.hosts.filter((h) => h.slot === 'ready');
      return hosts.length === 2 ? hosts.map((h) => h.id).sort() : undefined;
    });
    await proc.kill();
    // Their agents are held still until the claim below is under way: they cannot redial before it.
    const agents = before.map((id) => agentPidOf(proc.dataDir, id));
    for (const pid of agents) process.kill(pid, 'SIGSTOP');
    let claim: Promise<{ status: number; body: ClaimView & { code?: string } }> | undefined;
    try {
      await proc.restart();
      api = proc.api;
      const away = (await api.get<PoolStatusView>('/v1/pools/redial')).body.status;
      // Not ready for a claim, but not missing either: the reconciler launches nothing for them.
      expect({ ready: away.ready, reconnecting: away.reconnecting, warming: away.warming, full: away.full }).toEqual({ ready: 0, reconnecting: 2, warming: 0, full: false });
      expect(away.notFullReason).toBe('2 ready host(s) waiting for their agents to reconnect');
      claim = api.post<ClaimView & { code?: string }>('/v1/pools/redial/claims', { group: 'early', init: ['true'] });
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      for (const pid of agents) process.kill(pid, 'SIGCONT');
    }
    const res = await claim;
    // Without the wait this was a 503 pool_empty while `pool show` said 2 ready.
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.hit).toBe(true);
    expect(before).toContain(res.body.host?.id);
    expect(res.body.timings['reconnectWaitMs']).toBeGreaterThanOrEqual(400);
    const after = (await api.get<PoolStatusView>('/v1/pools/redial')).body.status;
    expect(after.reconnecting).toBe(0);
    expect(after.hits).toBe(1);

    await api.delete('/v1/pools/redial');
    expect((await api.post(`/v1/hosts/${res.body.host?.id}/release`, {})).status).toBe(200);
    await waitFor('every host to go', async () => ((await api.get<{ hosts: unknown[] }>('/v1/hosts')).body.hosts.length === 0 ? true : undefined));
    expect(proc.leftovers()).toEqual(baseline);
  }, 120_000);
});
