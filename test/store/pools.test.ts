/** Pools and claims in the store, on every backend: the pick is atomic under concurrency. */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClaimsRepo } from '../../src/store/claims-repo.js';
import { HostsRepo } from '../../src/store/hosts-repo.js';
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import { PoolsRepo, type PoolSpec } from '../../src/store/pools-repo.js';
import type { Store } from '../../src/store/store.js';
import { storeBackends } from '../helpers/stores.js';
import { poolSpec } from '../helpers/metrics-seed.js';

const spec = (name: string, over: Partial<PoolSpec> = {}): PoolSpec => poolSpec(name, { size: 4, ...over });

for (const backend of storeBackends()) {
  describe(`pools on ${backend.name}`, () => {
    let store: Store;
    let pools: PoolsRepo;
    let hosts: HostsRepo;
    let claims: ClaimsRepo;

    beforeAll(async () => {
      store = await backend.open();
      pools = new PoolsRepo(store.db);
      hosts = new HostsRepo(store.db);
      claims = new ClaimsRepo(store.db);
    });
    afterAll(async () => {
      await store?.close();
    });

    async function readyHost(pool: string, generation: number, id: string): Promise<void> {
      await hosts.insert({ id, tenantId: DEFAULT_TENANT, driver: 'local', image: '/', hostname: id, tags: {}, resources: {}, agentTokenHash: id, pool: { name: pool, generation, slot: 'warming' } });
      await hosts.transition(id, ['launching'], 'running', { readyAt: new Date() });
      await hosts.setAgent(id, true, new Date());
      expect(await hosts.setSlot(id, ['warming'], 'ready')).toBeDefined();
    }

    it('reads demand: the most claims within one span of the window, and the median launch-to-ready time', async () => {
      await pools.create(DEFAULT_TENANT, spec('rush'));
      // Claims that arrived 500, 300 (four within 2 s), 200 and 100 s ago (two within 2 s), and one
      // arriving now. Demand is when claims arrive: each ended 15 s after the one before it (a rush
      // served by slow cold launches is still one rush).
      const agoS = [500, 300, 300.5, 301, 301.9, 200, 100, 99];
      for (const [i, ago] of agoS.entries()) {
        await sql`insert into claims (id, tenant_id, pool, group_name, state, request, created_at, finished_at)
          values (${`cl-rush-${i}`}, ${DEFAULT_TENANT}, 'rush', 'g', ${i % 2 ? 'failed' : 'released'}, '{}', now() - ${`${ago} seconds`}::interval, now() - ${`${ago - 15 * i} seconds`}::interval)`.execute(store.db);
      }
      await sql`insert into claims (id, tenant_id, pool, group_name, state, request) values ('cl-rush-pending', ${DEFAULT_TENANT}, 'rush', 'g', 'pending', '{}')`.execute(store.db);
      expect(await claims.demandPeak(DEFAULT_TENANT, 'rush', 600, 2)).toBe(4);
      // The rush of four left the window; two within 2 s remain.
      expect(await claims.demandPeak(DEFAULT_TENANT, 'rush', 250, 2)).toBe(2);
      expect(await claims.demandPeak(DEFAULT_TENANT, 'rush', 250, 0.5)).toBe(1);
      // Only the claim arriving now (still pending: it is demand all the same).
      expect(await claims.demandPeak(DEFAULT_TENANT, 'rush', 50, 2)).toBe(1);
      expect(await claims.demandPeak(DEFAULT_TENANT, 'other-pool', 600, 2)).toBe(0);

      expect(await hosts.medianLeadTimeS(DEFAULT_TENANT, 'rush')).toBeUndefined();
      for (const [i, secs] of [1, 2, 4].entries()) {
        await readyHost('rush', 1, `h-rush${i}`);
        await sql`update hosts set created_at = pool_ready_at - ${`${secs} seconds`}::interval where id = ${`h-rush${i}`}`.execute(store.db);
      }
      expect(await hosts.medianLeadTimeS(DEFAULT_TENANT, 'rush')).toBeCloseTo(2, 3);
    });

    it('hands each ready host to exactly one of many concurrent claims', async () => {
      await pools.create(DEFAULT_TENANT, spec('storm'));
      const ids = Array.from({ length: 20 }, (_, i) => `h-storm${String(i).padStart(3, '0')}`);
      for (const id of ids) await readyHost('storm', 1, id);
      // 60 claims race for 20 hosts: 20 win, each a different host; 40 find the pool empty.
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => claims.pickReady(DEFAULT_TENANT, 'storm', `cl-${i}`, `g${i}`)));
      const won = results.filter((r) => r !== undefined).map((r) => r.host.id);
      expect(won).toHaveLength(20);
      expect(new Set(won).size).toBe(20);
      const rows = await hosts.listPool(DEFAULT_TENANT, 'storm');
      expect(rows.every((h) => h.slot === 'claiming' && h.claim_id !== null && h.group_name !== null)).toBe(true);
      // Each host is recorded with the claim that won it, and no other.
      for (const [i, r] of results.entries()) if (r) expect(r.host.claim_id).toBe(`cl-${i}`);
    });

    it('never picks a host of an older generation, nor one whose agent is away', async () => {
      await pools.create(DEFAULT_TENANT, spec('roll'));
      await readyHost('roll', 1, 'h-roll-old');
      const updated = await pools.update(DEFAULT_TENANT, spec('roll', { image: '/other' }));
      expect(updated?.rolled).toBe(true);
      expect(updated?.row.generation).toBe(2);
      expect(await claims.pickReady(DEFAULT_TENANT, 'roll', 'cl-r1', 'g')).toBeUndefined();
      await readyHost('roll', 2, 'h-roll-new');
      await hosts.setAgent('h-roll-new', false, new Date());
      expect(await claims.pickReady(DEFAULT_TENANT, 'roll', 'cl-r2', 'g')).toBeUndefined();
      await hosts.setAgent('h-roll-new', true, new Date());
      expect((await claims.pickReady(DEFAULT_TENANT, 'roll', 'cl-r3', 'g'))?.host.id).toBe('h-roll-new');
      const counts = await pools.counts(DEFAULT_TENANT, 'roll', 2);
      expect(counts).toMatchObject({ ready: 0, claiming: 1, stale: 1, staleReady: 1 });
    });

    it('completes a claim with the group\'s other running hosts, for the driver to connect', async () => {
      await pools.create(DEFAULT_TENANT, spec('mates'));
      for (const id of ['h-mate-1', 'h-mate-2', 'h-mate-3']) await readyHost('mates', 1, id);
      const finish = async (claimId: string, group: string) => {
        const picked = await claims.insertAndPick({ id: claimId, tenantId: DEFAULT_TENANT, pool: 'mates', group, idempotencyKey: null, request: {} });
        const hostId = picked.picked?.host.id ?? '';
        return { hostId, done: await claims.complete({ claimId, tenantId: DEFAULT_TENANT, pool: 'mates', hostId, tags: {}, hit: true, attempts: 1, timings: {}, durationMs: 1 }) };
      };
      const first = await finish('cl-m1', 'team');
      expect(first.done?.groupMates).toEqual([]);
      const second = await finish('cl-m2', 'team');
      expect(second.done?.groupMates.map((m) => m.id)).toEqual([first.hostId]);
      expect(second.done?.groupMates[0]?.driver_data).toEqual({});
      const elsewhere = await finish('cl-m3', 'other-team');
      expect(elsewhere.done?.groupMates).toEqual([]);
    });

    it('keeps one claim per idempotency key', async () => {
      await pools.create(DEFAULT_TENANT, spec('idem'));
      const first = await claims.insertAndPick({ id: 'cl-k1', tenantId: DEFAULT_TENANT, pool: 'idem', group: 'g', idempotencyKey: 'key-1', request: {} });
      const second = await claims.insertAndPick({ id: 'cl-k2', tenantId: DEFAULT_TENANT, pool: 'idem', group: 'g', idempotencyKey: 'key-1', request: {} });
      expect(first.inserted).toBe(true);
      expect(second.inserted).toBe(false);
      expect((await claims.byIdempotencyKey(DEFAULT_TENANT, 'key-1'))?.id).toBe('cl-k1');
    });

    it('refuses a second pool of the same name and changes nothing', async () => {
      await pools.create(DEFAULT_TENANT, spec('dup', { size: 1 }));
      await expect(pools.create(DEFAULT_TENANT, spec('dup', { size: 3 }))).rejects.toMatchObject({ code: 'pool_exists' });
      expect((await pools.get(DEFAULT_TENANT, 'dup'))?.size).toBe(1);
    });

    it('moves slots only along the slot state machine (compare-and-set)', async () => {
      await pools.create(DEFAULT_TENANT, spec('slots'));
      await readyHost('slots', 1, 'h-slot1');
      await expect(hosts.setSlot('h-slot1', ['ready'], 'released')).rejects.toThrow(/cannot go from ready to released/);
      expect(await hosts.setSlot('h-slot1', ['warming'], 'ready')).toBeUndefined();
      const moved = await hosts.setSlot('h-slot1', ['ready'], 'retiring');
      expect(moved?.previous.slot).toBe('ready');
      expect(moved?.previous.seconds).toBeGreaterThanOrEqual(0);
    });
  });
}
