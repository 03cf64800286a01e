/**
 * Service mode with counts per service (`--replicas 1 --replicas web=2`, `env scale NAME web=3`), on
 * real hosts through the real CLI and router: each service gets its own number of hosts, a change
 * of one count keeps the others, `N` alone makes every service N, `env up` converges to the counts
 * it is given, and what cannot be (a service the stack has not, a review environment's service, a
 * count below one) is refused changing nothing.
 */
import { describe, expect, it } from 'vitest';
import type { UpsertResult } from '../../src/environments/upsert.js';
import type { EnvironmentView } from '../../src/environments/views.js';
import { berth } from '../helpers/server.js';
import { routerGet, shopYaml, useStackServer } from '../helpers/stack-server.js';

const NET = { bridge: 'berthrep0', subnet: '10.255.0.0/22', cgroupName: 'berthrep' };

const berthYaml = shopYaml(`'web of %s\\n' "$BERTH_ENVIRONMENT"`, 4);

/** Each service's number of hosts, e.g. `{ api: 1, web: 2 }`. */
function perService(view: EnvironmentView): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const h of view.hosts) counts[h.service ?? '(all)'] = (counts[h.service ?? '(all)'] ?? 0) + 1;
  return counts;
}

describe('service mode with counts per service', () => {
  const stack = useStackServer(NET, berthYaml, { shop: 4 });
  const routerPort = () => stack.routerPort();
  const show = async (name: string) => (await stack.srv.api.get<EnvironmentView>(`/v1/environments/${name}`)).body;
  const scale = async (name: string, counts: string[]) => {
    const res = await berth(['env', 'scale', name, ...counts, '--json'], stack.env, { timeoutMs: 90_000 });
    expect(res.code, res.stderr).toBe(0);
    return JSON.parse(res.stdout) as EnvironmentView;
  };

  it('gives each service its own number of hosts; one count changed keeps the others, N alone makes every service N', async () => {
    const made = await berth(['env', 'create', 'fleet', '--stack', 'shop', '--mode', 'service', '--replicas', '1', '--replicas', 'web=2', '--json'], stack.env, { timeoutMs: 90_000 });
    expect(made.code, made.stderr).toBe(0);
    const created = JSON.parse(made.stdout) as EnvironmentView;
    expect(created).toMatchObject({ state: 'ready', replicas: 1, serviceReplicas: { web: 2 } });
    expect(perService(created)).toEqual({ api: 1, web: 2 });
    // The router spreads over both web hosts, and only them.
    expect(created.backends?.map((b) => b.id).sort()).toEqual(created.hosts.filter((h) => h.service === 'web').map((h) => h.hostId).sort());
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const answer = await routerGet(routerPort(), 'fleet');
      expect(answer.body).toBe('web of fleet\n');
      seen.add(String(answer.headers['x-berth-backend']));
    }
    expect(seen.size).toBe(2);
    const shown = await berth(['env', 'show', 'fleet'], stack.env);
    expect(shown.stdout).toContain('stack:    shop (service, 1 replica (web 2)) from pool shop');

    // web to 3 under a steady load: in place (nothing above web is told its address), no request lost.
    let stop = false;
    const failures: string[] = [];
    const load = (async () => {
      while (!stop) {
        const answer = await routerGet(routerPort(), 'fleet').catch((err: unknown) => ({ status: 0, body: String(err) }));
        if (answer.status !== 200) failures.push(`${answer.status} ${answer.body}`);
      }
    })();
    const web3 = await scale('fleet', ['web=3']);
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await load;
    expect(failures).toEqual([]);
    expect(web3).toMatchObject({ state: 'ready', replicas: 1, serviceReplicas: { web: 3 } });
    expect(perService(web3)).toEqual({ api: 1, web: 3 });
    expect(web3.backends).toHaveLength(3);
    // Every host it had stays, and the one new host runs web: nothing else was replaced.
    const ids = (view: EnvironmentView) => view.hosts.map((h) => h.hostId);
    expect(ids(web3)).toEqual(expect.arrayContaining(ids(created)));
    expect(web3.hosts.filter((h) => !ids(created).includes(h.hostId)).map((h) => h.service)).toEqual(['web']);
    // What the scale took, stage by stage, is the environment's timings now.
    expect(web3.operation).toBe('scale');
    expect(web3.timings).toMatchObject({ claimMs: expect.any(Number) as unknown, routeMs: expect.any(Number) as unknown, totalMs: expect.any(Number) as unknown });

    // api listens on no port (no host is told its address): in place too.
    const api2 = await scale('fleet', ['api=2']);
    expect(api2.serviceReplicas).toEqual({ api: 2, web: 3 });
    expect(perService(api2)).toEqual({ api: 2, web: 3 });
    expect(ids(api2)).toEqual(expect.arrayContaining(ids(web3)));
    const newApi = api2.hosts.find((h) => !ids(web3).includes(h.hostId));
    expect(newApi?.service).toBe('api');
    // The new host runs api alone, as its sibling does.
    const services = async (hostId: string) => (await stack.srv.api.get<{ services: { name: string; status: { state: string } | null }[] }>(`/v1/hosts/${hostId}/services`)).body.services.map((x) => `${x.name}:${x.status?.state ?? '-'}`);
    expect(await services(newApi?.hostId ?? '')).toEqual(await services(created.hosts.find((h) => h.service === 'api')?.hostId ?? ''));
    expect(await services(newApi?.hostId ?? '')).toEqual(['api:ready']);

    const human = await berth(['env', 'scale', 'fleet', '1'], stack.env, { timeoutMs: 90_000 });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toBe('fleet: 1 replica, 2 hosts (3 released)\n');
    const one = await show('fleet');
    expect({ replicas: one.replicas, own: one.serviceReplicas, hosts: perService(one) }).toEqual({ replicas: 1, own: {}, hosts: { api: 1, web: 1 } });
    expect(one).toMatchObject({ operation: 'scale', timings: { drainMs: expect.any(Number) as unknown, releaseMs: expect.any(Number) as unknown } });
    // Fewer, in place: the oldest of each service stay, the others went back to the pool.
    expect(ids(one).sort()).toEqual([created.hosts.find((h) => h.service === 'api')?.hostId, created.hosts.find((h) => h.service === 'web')?.hostId].sort());
    expect(one.backends?.map((b) => b.id)).toEqual(one.hosts.filter((h) => h.service === 'web').map((h) => h.hostId));
    for (const h of api2.hosts.filter((x) => !ids(one).includes(x.hostId))) {
      expect((await stack.srv.api.get<{ group: string | null; state: string }>(`/v1/hosts/${h.hostId}`)).body).not.toMatchObject({ group: 'fleet', state: 'running' });
    }
  });

  it('refuses a service the stack has not, counts for a review environment, and counts below one, changing nothing', async () => {
    const before = await show('fleet');
    const refused: Array<[string[], RegExp]> = [
      [['env', 'scale', 'fleet', 'db=2'], /stack shop has no service db\b.*Its services: api, web/s],
      [['env', 'scale', 'fleet', 'web=0'], /replicas must be at least 1/],
      [['env', 'scale', 'fleet', 'web=two'], /give a whole number \(every service\) or SERVICE=N/],
      [['env', 'create', 'solo', '--stack', 'shop', '--replicas', 'web=2'], /a review environment runs every service on each host, so web cannot have a count of its own/],
      [['env', 'up', 'fleet', '--stack', 'shop', '--replicas', 'db=1'], /stack shop has no service db/],
    ];
    for (const [args, message] of refused) {
      const res = await berth(args, stack.env, { timeoutMs: 60_000 });
      expect([args.join(' '), res.code, res.stderr]).toEqual([args.join(' '), 2, expect.stringMatching(message)]);
    }
    const after = await show('fleet');
    expect({ hosts: after.hosts, state: after.state, own: after.serviceReplicas }).toEqual({ hosts: before.hosts, state: before.state, own: before.serviceReplicas });
    expect((await stack.srv.api.get('/v1/environments/solo')).status).toBe(404);
    const claimed = (await stack.srv.api.get<{ hosts: { slot: string | null }[] }>('/v1/pools/shop/hosts')).body.hosts.filter((h) => h.slot === 'claimed');
    expect(claimed).toHaveLength(after.hosts.length);
  });

  it('env up converges to the counts it is given, and changes nothing the second time', async () => {
    const up = async () => {
      const res = await berth(['env', 'up', 'fleet', '--stack', 'shop', '--mode', 'service', '--replicas', '1', '--replicas', 'web=2', '--json'], stack.env, { timeoutMs: 90_000 });
      expect(res.code, res.stderr).toBe(0);
      return JSON.parse(res.stdout) as UpsertResult;
    };
    const first = await up();
    expect(first).toMatchObject({ action: 'scaled', changes: ['scaled from 1 replica to 1 replica (web 2)'] });
    expect(perService(first.environment)).toEqual({ api: 1, web: 2 });
    const second = await up();
    expect(second).toMatchObject({ action: 'unchanged', changes: [] });
    expect(second.environment.hosts).toEqual(first.environment.hosts);
    expect((await berth(['env', 'rm', 'fleet'], stack.env)).code).toBe(0);
  });
});
