/**
 * For unit tests of an environment's changes in place (settings, restarts): an in-memory store for
 * the test file, and a ready review environment of two hosts (`NAME-1`, `NAME-2`) recorded in it.
 */
import { afterAll, beforeAll } from 'vitest';
import { EnvironmentsRepo } from '../../src/store/environments-repo.js';
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import type { EnvironmentRow } from '../../src/store/schema.js';
import { openStore, type Store } from '../../src/store/store.js';

/** The environments repo of a store opened before the file's tests and closed after them. Call inside describe. */
export function useEnvironmentsRepo(): { readonly envs: EnvironmentsRepo } {
  let store: Store | undefined;
  let envs: EnvironmentsRepo | undefined;
  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
    envs = new EnvironmentsRepo(store.db);
  });
  afterAll(async () => {
    await store?.close();
  });
  return {
    get envs(): EnvironmentsRepo {
      if (!envs) throw new Error('the store has not opened');
      return envs;
    },
  };
}

/** A review environment `name` with `settings`, on hosts NAME-1 and NAME-2, in state ready. */
export async function readyEnvironment(envs: EnvironmentsRepo, name: string, settings: Record<string, string> = {}): Promise<EnvironmentRow> {
  await envs.insert({ tenantId: DEFAULT_TENANT, name, stack: 's', pool: 's', mode: 'review', ref: null, command: null, replicas: 2, owner: null, settings, expiresAt: null });
  await envs.setHosts(DEFAULT_TENANT, name, [`${name}-1`, `${name}-2`].map((hostId) => ({ hostId, service: null, generation: 1 })));
  const row = await envs.transition(DEFAULT_TENANT, name, ['creating'], 'ready');
  if (!row) throw new Error(`environment ${name} is not ready`);
  return row;
}
