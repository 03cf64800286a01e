/**
 * The claim path's pool cache (PoolsRepo.getRecent) on an in-memory PGlite: a change made through
 * the repo is seen by the next read at once, even when a read begun before the change ends after it
 * (that read must not put the old row back for the next second's claims).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePoolSpec } from '../pools/spec.js';
import { PoolsRepo } from './pools-repo.js';
import { openStore, type Store } from './store.js';

const T = 'default';

describe('the claim path\'s pool cache', () => {
  let store: Store;
  let pools: PoolsRepo;
  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
    pools = new PoolsRepo(store.db);
  });
  afterAll(async () => {
    await store.close();
  });

  it('serves the changed pool right after a change, even to a read that was under way during it', async () => {
    await pools.create(T, parsePoolSpec({ name: 'roll', size: 1, template: { tags: { version: '1' } } }));
    expect((await pools.getRecent(T, 'roll'))?.generation).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 5));
    // The cached entry is dropped by age below (0 ms): this read starts before the change and ends after it.
    const during = pools.getRecent(T, 'roll', 0);
    const changed = await pools.update(T, parsePoolSpec({ name: 'roll', size: 1, template: { tags: { version: '2' } } }));
    expect(changed).toMatchObject({ rolled: true, row: { generation: 2 } });
    expect((await during)?.generation).toBe(1);
    const next = await pools.getRecent(T, 'roll');
    expect({ generation: next?.generation, template: next?.template }).toEqual({ generation: 2, template: { tags: { version: '2' } } });
  });

  it('forgets a removed pool', async () => {
    await pools.create(T, parsePoolSpec({ name: 'gone', size: 1 }));
    expect(await pools.getRecent(T, 'gone')).toBeDefined();
    const during = pools.getRecent(T, 'gone', 0);
    await pools.remove(T, 'gone');
    await during;
    expect(await pools.getRecent(T, 'gone')).toBeUndefined();
  });
});
