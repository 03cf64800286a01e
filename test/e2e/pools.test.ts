/**
 * Warm pools and claims on real hosts: a claim storm against a small pool, image (generation) change
 * under load, bad input, and a failing init that changes nothing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { detectCgroupLayout, readMountinfo } from '../../src/drivers/local/cgroups.js';
import type { ClaimView, PoolHostView, PoolStatusView } from '../../src/pools/views.js';
import { useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor as poll } from '../helpers/wait.js';

const waitFor = <T>(what: string, probe: () => Promise<T | undefined>) => poll(what, probe, { timeoutMs: 60_000 });

const NET = { bridge: 'berthpool0', subnet: '10.224.0.0/22', cgroupName: 'berthpool' };

describe('pools and claims', () => {
  let srv: InProcessServer;

  const pool = async (name: string) => (await srv.api.get<PoolStatusView>(`/v1/pools/${name}`)).body;
  const poolHosts = async (name: string) => (await srv.api.get<{ hosts: PoolHostView[] }>(`/v1/pools/${name}/hosts`)).body.hosts;  const waitFull = (name: string, size: number) =>
    waitFor(`pool ${name} to hold ${size} ready hosts`, async () => {
      const p = await pool(name);
      const hosts = await poolHosts(name);
      const settled = p.status.ready === size && hosts.every((h) => h.slot === 'ready' || h.slot === 'claimed');
      return settled ? p : undefined;
    });

  const server = useServer(NET);
  beforeAll(() => {
    srv = server.srv;
  });

  it('gives 500 concurrent claims 500 distinct hosts from a pool of 8, then refills it', async () => {
    const created = await srv.api.post<PoolStatusView>('/v1/pools', { name: 'storm', size: 8, maxLaunching: 4, onEmpty: 'launch' });
    expect(created.status).toBe(201);
    await waitFull('storm', 8);

    const held = new Map<string, number>();
    const seen = new Set<string>();
    const problems: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < 500) {
        const n = next++;
        const res = await srv.api.post<ClaimView>('/v1/pools/storm/claims', { group: `user-${n}`, init: ['true'] });
        if (res.status !== 201 || !res.body.host) {
          problems.push(`claim ${n}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
          continue;
        }
        const id = res.body.host.id;
        if (held.has(id)) problems.push(`host ${id} handed to claim ${n} while claim ${held.get(id)} holds it`);
        if (seen.has(id)) problems.push(`host ${id} handed out twice`);
        if (res.body.host.group !== `user-${n}` || res.body.host.slot !== 'claimed') problems.push(`claim ${n}: host ${id} is ${res.body.host.slot} in ${res.body.host.group}`);
        held.set(id, n);
        seen.add(id);
        const released = await srv.api.post<PoolHostView>(`/v1/hosts/${id}/release`, {});
        if (released.status !== 200) problems.push(`release ${id}: ${released.status} ${JSON.stringify(released.body)}`);
        held.delete(id);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    expect(problems).toEqual([]);
    expect(seen.size).toBe(500);

    const after = await waitFull('storm', 8);
    expect(after.status.hits + after.status.misses).toBe(500);
    expect(after.status.hits).toBeGreaterThan(0);
    expect(Date.now() - Date.parse(after.status.lastClaimAt ?? '')).toBeLessThan(120_000);
    // Nothing lost or counted twice: the pool holds exactly its 8 ready hosts, every claimed host
    // was released and terminated, and no claim is left pending.
    const hosts = await poolHosts('storm');
    expect(hosts.map((h) => h.slot)).toEqual(Array(8).fill('ready'));
    const claims = (await srv.api.get<{ claims: ClaimView[] }>('/v1/claims?pool=storm&limit=1000')).body.claims;
    expect(claims.filter((c) => c.state === 'released')).toHaveLength(500);
    expect(claims.filter((c) => c.state === 'pending')).toHaveLength(0);
  }, 300_000);

  it('never hands out a host of the old generation after a change, and rolls without emptying the pool', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'roll', size: 4, maxLaunching: 2, template: { tags: { version: '1' } } })).status).toBe(201);
    await waitFull('roll', 4);

    let changedAt = Number.POSITIVE_INFINITY;
    let stop = false;
    const problems: string[] = [];
    let claimsAfter = 0;
    const worker = async (w: number) => {
      for (let n = 0; !stop; n++) {
        const startedAt = Date.now();
        const res = await srv.api.post<ClaimView>('/v1/pools/roll/claims', { group: `roll-${w}`, init: ['true'] });
        if (res.status !== 201 || !res.body.host) {
          problems.push(`claim: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
          continue;
        }
        if (startedAt > changedAt) {
          claimsAfter++;
          if (res.body.host.generation !== 2 || res.body.host.tags['version'] !== '2') {
            problems.push(`claim started after the change got host ${res.body.host.id} of generation ${String(res.body.host.generation)}`);
          }
        }
        await srv.api.post(`/v1/hosts/${res.body.host.id}/release`, {});
      }
    };
    // Sample the pool's membership while the roll runs: it must never drop to nothing.
    const emptySamples: string[] = [];
    const sampler = (async () => {
      while (!stop) {
        const hosts = await poolHosts('roll');
        if (!hosts.some((h) => h.slot === 'ready' || h.slot === 'warming')) emptySamples.push(new Date().toISOString());
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const load = Promise.all([0, 1, 2].map(worker));
    await new Promise((r) => setTimeout(r, 1000));
    const changed = await srv.api.put<{ action: string; pool: PoolStatusView }>('/v1/pools/roll', { size: 4, maxLaunching: 2, template: { tags: { version: '2' } } });
    changedAt = Date.now();
    expect(changed.status).toBe(200);
    expect(changed.body.action).toBe('rolled');
    expect(changed.body.pool.generation).toBe(2);
    await new Promise((r) => setTimeout(r, 4000));
    stop = true;
    await Promise.all([load, sampler]);
    expect(problems).toEqual([]);
    expect(claimsAfter).toBeGreaterThan(5);
    expect(emptySamples).toEqual([]);
    // The pool says when the roll is done: no host of generation 1 is left waiting.
    const done = await waitFor('the roll to complete', async () => {
      const p = await pool('roll');
      return !p.status.rolling && p.status.ready === 4 ? p : undefined;
    });
    expect(done.status.stale).toBe(0);
    expect((await poolHosts('roll')).filter((h) => h.slot === 'ready').every((h) => h.generation === 2)).toBe(true);
  }, 120_000);

  it('rejects bad input with a clear error and changes nothing', async () => {
    const before = (await srv.api.get<{ pools: PoolStatusView[] }>('/v1/pools')).body.pools.map((p) => p.name);
    const unknown = await srv.api.post<{ code: string; message: string }>('/v1/pools/nope/claims', { group: 'g' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('pool_not_found');
    const negative = await srv.api.post<{ code: string; message: string }>('/v1/pools', { name: 'neg', size: -1 });
    expect(negative.status).toBe(400);
    expect(negative.body.message).toMatch(/size/);
    const tooBig = await srv.api.post<{ code: string; message: string }>('/v1/pools', { name: 'big', size: 5, maxSize: 3 });
    expect(tooBig.status).toBe(400);
    expect(tooBig.body.message).toMatch(/size 5 is above maxSize 3/);
    const badGroup = await srv.api.post<{ code: string }>('/v1/pools/storm/claims', { group: 'Not A Name' });
    expect(badGroup.status).toBe(400);
    expect((await srv.api.get<{ pools: PoolStatusView[] }>('/v1/pools')).body.pools.map((p) => p.name)).toEqual(before);
  });

  it('a failing init fails the claim, leaves nothing in the group and the pool refills', async () => {
    const failing = await srv.api.post<{ code: string; message: string; details: { attempts: unknown[] } }>('/v1/pools/storm/claims', { group: 'broken', init: ['echo nope >&2; exit 3'], maxAttempts: 2 });
    expect(failing.status).toBe(422);
    expect(failing.body.code).toBe('claim_failed');
    expect(failing.body.message).toMatch(/exit codes 3/);
    expect(failing.body.message).toMatch(/nope/);
    expect(failing.body.details.attempts).toHaveLength(2);
    expect((await srv.api.get<{ hosts: unknown[] }>('/v1/groups/broken/hosts')).body.hosts).toEqual([]);
    const after = await waitFull('storm', 8);
    expect(after.status.quarantined).toBe(0);
  }, 60_000);

  it('answers the same idempotency key with the same claim and host', async () => {
    const body = { group: 'idem', init: ['true'], idempotencyKey: 'signup-42' };
    const [a, b] = await Promise.all([srv.api.post<ClaimView>('/v1/pools/storm/claims', body), srv.api.post<ClaimView>('/v1/pools/storm/claims', body)]);
    const c = await srv.api.post<ClaimView>('/v1/pools/storm/claims', body);
    expect([a.status, b.status, c.status]).toEqual([201, 201, 201]);
    expect(new Set([a.body.id, b.body.id, c.body.id]).size).toBe(1);
    expect(a.body.host?.id).toBe(c.body.host?.id);
    expect((await srv.api.get<{ hosts: unknown[] }>('/v1/groups/idem/hosts')).body.hosts).toHaveLength(1);
    // The same key for another group is another request: refused, not answered with this host.
    const other = await srv.api.post<{ code: string; message: string }>('/v1/pools/storm/claims', { ...body, group: 'someone-else' });
    expect(other.status).toBe(409);
    expect(other.body.message).toBe('idempotency key signup-42 was used for a claim for another group');
    expect((await srv.api.get<{ hosts: unknown[] }>('/v1/groups/someone-else/hosts')).body.hosts).toHaveLength(0);
    // A repeat whose own deadline ends while the first still runs says so (409), and takes nothing.
    const slow = { group: 'idem-slow', init: ['sleep 3'], idempotencyKey: 'signup-43' };
    const first = srv.api.post<ClaimView>('/v1/pools/storm/claims', slow);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const impatient = await srv.api.post<{ code: string; message: string }>('/v1/pools/storm/claims', { ...slow, deadline: 1 });
    expect([impatient.status, impatient.body.code]).toEqual([409, 'conflict']);
    expect(impatient.body.message).toMatch(/^the claim with idempotency key signup-43 \(cl-\S+\) is still running$/);
    expect(Date.now() - t0).toBeLessThan(2500);
    expect((await first).status).toBe(201);

    // Run Command can target the group: its one host, and only it.
    const cmd = await srv.api.post<{ status: string; invocations: { hostId: string; stdout: string }[] }>('/v1/commands', {
      targets: { group: 'idem' },
      parameters: { commands: ['hostname'] },
      wait: 10,
    });
    expect(cmd.body.status).toBe('Success');
    expect(cmd.body.invocations.map((i) => i.hostId)).toEqual([a.body.host?.id]);
    const none = await srv.api.post<{ code: string; message: string }>('/v1/commands', { targets: { group: 'nobody-here' }, parameters: { commands: ['true'] } });
    expect(none.status).toBe(400);
    expect(none.body.message).toMatch(/no live host in group nobody-here/);
  });

  it('returns a released host with reuse to the pool with nothing of its previous user', async () => {
    expect((await srv.api.post('/v1/pools', { name: 'reuse', size: 1, maxLaunching: 2 })).status).toBe(201);
    await waitFull('reuse', 1);
    const claim = await srv.api.post<ClaimView>('/v1/pools/reuse/claims', {
      group: 'alice',
      tags: { user: 'alice' },
      env: { SECRET: 'alice-secret' },
      init: [
        // The init sees the tags the claim gives the host (its user's).
        `printf %s "$BERTH_TAGS" | grep -q '"user":"alice"' && printf %s "$BERTH_TAGS" | grep -q '"berth:group":"alice"'`,
        'echo "$SECRET" > /root/alice.txt',
        'nohup sleep 600 >/dev/null 2>&1 &',
      ],
    });
    expect(claim.status).toBe(201);
    const host = claim.body.host;
    if (!host) throw new Error('no host');
    expect(host.tags['user']).toBe('alice');
    // Its replacement is ready before it comes back, so the host trimmed from the then oversized
    // pool is the replacement (the longest idle), not the one under test.
    await waitFull('reuse', 1);

    const released = await srv.api.post<PoolHostView>(`/v1/hosts/${host.id}/release`, { reuse: true });
    expect(released.status).toBe(200);
    expect(released.body).toMatchObject({ id: host.id, slot: 'warming', group: null });
    expect((await srv.api.get<{ hosts: unknown[] }>('/v1/groups/alice/hosts')).body.hosts).toEqual([]);

    const back = await waitFor('the reused host to be ready again', async () => {
      const hosts = await poolHosts('reuse');
      const h = hosts.find((x) => x.id === host.id);
      return h?.slot === 'ready' && h.agent.connected ? h : undefined;
    });
    expect(back.ip).toBe(host.ip);
    expect(back.tags['user']).toBeUndefined();
    const look = await srv.api.post<{ status: string; invocations: { stdout: string }[] }>('/v1/commands', {
      targets: { hostIds: [host.id] },
      parameters: { commands: ['test -e /root/alice.txt && echo FILE-LEFT; ps -eo args | grep -c "[s]leep 600"; cat /etc/berth/tags.json; env | grep -c alice-secret || true'] },
      wait: 20,
    });
    expect(look.body.status).toBe('Success');
    const out = look.body.invocations[0]?.stdout ?? '';
    expect(out).not.toContain('FILE-LEFT');
    expect(out).not.toContain('alice');
    expect(out.split('\n')[0]).toBe('0'); // no process of the previous user
    // The pool is back at its size: the extra host (the refill made while the host was claimed) goes.
    await waitFor('the pool to settle at 1', async () => {
      const hosts = await poolHosts('reuse');
      return hosts.length === 1 && hosts[0]?.slot === 'ready' ? true : undefined;
    });
  }, 60_000);
  it('keeps its spares on a small CPU share until a claim makes them serve, and again after a reuse', async () => {
    const layout = detectCgroupLayout(readMountinfo());
    const cpu = layout.hierarchies.find((h) => h.controllers.includes('cpu'));
    if (!cpu) return; // no cpu controller here: nothing to weigh
    const share = (id: string) => Number(readFileSync(join(cpu.mountPoint, NET.cgroupName, id, cpu.version === 1 ? 'cpu.shares' : 'cpu.weight'), 'utf8'));
    const [standby, serving] = cpu.version === 1 ? [64, 1024] : [6, 100];
    expect((await srv.api.post('/v1/pools', { name: 'spare', size: 2, maxLaunching: 2 })).status).toBe(201);
    await waitFull('spare', 2);
    const spares = await poolHosts('spare');
    expect(spares.map((h) => share(h.id))).toEqual([standby, standby]);
    const claim = await srv.api.post<ClaimView>('/v1/pools/spare/claims', { group: 'weighed', init: ['true'] });
    expect(claim.status).toBe(201);
    const claimed = claim.body.host?.id ?? '';
    expect(share(claimed)).toBe(serving);
    // The other spare still yields.
    expect(spares.filter((h) => h.id !== claimed).map((h) => share(h.id))).toEqual([standby]);
    expect((await srv.api.post(`/v1/hosts/${claimed}/release`, { reuse: true })).status).toBe(200);
    await waitFor(`host ${claimed} back in the pool`, async () => ((await poolHosts('spare')).some((h) => h.id === claimed && h.slot === 'ready') ? true : undefined));
    expect(share(claimed)).toBe(standby);
  }, 60_000);
});
