/**
 * The edge between environments and a driver's load balancing: EnvironmentService with a recording
 * ServiceLoadBalancing, the environments table on an in-memory PGlite, and claims, hosts, pools and
 * the router faked (what they do is tested elsewhere). Proves which hosts the hook gets and when:
 * at create before the route, at deploy the new hosts attached before the old ones are detached, at
 * rm the groups removed before the hosts are released; a failure undoes what was attached, and a host
 * that may still be registered is terminated rather than reused. The AWS side runs against moto in
 * test/drivers/aws-service-lb-moto.test.ts.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import type { ClaimView } from '../pools/views.js';
import type { RouteSpec, RouteView } from '../router/router.js';
import type { StackService, StackSpec } from '../stacks/spec.js';
import { EnvironmentsRepo } from '../store/environments-repo.js';
import type { HostRow, PoolRow, StackRow } from '../store/schema.js';
import { openStore, type Store } from '../store/store.js';
import { rejection } from '../../test/helpers/errors.js';
import { EnvironmentService } from './environment-service.js';
import { balancedServices, type BalancedEnvironment, type BalancedHost, type BalancedService, type ServiceLoadBalancing } from './load-balancing.js';
import { createEnvironmentBody } from './spec.js';

const TENANT = 'default';
const at = { file: 'berth.yaml', line: 1, column: 1 };

/** Every call, in order, with the hosts by id; `fail` makes the next call for a service throw. */
class RecordingLoadBalancing implements ServiceLoadBalancing {
  readonly calls: { op: 'attach' | 'detach' | 'remove'; env: string; service: string; port?: number; healthPath?: string; hosts: string[]; driverData: Record<string, unknown>[] }[] = [];
  readonly fail = new Map<string, 'attach' | 'detach' | 'remove'>();

  constructor(private readonly events: string[]) {}

  attach(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[], opts: { deadline: number }): Promise<void> {
    expect(opts.deadline).toBeGreaterThan(Date.now());
    return this.record('attach', env, service.name, hosts, service);
  }

  detach(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[]): Promise<void> {
    return this.record('detach', env, service.name, hosts, service);
  }

  async remove(env: BalancedEnvironment, services: readonly string[]): Promise<void> {
    for (const s of services) await this.record('remove', env, s, []);
  }

  private async record(op: 'attach' | 'detach' | 'remove', env: BalancedEnvironment, service: string, hosts: BalancedHost[], spec?: BalancedService): Promise<void> {
    await Promise.resolve();
    const ids = hosts.map((h) => h.id).sort();
    this.calls.push({ op, env: env.name, service, ...(spec ? { port: spec.port, ...(spec.healthPath ? { healthPath: spec.healthPath } : {}) } : {}), hosts: ids, driverData: hosts.map((h) => h.driverData) });
    this.events.push(`${op} ${service}${ids.length ? ` ${ids.join(',')}` : ''}`);
    if (this.fail.get(service) === op) throw new BerthError('deadline_exceeded', `${op} of ${service} failed`, 'Test.');
  }
}

function service(name: string, over: Partial<StackService> = {}): StackService {
  return { name, cmd: `run ${name}`, env: {}, envAt: {}, ports: [], dependsOn: [], restart: { policy: 'always' }, at, from: 'services', ...over };
}

describe('environments with a load balancing hook', () => {
  let store: Store;
  let backend: http.Server;
  let port: number;
  let events: string[];
  let lb: RecordingLoadBalancing;
  let hosts: Map<string, HostRow>;
  let released: { hostId: string; reuse: boolean }[];
  let logs: string[];
  let svc: EnvironmentService;
  let n = 0;

  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
    // Every fake host is 127.0.0.1: the routed service's network check must get an answer.
    backend = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    port = (backend.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => backend.close(resolve));
    await store.close();
  });

  const stack = (): StackSpec => ({
    name: 'shop',
    at,
    secrets: [],
    services: {
      api: service('api', { ports: [port], ready: { http: { port, path: '/healthz' } } }),
      db: service('db', { ports: [5432], ready: { tcp: { port: 5432 } } }),
      worker: service('worker', { dependsOn: ['api'] }),
      web: service('web', { ports: [port], dependsOn: ['api'] }),
    },
  });

  beforeEach(() => {
    events = [];
    lb = new RecordingLoadBalancing(events);
    hosts = new Map();
    released = [];
    logs = [];
    const route = new Map<string, RouteSpec>();
    svc = new EnvironmentService({
      envs: new EnvironmentsRepo(store.db),
      stacks: { get: (tenantId, name) => Promise.resolve({ tenant_id: tenantId, name, spec: stack() as unknown as Record<string, unknown>, config: {} } as StackRow), put: () => Promise.resolve() },
      pools: { get: (_tenantId, name) => Promise.resolve({ name, on_release: 'reuse' } as PoolRow), getRecent: (_tenantId, name) => Promise.resolve({ name, on_release: 'reuse' } as PoolRow) },
      hosts: { get: (_tenantId, id) => Promise.resolve(hosts.get(id)) },
      placement: {
        claim: (_tenantId, pool, input) => {
          const id = `h${++n}`;
          const serviceName = input.tags['berth.service'] ?? 'review';
          hosts.set(id, { id, ip: '127.0.0.1', state: 'claimed', driver_data: { instanceId: `i-${String(n).padStart(17, '0')}`, fleet: true, group: `berth-group-${input.group}` } } as Partial<HostRow> as HostRow);
          events.push(`claim ${serviceName} ${id}`);
          return Promise.resolve({ id: `c-${id}`, pool, group: input.group, timings: {}, host: { id, ip: '127.0.0.1' } } as ClaimView);
        },
        awaitServicesReady: () => Promise.resolve(),
      },
      changeHostTags: () => Promise.reject(new Error('not in these tests')),
      services: { get: () => Promise.reject(new Error('not in these tests')), act: () => Promise.reject(new Error('not in these tests')), waitFor: () => Promise.reject(new Error('not in these tests')) },
      release: (_tenantId, hostId, opts) => {
        released.push({ hostId, reuse: opts.reuse });
        events.push(`release ${hostId}`);
        return Promise.resolve();
      },
      router: {
        setRoute: (name, spec) => {
          route.set(name, spec);
          events.push(`route ${spec.backends.map((b) => b.id).join(',')}`);
          return { name } as RouteView;
        },
        removeRoute: (name) => {
          events.push('unroute');
          return route.delete(name);
        },
        route: () => undefined,
        setDraining: () => false,
        idleMs: () => undefined,
      },
      log: (line) => logs.push(line),
      drainMs: 0,
      loadBalancing: lb,
    });
  });

  afterEach(async () => {
    await store.db.deleteFrom('environments').execute();
  });

  const create = (name: string, over: Record<string, unknown> = {}) => svc.create(TENANT, createEnvironmentBody.parse({ name, stack: 'shop', mode: 'service', replicas: 2, wait: 10, ...over }));
  const hostsOf = (view: { hosts: { hostId: string; service: string | null }[] }, s: string) => view.hosts.filter((h) => h.service === s).map((h) => h.hostId).sort();

  it('balances services with an HTTP port: api on its ready path, web on /; not the worker (no port) nor db (TCP)', () => {
    expect(balancedServices(stack())).toEqual({
      services: [{ name: 'api', port, healthPath: '/healthz' }, { name: 'web', port }],
      skipped: [
        { name: 'db', why: 'its ready check is TCP only, so port 5432 is taken for one that does not speak HTTP' },
        { name: 'worker', why: 'it has no port (no ports: and no ready http check)' },
      ],
    });
  });

  it('create in service mode attaches each balanced service\'s hosts, with their driver data, before the route', async () => {
    const view = await create('prod');
    const api = hostsOf(view, 'api');
    const web = hostsOf(view, 'web');
    expect(api).toHaveLength(2);
    expect(lb.calls.map(({ op, env, service, port: p, healthPath, hosts: ids }) => ({ op, env, service, port: p, healthPath, hosts: ids }))).toEqual([
      { op: 'attach', env: 'prod', service: 'api', port, healthPath: '/healthz', hosts: api },
      { op: 'attach', env: 'prod', service: 'web', port, healthPath: undefined, hosts: web },
    ]);
    expect(lb.calls[0]?.driverData).toEqual(api.map((id) => hosts.get(id)?.driver_data));
    expect(events.indexOf(`attach web ${web.join(',')}`)).toBeLessThan(events.indexOf(`route ${web.join(',')}`));
    expect(logs).toEqual(['environment prod: service db is not load balanced: its ready check is TCP only, so port 5432 is taken for one that does not speak HTTP', 'environment prod: service worker is not load balanced: it has no port (no ports: and no ready http check)']);
    expect(view.timings['balanceMs']).toBeGreaterThanOrEqual(0);
  });

  it('review mode never calls it', async () => {
    const view = await create('review-1', { mode: 'review' });
    await svc.deploy(TENANT, 'review-1', 'v2', 10);
    await svc.remove(TENANT, 'review-1');
    expect(view.hosts).toHaveLength(2);
    expect(lb.calls).toEqual([]);
    expect(released.every((r) => r.reuse)).toBe(true);
  });

  it('deploy attaches the new hosts, switches the route, then detaches the old ones before releasing them', async () => {
    const before = await create('prod');
    lb.calls.length = 0;
    events.length = 0;
    const after = await svc.deploy(TENANT, 'prod', 'v2', 10);
    const [oldApi, oldWeb, newApi, newWeb] = [hostsOf(before, 'api'), hostsOf(before, 'web'), hostsOf(after, 'api'), hostsOf(after, 'web')];
    expect(newApi.some((id) => oldApi.includes(id))).toBe(false);
    const calls = lb.calls.map((c) => `${c.op} ${c.service} ${c.hosts.join(',')}`);
    expect(calls.slice(0, 2)).toEqual([`attach api ${newApi.join(',')}`, `attach web ${newWeb.join(',')}`]);
    // The old generation leaves per service, each service as the new stack defines it; a service
    // not balanced now loses any group an older stack may have given it.
    expect(calls.slice(2).sort()).toEqual([`detach api ${oldApi.join(',')}`, `detach web ${oldWeb.join(',')}`, 'remove db ', 'remove worker '].sort());
    const lastAttach = events.indexOf(`attach web ${newWeb.join(',')}`);
    expect(lastAttach).toBeLessThan(events.indexOf(`route ${newWeb.join(',')}`));
    const firstDetach = events.findIndex((e) => e.startsWith('detach'));
    expect(events.indexOf(`route ${newWeb.join(',')}`)).toBeLessThan(firstDetach);
    expect(firstDetach).toBeLessThan(events.findIndex((e) => e.startsWith('release')));
    expect(released.map((r) => r.hostId).sort()).toEqual(before.hosts.map((h) => h.hostId).sort());
    expect(released.every((r) => r.reuse)).toBe(true);
  });

  it('a deploy whose attach fails detaches what it attached, keeps the old hosts attached, and terminates new hosts it could not detach', async () => {
    const before = await create('prod');
    lb.calls.length = 0;
    lb.fail.set('web', 'attach');
    lb.fail.set('api', 'detach');
    const err = await rejection(svc.deploy(TENANT, 'prod', 'v2', 10));
    expect(err.message).toBe('attach of web failed');
    const attached = lb.calls.filter((c) => c.op === 'attach');
    const [newApi, newWeb] = [attached[0]?.hosts ?? [], attached[1]?.hosts ?? []];
    expect(lb.calls.filter((c) => c.op !== 'attach').map((c) => `${c.op} ${c.service} ${c.hosts.join(',')}`).sort()).toEqual([`detach api ${newApi.join(',')}`, `detach web ${newWeb.join(',')}`]);
    expect(Object.fromEntries(released.map((r) => [r.hostId, r.reuse]))).toMatchObject({ ...Object.fromEntries(newApi.map((id) => [id, false])), ...Object.fromEntries(newWeb.map((id) => [id, true])) });
    expect(released.some((r) => before.hosts.some((h) => h.hostId === r.hostId))).toBe(false);
    expect(logs.some((l) => l.includes('detaching service api') && l.includes('terminated, not reused'))).toBe(true);
    expect((await svc.get(TENANT, 'prod')).hosts).toEqual(before.hosts);
  });

  it('a create whose attach fails removes the groups it attached and releases every host', async () => {
    lb.fail.set('web', 'attach');
    await rejection(create('prod'));
    expect(lb.calls.map((c) => `${c.op} ${c.service}`)).toEqual(['attach api', 'attach web', 'remove api', 'remove web']);
    expect(released).toHaveLength(8);
    expect(released.every((r) => r.reuse)).toBe(true);
    expect(await store.db.selectFrom('environments').selectAll().execute()).toEqual([]);
  });

  it('rm removes every service\'s group before releasing; hosts of a group that stayed are terminated', async () => {
    const view = await create('prod');
    events.length = 0;
    lb.calls.length = 0;
    await svc.remove(TENANT, 'prod');
    expect(lb.calls.map((c) => `${c.op} ${c.env} ${c.service}`).sort()).toEqual(['remove prod api', 'remove prod db', 'remove prod web', 'remove prod worker']);
    expect(events.findLastIndex((e) => e.startsWith('remove'))).toBeLessThan(events.findIndex((e) => e.startsWith('release')));
    expect(released.map((r) => r.hostId).sort()).toEqual(view.hosts.map((h) => h.hostId).sort());
    expect(released.every((r) => r.reuse)).toBe(true);

    const again = await create('prod');
    released.length = 0;
    lb.fail.set('web', 'remove');
    await svc.remove(TENANT, 'prod');
    expect(released.map((r) => r.hostId).sort()).toEqual(again.hosts.map((h) => h.hostId).sort());
    expect(released.every((r) => !r.reuse)).toBe(true);
    expect(logs.at(-1)).toMatch(/^environment prod removed: removing the load balancing of .*remove of web failed; its hosts will be terminated, not reused$/);
  });

  it('sleep removes every service\'s group before releasing the hosts; a wake attaches its new hosts before the route', async () => {
    const view = await create('prod');
    events.length = 0;
    lb.calls.length = 0;
    released.length = 0;
    expect(await svc.sleep(TENANT, 'prod')).toMatchObject({ state: 'sleeping', hosts: [] });
    expect(lb.calls.map((c) => `${c.op} ${c.service}`).sort()).toEqual(['remove api', 'remove db', 'remove web', 'remove worker']);
    expect(events.findLastIndex((e) => e.startsWith('remove'))).toBeLessThan(events.findIndex((e) => e.startsWith('release')));
    expect(released.map((r) => r.hostId).sort()).toEqual(view.hosts.map((h) => h.hostId).sort());
    expect(released.every((r) => r.reuse)).toBe(true);

    lb.calls.length = 0;
    events.length = 0;
    const awake = await svc.wake(TENANT, 'prod', 10);
    expect(awake).toMatchObject({ state: 'ready', operation: 'wake' });
    const [api, web] = [hostsOf(awake, 'api'), hostsOf(awake, 'web')];
    expect(api.some((id) => view.hosts.some((h) => h.hostId === id))).toBe(false);
    expect(lb.calls.map((c) => `${c.op} ${c.service} ${c.hosts.join(',')}`)).toEqual([`attach api ${api.join(',')}`, `attach web ${web.join(',')}`]);
    expect(events.indexOf(`attach web ${web.join(',')}`)).toBeLessThan(events.indexOf(`route ${web.join(',')}`));
  });

  it('scales service mode by a deploy on the new count: new hosts attached before the route, the old ones detached after', async () => {
    const before = await create('prod');
    lb.calls.length = 0;
    events.length = 0;
    const after = await svc.scale(TENANT, 'prod', { replicas: 1 }, 10);
    expect(after).toMatchObject({ state: 'ready', replicas: 1 });
    const [api, web] = [hostsOf(after, 'api'), hostsOf(after, 'web')];
    expect([api.length, web.length, after.hosts.length]).toEqual([1, 1, 4]);
    expect(after.hosts.some((h) => before.hosts.some((b) => b.hostId === h.hostId))).toBe(false);
    const calls = lb.calls.map((c) => `${c.op} ${c.service} ${c.hosts.join(',')}`);
    expect(calls.slice(0, 2)).toEqual([`attach api ${api.join(',')}`, `attach web ${web.join(',')}`]);
    expect(calls.slice(2).filter((c) => c.startsWith('detach')).sort()).toEqual([`detach api ${hostsOf(before, 'api').join(',')}`, `detach web ${hostsOf(before, 'web').join(',')}`]);
    expect(events.indexOf(`route ${web.join(',')}`)).toBeLessThan(events.findIndex((e) => e.startsWith('detach')));
  });

  it('gives services their own counts: each its hosts, the load balancer all of them; a count changed by a deploy, recorded while asleep', async () => {
    const view = await create('prod', { replicas: 1, serviceReplicas: { web: 3, worker: 2 } });
    expect(view).toMatchObject({ replicas: 1, serviceReplicas: { web: 3, worker: 2 } });
    expect([hostsOf(view, 'api').length, hostsOf(view, 'db').length, hostsOf(view, 'web').length, hostsOf(view, 'worker').length]).toEqual([1, 1, 3, 2]);
    expect(lb.calls.find((c) => c.op === 'attach' && c.service === 'web')?.hosts).toEqual(hostsOf(view, 'web'));

    // One count changed: the others kept; the change is a deploy (new hosts for every service).
    const scaled = await svc.scale(TENANT, 'prod', { services: { api: 2 } }, 10);
    expect(scaled.serviceReplicas).toEqual({ api: 2, web: 3, worker: 2 });
    expect([hostsOf(scaled, 'api').length, hostsOf(scaled, 'db').length, hostsOf(scaled, 'web').length, hostsOf(scaled, 'worker').length]).toEqual([2, 1, 3, 2]);
    expect(scaled.hosts.some((h) => view.hosts.some((b) => b.hostId === h.hostId))).toBe(false);
    // The same counts again: nothing done.
    expect((await svc.scale(TENANT, 'prod', { services: { api: 2 } }, 10)).hosts).toEqual(scaled.hosts);

    await svc.sleep(TENANT, 'prod');
    const asleep = await svc.scale(TENANT, 'prod', { replicas: 2, services: { web: 1 } }, 10);
    expect(asleep).toMatchObject({ state: 'sleeping', hosts: [], replicas: 2, serviceReplicas: { web: 1 } });
    const awake = await svc.wake(TENANT, 'prod', 10);
    expect([hostsOf(awake, 'api').length, hostsOf(awake, 'db').length, hostsOf(awake, 'web').length, hostsOf(awake, 'worker').length]).toEqual([2, 2, 1, 2]);
  });

  it('scales in place the services no host is told the address of (web, worker): only their new hosts attached, before the route; leaving ones detached, then released', async () => {
    const view = await create('prod', { replicas: 1, serviceReplicas: { web: 2 } });
    lb.calls.length = 0;
    events.length = 0;
    const calls = () => lb.calls.map((c) => `${c.op} ${c.service} ${c.hosts.join(',')}`);
    const more = await svc.scale(TENANT, 'prod', { services: { web: 3, worker: 2 } }, 10);
    expect(more).toMatchObject({ state: 'ready', replicas: 1, serviceReplicas: { web: 3, worker: 2 } });
    const added = more.hosts.filter((h) => !view.hosts.some((b) => b.hostId === h.hostId));
    expect(more.hosts.filter((h) => !added.includes(h))).toEqual(view.hosts);
    expect(added.map((h) => h.service).sort()).toEqual(['web', 'worker']);
    const newWeb = added.find((h) => h.service === 'web')?.hostId ?? '';
    expect(calls()).toEqual([`attach web ${newWeb}`]);
    expect(events.indexOf(`attach web ${newWeb}`)).toBeLessThan(events.findIndex((e) => e.startsWith('route ') && e.includes(newWeb)));
    expect(events.filter((e) => e.startsWith('claim')).map((e) => e.split(' ')[1]).sort()).toEqual(['web', 'worker']);
    expect(released).toEqual([]);

    lb.calls.length = 0;
    events.length = 0;
    const fewer = await svc.scale(TENANT, 'prod', { services: { web: 1, worker: 1 } }, 10);
    expect(fewer.hosts).toEqual(view.hosts.filter((h) => h.service !== 'web' || h.hostId === view.hosts.find((x) => x.service === 'web')?.hostId));
    const gone = more.hosts.filter((h) => !fewer.hosts.some((f) => f.hostId === h.hostId));
    const goneWeb = gone.filter((h) => h.service === 'web').map((h) => h.hostId).sort();
    expect(calls()).toEqual([`detach web ${goneWeb.join(',')}`]);
    expect(events.findIndex((e) => e.startsWith('route '))).toBeLessThan(events.findIndex((e) => e.startsWith('release')));
    expect(released.map((r) => r.hostId).sort()).toEqual(gone.map((h) => h.hostId).sort());
    expect(released.every((r) => r.reuse)).toBe(true);
  });

  it('a scale in place that fails gives back only its new hosts, detached from their group, and the environment runs as before', async () => {
    const view = await create('prod', { replicas: 1 });
    lb.calls.length = 0;
    released.length = 0;
    lb.fail.set('web', 'attach');
    const err = await rejection(svc.scale(TENANT, 'prod', { services: { web: 2 } }, 10));
    expect(err.message).toBe('attach of web failed');
    const newWeb = released.map((r) => r.hostId);
    expect(newWeb).toHaveLength(1);
    expect(view.hosts.some((h) => h.hostId === newWeb[0])).toBe(false);
    expect(lb.calls.map((c) => `${c.op} ${c.service} ${c.hosts.join(',')}`)).toEqual([`attach web ${newWeb[0]}`, `detach web ${newWeb[0]}`]);
    expect(await svc.get(TENANT, 'prod')).toMatchObject({ state: 'ready', hosts: view.hosts, serviceReplicas: {} });
  });

  it('refuses a count for a service the stack has not, and counts of their own in review mode, claiming nothing', async () => {
    const claimsBefore = n;
    expect((await rejection(create('prod', { serviceReplicas: { cache: 2 } }))).message).toBe('stack shop has no service cache');
    expect((await rejection(create('rev', { mode: 'review', serviceReplicas: { web: 2 } }))).code).toBe('validation_failed');
    expect(n).toBe(claimsBefore);
    expect(await store.db.selectFrom('environments').select('name').execute()).toEqual([]);
    const view = await create('prod', { replicas: 1 });
    const err = await rejection(svc.scale(TENANT, 'prod', { services: { cache: 2 } }, 10));
    expect(err).toMatchObject({ code: 'validation_failed', hint: 'Its services: api, db, worker, web.' });
    expect((await svc.get(TENANT, 'prod')).hosts).toEqual(view.hosts);
    expect(n).toBe(claimsBefore + 4);
  });

  it('after a restart, a create cut short has its groups removed; a deploy cut short terminates its new hosts', async () => {
    const envs = new EnvironmentsRepo(store.db);
    await envs.insert({ tenantId: TENANT, name: 'cut', stack: 'shop', pool: 'shop', mode: 'service', ref: null, command: null, replicas: 1, owner: null, settings: {}, expiresAt: null });
    await envs.setHosts(TENANT, 'cut', [{ hostId: 'h-a', service: 'api', generation: 1 }]);
    const ready = await create('prod', { replicas: 1 });
    await envs.transition(TENANT, 'prod', ['ready'], 'deploying');
    await envs.setHosts(TENANT, 'prod', [...ready.hosts, { hostId: 'h-new', service: 'web', generation: 2 }]);
    lb.calls.length = 0;
    released.length = 0;
    expect(await svc.recover()).toEqual({ routed: ['prod'], cleaned: ['cut'] });
    expect(lb.calls.map((c) => `${c.op} ${c.env} ${c.service}`)).toEqual(['remove cut api']);
    expect(released).toEqual([{ hostId: 'h-a', reuse: true }, { hostId: 'h-new', reuse: false }]);
  });
});
