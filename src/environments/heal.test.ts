/**
 * EnvironmentHealer on the environments and hosts tables of an in-memory PGlite, with claims and the
 * router faked (what they do is tested elsewhere; test/e2e/environment-heal.test.ts runs it on real
 * hosts): which hosts count as lost, what a heal records and routes, the retry after a failure, and
 * what it leaves alone.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import type { ClaimView } from '../pools/views.js';
import type { RouteSpec } from '../router/router.js';
import type { StackSpec } from '../stacks/spec.js';
import { EnvironmentsRepo } from '../store/environments-repo.js';
import { HostsRepo } from '../store/hosts-repo.js';
import type { PoolRow } from '../store/schema.js';
import { openStore, type Store } from '../store/store.js';
import { ENV_OVERRIDE_TAG_PREFIX } from '../stacks/modes.js';
import { startBackend, type TestBackend } from '../router/test-backends.js';
import { EnvironmentHealer, type HealDeps } from './heal.js';
import { HostRelease } from './release.js';
import { EnvironmentRoutes } from './routes.js';

const T = 'default';
const at = { file: 'berth.yaml', line: 1, column: 1 };
const service = (name: string, port: number, dependsOn: string[]) => ({ name, cmd: 'run', env: {}, envAt: {}, ports: [port], dependsOn, restart: { policy: 'always' as const }, at, from: 'services' as const });
// web (routed) depends on api: web's hosts are told api's addresses, nobody is told web's.
const stack: StackSpec = { name: 's', at, secrets: [], services: { api: service('api', 9000, []), web: service('web', 8080, ['api']) } };

describe('EnvironmentHealer', () => {
  let store: Store;
  let envs: EnvironmentsRepo;
  let hosts: HostsRepo;
  let routes: Map<string, RouteSpec>;
  let released: string[];
  let redeployed: string[];
  let placedMore: { service: string; kept: string[] }[];
  let duringPlace: (() => Promise<void>) | undefined;
  let claims: number;
  let failClaims: boolean;
  let logs: string[];
  let healer: EnvironmentHealer;
  let healerDeps: HealDeps;
  let backend: TestBackend;

  // Every fake host is 127.0.0.1: a new one must answer on the routed port over the network.
  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
    backend = await startBackend('any-host');
  });
  afterAll(async () => {
    await backend.kill();
    await store.close();
  });

  /** A host in the store in `state`, at 127.0.0.1. */
  const host = async (id: string, state: 'running' | 'lost' | 'terminated' | 'failed') => {
    await hosts.insert({ id, tenantId: T, driver: 'test', image: '/', hostname: id, tags: {}, resources: {}, agentTokenHash: 'x' });
    await store.db.updateTable('hosts').set({ state, ip: '127.0.0.1' }).where('id', '=', id).execute();
  };
  /** Service mode: `service:id`, e.g. `api:s1`. */
  const env = async (name: string, mode: 'review' | 'service', ids: string[], state: 'ready' | 'deploying' = 'ready') => {
    await envs.insert({ tenantId: T, name, stack: 's', pool: 'p', mode, ref: 'v1', command: null, replicas: ids.length, owner: null, settings: { A: '1' }, expiresAt: null });
    const record = (id: string) => (mode === 'service' ? { hostId: id.split(':')[1] ?? id, service: id.split(':')[0] ?? null } : { hostId: id, service: null });
    await envs.transition(T, name, ['creating'], 'ready', { hosts: ids.map((id) => ({ ...record(id), generation: 1 })), route: { service: 'web', port: 8080, healthPath: '/', generation: 1 } });
    if (state !== 'ready') await envs.transition(T, name, ['ready'], state);
  };

  beforeEach(() => {
    envs = new EnvironmentsRepo(store.db);
    hosts = new HostsRepo(store.db);
    routes = new Map();
    released = [];
    redeployed = [];
    placedMore = [];
    duringPlace = undefined;
    claims = 0;
    failClaims = false;
    logs = [];
    const log = (line: string) => logs.push(line);
    healerDeps = {
      envs,
      placement: {
        claim: async (_t, pool, input) => {
          if (failClaims) throw new BerthError('pool_empty', `pool ${pool} has no ready host`, 'Wait.');
          const id = `new-${++claims}`;
          await host(id, 'running');
          // A review host of the environment, with its settings.
          expect(input.tags).toMatchObject({ 'berth.mode': 'review', [`${ENV_OVERRIDE_TAG_PREFIX}A`]: '1' });
          return { id: `c-${id}`, pool, group: input.group, timings: {}, host: { id, ip: '127.0.0.1' } } as unknown as ClaimView;
        },
        awaitServicesReady: () => Promise.resolve(),
      },
      routes: new EnvironmentRoutes({ router: { setRoute: (name, spec) => (routes.set(name, spec), { name } as never) }, hosts: { get: (t, id) => hosts.get(t, id) } }),
      hostRelease: new HostRelease({ pools: { get: () => Promise.resolve({ on_release: 'terminate' } as PoolRow) }, release: (_t, id) => (released.push(id), Promise.resolve()), log }, undefined),
      stackOf: () => Promise.resolve({ spec: stack, target: { service: 'web', port: backend.port, healthPath: '/' }, init: [], slugDigest: null }),
      redeploy: (row, why) => (redeployed.push(`${row.name}: ${why}`), Promise.resolve()),
      // Service mode in place: the environment service's placement (tested on real hosts in test/e2e/environment-heal.test.ts).
      placeMore: async (_row, _stack, more) => {
        for (const [name, count] of Object.entries(more.counts)) {
          for (let i = 0; i < count; i++) {
            const id = `new-${++claims}`;
            await host(id, 'running');
            placedMore.push({ service: name, kept: more.existing.map((h) => h.hostId) });
            more.claimed.push({ hostId: id, service: name, generation: more.generation });
          }
        }
        await duringPlace?.();
        return { timings: { claimMs: 1 } };
      },
      log,
      retryMs: 1000,
      waitS: 1,
    };
    healer = new EnvironmentHealer(healerDeps);
  });
  afterEach(async () => {
    await store.db.deleteFrom('environments').execute();
    await store.db.deleteFrom('hosts').execute();
    await store.db.deleteFrom('environment_timings').execute();
  });

  it('counts as lost the hosts of ready environments that are lost, failed, terminated or not in the store', async () => {
    await host('a1', 'running');
    await host('a2', 'lost');
    await host('b1', 'terminated');
    await host('c1', 'failed');
    await env('a', 'review', ['a1', 'a2', 'a-gone']);
    await env('b', 'review', ['b1']);
    await env('c', 'review', ['c1'], 'deploying');
    expect((await envs.lostHosts()).map((l) => `${l.name} ${l.hostId} ${l.state ?? '-'}`)).toEqual(['a a2 lost', 'a a-gone -', 'b b1 terminated']);
  });

  it('replaces lost review hosts in place: the others kept, the route set, the reason recorded', async () => {
    await host('a1', 'running');
    await host('a2', 'lost');
    await env('a', 'review', ['a1', 'a2']);
    expect(await healer.sweep()).toEqual(['a']);
    const row = await envs.get(T, 'a');
    expect(row).toMatchObject({ state: 'ready', hosts: [{ hostId: 'a1', generation: 1 }, { hostId: 'new-1', generation: 1 }] });
    expect(row?.state_reason).toBe('replaced a2 (a2 lost) with new-1');
    expect(row?.operation).toBe('heal');
    expect(await store.db.selectFrom('environment_timings').select(['environment', 'operation']).execute()).toEqual([{ environment: 'a', operation: 'heal' }]);
    expect(routes.get('a')?.backends.map((b) => b.id)).toEqual(['a1', 'new-1']);
    expect(released).toEqual([]);
    expect(await healer.sweep()).toEqual([]); // nothing lost any more
  });

  it('heals soon after a host goes, but never once stopped (the server stopping, berth down)', async () => {
    await host('s1', 'lost');
    await env('s', 'review', ['s1']);
    healer.stop();
    healer.soon();
    await new Promise((r) => setTimeout(r, 200));
    expect(claims).toBe(0);
    // A healer that was not stopped does replace it, in a moment.
    const live = new EnvironmentHealer(healerDeps);
    live.soon();
    const deadline = Date.now() + 5000;
    while (claims === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    live.stop();
    expect(claims).toBe(1);
  });

  it('gives back what a failed heal claimed, says why, and tries again only after its wait', async () => {
    await host('a2', 'terminated');
    await env('a', 'review', ['a2']);
    failClaims = true;
    const t0 = Date.now();
    expect(await healer.sweep(t0)).toEqual(['a']);
    expect(await envs.get(T, 'a')).toMatchObject({ state: 'ready', hosts: [{ hostId: 'a2' }], state_reason: 'could not replace a2 (a2 terminated): pool p has no ready host' });
    expect(logs.at(-1)).toMatch(/could not replace lost a2: pool p has no ready host; trying again in 1 s$/);
    expect(await healer.sweep(t0 + 500)).toEqual([]);
    expect(await healer.sweep(Date.now() + 1100)).toEqual(['a']);
    expect(logs.at(-1)).toMatch(/trying again in 2 s$/);
    failClaims = false;
    expect(await healer.sweep(Date.now() + 2100)).toEqual(['a']);
    expect(await envs.get(T, 'a')).toMatchObject({ state: 'ready', hosts: [{ hostId: 'new-1' }] });
  });

  it('redeploys a service-mode environment whose lost host others are told the address of, and leaves environments that are busy alone', async () => {
    await host('s1', 'lost');
    await host('s2', 'running');
    await host('d1', 'lost');
    await env('svc', 'service', ['api:s1', 'web:s2']);
    await env('busy', 'review', ['d1'], 'deploying');
    expect(await healer.sweep()).toEqual(['svc']);
    expect(redeployed).toEqual(['svc: replacing lost s1 (api)']);
    expect(claims).toBe(0);
  });

  it('replaces a lost service host in place when nobody is told its address (the routed web): the others kept', async () => {
    await host('a1', 'running');
    await host('w1', 'running');
    await host('w2', 'lost');
    await env('svc', 'service', ['api:a1', 'web:w1', 'web:w2']);
    expect(await healer.sweep()).toEqual(['svc']);
    expect(redeployed).toEqual([]);
    expect(placedMore).toEqual([{ service: 'web', kept: ['a1', 'w1'] }]);
    const row = await envs.get(T, 'svc');
    expect(row).toMatchObject({ state: 'ready', operation: 'heal', hosts: [{ hostId: 'a1', service: 'api', generation: 1 }, { hostId: 'w1', service: 'web', generation: 1 }, { hostId: 'new-1', service: 'web', generation: 1 }] });
    expect(row?.state_reason).toBe('replaced w2 (web) (w2 lost) with new-1');
    expect(await healer.sweep()).toEqual([]);
  });

  it('gives back a replacement it placed but could not record (the environment changed meanwhile), never reused', async () => {
    await host('a1', 'running');
    await host('w1', 'lost');
    await env('svc', 'service', ['api:a1', 'web:w1']);
    // Something else takes the environment while the replacement is placed.
    duringPlace = async () => void (await store.db.updateTable('environments').set({ state: 'removing' }).where('name', '=', 'svc').execute());
    expect(await healer.sweep()).toEqual(['svc']);
    expect(released).toEqual(['new-1']);
    expect(logs.at(-1)).toMatch(/^environment svc: could not replace lost w1 \(web\): it changed while it healed; trying again in/);
  });
});
