/** Image records in the store, on every backend: one current build per name, pools roll, usage is counted. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostsRepo } from '../../src/store/hosts-repo.js';
import { ImagesRepo, type NewImage } from '../../src/store/images-repo.js';
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import { PoolsRepo } from '../../src/store/pools-repo.js';
import type { Store } from '../../src/store/store.js';
import { storeBackends } from '../helpers/stores.js';

const build = (name: string, id: string, layers: string[] = [`${id}-layer`]): NewImage => ({
  tenantId: DEFAULT_TENANT,
  name,
  id,
  parent: '/',
  parentId: null,
  base: '/',
  layers,
  manifest: { buildMs: 10 },
  sizeBytes: 1024,
});

for (const backend of storeBackends()) {
  describe(`images on ${backend.name}`, () => {
    let store: Store;
    let images: ImagesRepo;
    let pools: PoolsRepo;
    let hosts: HostsRepo;

    beforeAll(async () => {
      store = await backend.open();
      images = new ImagesRepo(store.db);
      pools = new PoolsRepo(store.db);
      hosts = new HostsRepo(store.db);
    });
    afterAll(async () => {
      await store?.close();
    });

    it('keeps one current build per name and rolls the pools that use the name', async () => {
      await pools.create(DEFAULT_TENANT, { name: 'p1', image: 'web', template: { tags: {} }, size: 1, maxSize: 2, maxLaunching: 1, maxIdleAgeS: null, warmup: [], healthCheck: null, onEmpty: 'launch', onRelease: 'terminate', demand: null, schedule: null });
      expect((await images.publish(build('web', 'a'.repeat(64)))).rolledPools).toEqual(['p1']);
      expect((await pools.get(DEFAULT_TENANT, 'p1'))?.generation).toBe(2);
      // The same build again is not a change: no roll.
      expect((await images.publish(build('web', 'a'.repeat(64)))).rolledPools).toEqual([]);
      expect((await images.publish(build('web', 'b'.repeat(64)))).rolledPools).toEqual(['p1']);
      expect((await pools.get(DEFAULT_TENANT, 'p1'))?.generation).toBe(3);
      expect((await images.current(DEFAULT_TENANT, 'web'))?.id).toBe('b'.repeat(64));
      expect((await images.builds(DEFAULT_TENANT, 'web')).map((r) => [r.id[0], r.current])).toEqual([
        ['b', true],
        ['a', false],
      ]);
      expect((await images.byId(DEFAULT_TENANT, 'a'.repeat(64)))?.layers).toEqual([`${'a'.repeat(64)}-layer`]);
      expect((await images.listCurrent(DEFAULT_TENANT)).map((r) => r.name)).toEqual(['web']);
    });

    it('counts pools by name and live hosts by any build of the name', async () => {
      await hosts.insert({ id: 'h-img-1', tenantId: DEFAULT_TENANT, driver: 'local', image: 'web', imageId: 'a'.repeat(64), hostname: 'h1', tags: {}, resources: {}, agentTokenHash: 'x' });
      expect(await images.usage(DEFAULT_TENANT, 'web')).toEqual({ pools: ['p1'], hosts: 1 });
      expect([...(await images.idsInUse(DEFAULT_TENANT))]).toEqual(['a'.repeat(64)]);
      await hosts.transition('h-img-1', ['launching'], 'failed', { reason: 'test' });
      expect(await images.usage(DEFAULT_TENANT, 'web')).toEqual({ pools: ['p1'], hosts: 0 });
      expect(await images.remove(DEFAULT_TENANT, 'web', 'a'.repeat(64))).toBe(1);
      expect(await images.remove(DEFAULT_TENANT, 'web')).toBe(1);
      expect(await images.current(DEFAULT_TENANT, 'web')).toBeUndefined();
    });
  });
}
