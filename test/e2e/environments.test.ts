/**
 * Environments on real hosts through the real CLI and router: a URL that answers with each
 * environment's own config, many at once, a deploy under load that loses no request, a killed web
 * process taken out of rotation and back, TTL expiry, bad input that claims nothing, and routes that
 * come back after a server restart.
 */
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { c as createTar } from 'tar';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { EnvironmentView } from '../../src/environments/views.js';
import { berth, startServer, type InProcessServer } from '../helpers/server.js';
import { shopYaml } from '../helpers/stack-server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthenv0', subnet: '10.234.0.0/22', cgroupName: 'berthenv' };

// web writes a page from its env and serves it on every interface; api stands for the rest of a stack.
const berthYaml = shopYaml(`'hello %s from %s at %s\\n' "$GREETING" "$BERTH_ENVIRONMENT" "\${BERTH_REF:-none}"`, 2, '{GREETING: "world"}');

/** GET through the router, as a browser at http://NAME.localhost:PORT/ would. */
function viaRouter(port: number, name: string, path = '/'): Promise<{ status: number; body: string; backend: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { host: `${name}.localhost:${port}` }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, backend: res.headers['x-berth-backend'] as string | undefined }));
    });
    req.on('error', reject);
  });
}

/**
 * GETs through the router to `name`, one after the other, from now until `stop()`, which (after
 * `settleMs` more) resolves with what was seen: the 200s' bodies and every other answer.
 */
function steadyLoad(port: () => number, name: string, settleMs = 300): { stop: () => Promise<{ ok: number; failed: string[]; bodies: Set<string> }> } {
  let stopping = false;
  const seen = { ok: 0, failed: [] as string[], bodies: new Set<string>() };
  const load = (async () => {
    while (!stopping) {
      const res = await viaRouter(port(), name).catch((err: unknown) => ({ status: 0, body: String(err), backend: undefined }));
      if (res.status === 200) {
        seen.ok++;
        seen.bodies.add(res.body);
      } else seen.failed.push(`${res.status} ${res.body.slice(0, 200)}`);
    }
  })();
  return {
    stop: async () => {
      await new Promise((r) => setTimeout(r, settleMs));
      stopping = true;
      await load;
      return seen;
    },
  };
}

describe('environments', () => {
  let srv: InProcessServer;
  let env: Record<string, string>;
  let project: string;
  const routerPort = () => Number(new URL(srv.server.router.urlFor('x') ?? 'http://x:0').port);
  const create = async (args: string[]) => berth(['env', 'create', ...args, '--json'], env, { timeoutMs: 120_000 });
  const claimedHosts = async () => (await srv.api.get<{ hosts: { slot: string | null }[] }>('/v1/pools/shop/hosts')).body.hosts.filter((h) => h.slot === 'claimed').length;

  beforeAll(async () => {
    srv = await startServer(NET);
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    project = await mkdtemp(join(tmpdir(), 'berth-envs-'));
    await writeFile(join(project, 'berth.yaml'), berthYaml);
    const applied = await berth(['apply', '-f', join(project, 'berth.yaml')], env);
    expect(applied.code, applied.stderr).toBe(0);
  });
  afterAll(async () => {
    await srv.stop();
    await rm(project, { recursive: true, force: true });
  });

  it("counts a review pool's host as ready only once its stack's services are", async () => {
    const ready = await waitFor('the pool full', async () => {
      const { hosts } = (await srv.api.get<{ hosts: { id: string; slot: string | null }[] }>('/v1/pools/shop/hosts')).body;
      const r = hosts.filter((h) => h.slot === 'ready');
      return r.length >= 2 ? r : undefined;
    }, { timeoutMs: 60_000 });
    for (const host of ready) {
      const view = (await srv.api.get<{ services: { name: string; configHash: string; status: { state: string; configHash: string } | null }[] }>(`/v1/hosts/${host.id}/services`)).body;
      expect(view.services.map((s) => [s.name, s.status?.state, s.status?.configHash === s.configHash])).toEqual([
        ['api', 'ready', true],
        ['web', 'ready', true],
      ]);
    }
  });

  it('creates an environment whose URL answers with its own page, and says how long each step took', async () => {
    const created = await create(['alice', '--stack', 'shop', '--set', 'GREETING=hi', '--user', 'alice', '--ref', 'v1']);
    expect(created.code, created.stderr).toBe(0);
    const view = JSON.parse(created.stdout) as EnvironmentView;
    expect(view).toMatchObject({ name: 'alice', state: 'ready', mode: 'review', ref: 'v1', user: 'alice', settings: ['GREETING'] });
    expect(view.url).toBe(`http://alice.localhost:${routerPort()}/`);
    for (const step of ['claimMs', 'servicesMs', 'readyMs', 'routeMs', 'totalMs']) expect(view.timings[step]).toBeGreaterThanOrEqual(0);
    const page = await viaRouter(routerPort(), 'alice');
    expect(page).toMatchObject({ status: 200, body: 'hello hi from alice at v1\n' });
    const human = await berth(['env', 'create', 'bob', '--stack', 'shop'], env, { timeoutMs: 120_000 });
    expect(human.stdout.trim()).toBe(`http://bob.localhost:${routerPort()}/`);
    expect(human.stderr).toMatch(/ready in [\d.]+ ms \(claim [\d.]+ ms, init [\d.]+ ms, services [\d.]+ ms, ready [\d.]+ ms, route [\d.]+ ms\)/);
    // What it did, as it happened: the host it claimed first.
    expect(human.stderr).toMatch(/^creating environment bob \(stack shop, review\)…\n {2}claimed h-\w+ from pool shop\n/);
    const listed = JSON.parse((await berth(['env', 'ls', '--json'], env)).stdout) as EnvironmentView[];
    expect(listed.map((e) => e.name)).toEqual(['alice', 'bob']);
    expect((await berth(['env', 'ls'], env)).stdout).toMatch(/alice\s+shop\s+review\s+v1\s+ready\s+1\s+1\/1/);
    // An unknown name gets the router's page naming it.
    const unknown = await viaRouter(routerPort(), 'carol');
    expect(unknown.status).toBe(404);
    expect(unknown.body).toContain('carol');
  });

  it('refuses bad input with a clear error, leaving no host claimed', async () => {
    const before = await claimedHosts();
    const cases: Array<[string[], RegExp]> = [
      [['x1', '--stack', 'nope'], /stack nope does not exist/],
      [['x2', '--stack', 'shop', '--mode', 'everything'], /mode/],
      [['x3', '--stack', 'shop', '--replicas', '0'], /replicas must be at least 1/],
      [['Not_A_Label', '--stack', 'shop'], /DNS label/],
      [['x4', '--stack', 'shop', '--pool', 'nopool'], /pool nopool does not exist/],
      [['x5', '--stack', 'shop', '--set', '1BAD=x'], /set\.1BAD/],
      [['alice', '--stack', 'shop'], /exists already/],
    ];
    for (const [args, message] of cases) {
      const res = await berth(['env', 'create', ...args], env);
      expect(res.code, args.join(' ')).toBe(2);
      expect(res.stderr).toMatch(message);
    }
    expect(await claimedHosts()).toBe(before);
    expect((JSON.parse((await berth(['env', 'ls', '--json'], env)).stdout) as EnvironmentView[]).map((e) => e.name)).toEqual(['alice', 'bob']);
  });

  it('creates 20 environments at once; each answers through the router with its own config', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `many${i}`);
    const results = await Promise.all(names.map((name) => srv.api.post<EnvironmentView>('/v1/environments', { name, stack: 'shop', set: { GREETING: `greeting-${name}` }, wait: 180 })));
    for (const res of results) expect(res.status, JSON.stringify(res.body)).toBe(201);
    const pages = await Promise.all(names.map((name) => viaRouter(routerPort(), name)));
    pages.forEach((page, i) => expect(page).toMatchObject({ status: 200, body: `hello greeting-many${i} from many${i} at none\n` }));
    await Promise.all(names.map((name) => srv.api.delete(`/v1/environments/${name}`)));
  }, 300_000);

  it('deploys a new ref under a steady load without losing a request', async () => {
    const load = steadyLoad(routerPort, 'alice', 500);
    const before = (await srv.api.get<EnvironmentView>('/v1/environments/alice')).body;
    const deployed = await berth(['env', 'deploy', 'alice', '--ref', 'v2', '--json'], env, { timeoutMs: 120_000 });
    const seen = await load.stop();
    expect(deployed.code, deployed.stderr).toBe(0);
    const after = JSON.parse(deployed.stdout) as EnvironmentView;
    expect(after.ref).toBe('v2');
    expect(seen.failed).toEqual([]);
    expect(seen.ok).toBeGreaterThan(20);
    expect([...seen.bodies].map((b) => b.trim().split(' ').at(-1)).sort()).toEqual(['v1', 'v2']);
    expect((await viaRouter(routerPort(), 'alice')).body).toBe('hello hi from alice at v2\n');
    // The old host was given back.
    const oldHost = before.hosts[0]?.hostId ?? '';
    expect(after.hosts.map((h) => h.hostId)).not.toContain(oldHost);
    const old = await srv.api.get<{ state: string; slot?: string }>(`/v1/hosts/${oldHost}`);
    expect(old.body.state === 'terminated' || old.status === 404 || old.body.state === 'terminating').toBe(true);
  });

  it('env set changes settings host by host under load without losing a request; a change whose services fail is undone everywhere', async () => {
    const created = await create(['dora', '--stack', 'shop', '--set', 'GREETING=hi', '--replicas', '2', '--ref', 'v1']);
    expect(created.code, created.stderr).toBe(0);
    const load = steadyLoad(routerPort, 'dora');
    const changed = await berth(['env', 'set', 'dora', 'GREETING=hola', 'EXTRA=1'], env, { timeoutMs: 120_000 });
    const seen = await load.stop();
    expect([changed.code, changed.stdout], changed.stderr).toEqual([0, 'dora settings: EXTRA, GREETING\n']);
    // Each host's web service restarting, as it happened, after the environment's own state.
    expect(changed.stderr).toMatch(/^changing dora's settings…\n {2}dora configuring: changing GREETING, EXTRA\n/);
    expect(changed.stderr.match(/ {2}h-\w+: web ready after \d+ ms\n/g), changed.stderr).toHaveLength(2);
    // The web service has no reload: each host restarted it in turn, the other one serving meanwhile.
    expect(seen.failed).toEqual([]);
    expect(seen.ok).toBeGreaterThan(10);
    expect([...seen.bodies].sort()).toEqual(['hello hi from dora at v1\n', 'hello hola from dora at v1\n']);
    for (let i = 0; i < 4; i++) expect((await viaRouter(routerPort(), 'dora')).body).toBe('hello hola from dora at v1\n');
    const shown = (await srv.api.get<EnvironmentView>('/v1/environments/dora')).body;
    expect(shown).toMatchObject({ state: 'ready', settings: ['EXTRA', 'GREETING'], stateReason: 'changed GREETING, EXTRA' });

    // A PATH without the services' programs: they cannot start on the first host, so that host is put back and the second never changes.
    const broken = await berth(['env', 'set', 'dora', 'PATH=/nowhere', 'GREETING=bye', '--wait', '5', '--json'], env, { timeoutMs: 60_000 });
    expect([broken.code, broken.stderr]).toEqual([2, expect.stringMatching(/environment dora: host h-\w+: service \w+ failed: crashed \d+ times in a row \(last: exit code 127\)/)]);
    const after = (await srv.api.get<EnvironmentView>('/v1/environments/dora')).body;
    expect(after).toMatchObject({ state: 'ready', settings: ['EXTRA', 'GREETING'] });
    expect(after.stateReason).toMatch(/^settings change failed and was undone: /);
    for (const { hostId } of after.hosts) {
      const config = (await srv.api.get<{ services: Record<string, { env: Record<string, string> }> }>(`/v1/hosts/${hostId}/config?service=web`)).body;
      expect([config.services['web']?.env['GREETING'], config.services['web']?.env['PATH']]).toEqual(['hola', undefined]);
    }
    await waitFor('both hosts serving the old settings', async () => {
      const bodies = new Set<string>();
      for (let i = 0; i < 6; i++) bodies.add((await viaRouter(routerPort(), 'dora')).body);
      return bodies.size === 1 && bodies.has('hello hola from dora at v1\n') && (await srv.api.get<EnvironmentView>('/v1/environments/dora')).body.backends?.every((b) => b.healthy) ? true : undefined;
    }, { timeoutMs: 30_000 });

    // Unsetting goes back to the stack's value; a deploy keeps the settings; what berth sets itself is refused.
    expect((await berth(['env', 'set', 'dora', 'GREETING-'], env, { timeoutMs: 120_000 })).code).toBe(0);
    expect((await viaRouter(routerPort(), 'dora')).body).toBe('hello world from dora at v1\n');
    const owned = await berth(['env', 'set', 'dora', 'BERTH_REF=v9'], env);
    expect([owned.code, owned.stderr]).toEqual([2, expect.stringContaining('berth sets BERTH_REF itself')]);
    const bad = await berth(['env', 'set', 'dora', 'GREETING'], env);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('neither KEY=VALUE')]);
    expect((await berth(['env', 'set', 'nobody', 'A=1'], env)).code).toBe(2);
    expect((await berth(['env', 'deploy', 'dora', '--ref', 'v2'], env, { timeoutMs: 120_000 })).code).toBe(0);
    expect((await viaRouter(routerPort(), 'dora')).body).toBe('hello world from dora at v2\n');
    expect((await srv.api.get<EnvironmentView>('/v1/environments/dora')).body.settings).toEqual(['EXTRA']);
    expect((await berth(['env', 'rm', 'dora'], env)).code).toBe(0);
  }, 240_000);

  it('env restart restarts a service host by host under load without losing a request, and only that service', async () => {
    const created = await create(['erin', '--stack', 'shop', '--replicas', '2']);
    expect(created.code, created.stderr).toBe(0);
    const hostIds = (JSON.parse(created.stdout) as EnvironmentView).hosts.map((h) => h.hostId);
    const pids = async () => {
      const out: Record<string, number | null> = {};
      for (const id of hostIds) {
        for (const svc of (await srv.api.get<{ services: { name: string; status: { pid: number | null } | null }[] }>(`/v1/hosts/${id}/services`)).body.services) out[`${id}/${svc.name}`] = svc.status?.pid ?? null;
      }
      return out;
    };
    const before = await pids();
    const load = steadyLoad(routerPort, 'erin');
    const restarted = await berth(['env', 'restart', 'erin', '--service', 'web'], env, { timeoutMs: 120_000 });
    const seen = await load.stop();
    expect([restarted.code, restarted.stdout], restarted.stderr).toEqual([0, 'erin: restarted web on 2 hosts\n']);
    expect(seen.failed).toEqual([]);
    expect(seen.ok).toBeGreaterThan(10);
    const after = await pids();
    for (const id of hostIds) {
      expect(after[`${id}/web`]).not.toBe(before[`${id}/web`]);
      expect(after[`${id}/api`]).toBe(before[`${id}/api`]);
    }
    const unknown = await berth(['env', 'restart', 'erin', '--service', 'nope'], env);
    expect([unknown.code, unknown.stderr]).toEqual([2, expect.stringContaining('environment erin runs no service nope (it runs api, web)')]);
    const all = await berth(['env', 'restart', 'erin', '--json'], env, { timeoutMs: 120_000 });
    expect(all.code, all.stderr).toBe(0);
    expect(JSON.parse(all.stdout) as EnvironmentView).toMatchObject({ state: 'ready', stateReason: 'restarted its services on 2 hosts' });
    const last = await pids();
    for (const id of hostIds) expect(last[`${id}/api`]).not.toBe(before[`${id}/api`]);
    expect((await berth(['env', 'rm', 'erin'], env)).code).toBe(0);
  }, 240_000);

  it('takes a killed web process out of rotation and puts it back once the supervisor restarted it', async () => {
    const created = await create(['pair', '--stack', 'shop', '--replicas', '2']);
    expect(created.code, created.stderr).toBe(0);
    const view = JSON.parse(created.stdout) as EnvironmentView;
    const victim = view.hosts[0]?.hostId ?? '';
    const { body } = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [victim] }, parameters: { commands: ['pkill -9 -f "http.server 8080"; echo killed'] }, wait: 30 });
    expect(body.invocations[0]?.stdout).toContain('killed');
    // Every request still answers (retried on the other replica) while the victim is out.
    const answers = await Promise.all(Array.from({ length: 20 }, () => viaRouter(routerPort(), 'pair')));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    await waitFor('the victim back in rotation', async () => {
      const v = (await srv.api.get<EnvironmentView>('/v1/environments/pair')).body;
      const b = v.backends?.find((x) => x.id === victim);
      return b?.healthy && b.lastError !== null ? true : undefined;
    }, { timeoutMs: 20_000 });
    const spread = await Promise.all(Array.from({ length: 10 }, () => viaRouter(routerPort(), 'pair')));
    expect(new Set(spread.map((a) => a.backend))).toContain(victim);
  });

  it('env logs: every service of an environment in one view, labelled, merged by time; -f follows new lines', async () => {
    const created = await create(['logsy', '--stack', 'shop']);
    expect(created.code, created.stderr).toBe(0);
    const hostId = (JSON.parse(created.stdout) as EnvironmentView).hosts[0]?.hostId ?? '';
    // The web service (python's http.server) logs each request it answers.
    expect((await viaRouter(routerPort(), 'logsy', '/first')).status).toBe(404);
    const logs = await waitFor('the request in the log', async () => {
      const res = await berth(['env', 'logs', 'logsy'], env);
      return res.code === 0 && res.stdout.includes('GET /first') ? res : undefined;
    }, { timeoutMs: 15_000 });
    const lines = logs.stdout.trim().split('\n');
    // Every line names its service; the stack has two, so the labels are padded to one width.
    expect(lines.every((l) => /^(web|api) \| \d{4}-\d\d-\d\dT/.test(l))).toBe(true);
    const stamps = lines.map((l) => l.split(' | ')[1]?.slice(0, 24) ?? '');
    expect([...stamps].sort()).toEqual(stamps);
    const json = JSON.parse((await berth(['env', 'logs', 'logsy', '--service', 'web', '-n', '5', '--json'], env)).stdout) as { hostId: string; service: string; at: string | null; line: string }[];
    expect(json.length).toBeGreaterThan(0);
    expect(json.length).toBeLessThanOrEqual(5);
    expect(json.every((l) => l.hostId === hostId && l.service === 'web' && l.at !== null)).toBe(true);
    // A service the stack has not: exit 2, naming what it runs.
    const none = await berth(['env', 'logs', 'logsy', '--service', 'nope'], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('environment logsy has no service nope (it runs: api, web)');
    expect((await berth(['env', 'logs', 'nosuch'], env)).code).not.toBe(0);

    // -f: a request made while following shows up, labelled; Ctrl-C ends it and its remote followers.
    const stop = new AbortController();
    let out = '';
    const following = berth(['env', 'logs', 'logsy', '-f', '-n', '0'], env, { interrupt: stop.signal, onStdout: (chunk) => void (out += chunk) });
    await waitFor('the followers to start', async () => {
      const cmds = (await srv.api.get<{ commands: CommandView[] }>('/v1/commands?limit=10')).body.commands;
      return cmds.filter((c) => c.status === 'InProgress').length >= 2 ? true : undefined;
    }, { timeoutMs: 15_000 });
    // A follower counts as started before its process has opened the log: ask until a request shows.
    await waitFor('a new request followed', async () => {
      expect((await viaRouter(routerPort(), 'logsy', '/second')).status).toBe(404);
      await new Promise((r) => setTimeout(r, 200));
      return /^web \| .*GET \/second/m.test(out) ? true : undefined;
    }, { timeoutMs: 15_000 });
    stop.abort();
    expect((await following).code).toBe(0);
    expect(out).not.toContain('GET /first');
    await waitFor('no follower left on the host', async () => {
      const left = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['pgrep -f "follo[w] -n 0" || echo none'] }, wait: 30 });
      return left.body.invocations[0]?.stdout.trim() === 'none' ? true : undefined;
    }, { timeoutMs: 10_000 });
    await berth(['env', 'rm', 'logsy'], env);
  });

  it('removes an environment when its TTL passes, and on `env rm`, releasing its hosts', async () => {
    const created = await create(['brief', '--stack', 'shop', '--ttl', '2s']);
    expect(created.code, created.stderr).toBe(0);
    const hostId = (JSON.parse(created.stdout) as EnvironmentView).hosts[0]?.hostId ?? '';
    // Kept longer, counted from now; then for good; bad input changes nothing.
    const kept = await berth(['env', 'ttl', 'brief', '1h'], env);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toMatch(/^brief expires in (59|60)m \(/);
    await new Promise((r) => setTimeout(r, 3000));
    const still = (await srv.api.get<EnvironmentView>('/v1/environments/brief')).body;
    expect(still.state).toBe('ready');
    expect(new Date(still.expiresAt ?? 0).getTime() - Date.now()).toBeGreaterThan(3_500_000);
    expect(JSON.parse((await berth(['env', 'ttl', 'brief', 'none', '--json'], env)).stdout)).toMatchObject({ name: 'brief', expiresAt: null });
    expect((await berth(['env', 'ttl', 'brief', 'soon'], env)).code).toBe(2);
    expect((await srv.api.patch('/v1/environments/brief', { ttl: '0s' })).status).toBe(400);
    expect((await berth(['env', 'ttl', 'nosuch', '1h'], env)).stderr).toContain('environment nosuch does not exist');
    expect((await srv.api.get<EnvironmentView>('/v1/environments/brief')).body.expiresAt).toBeNull();
    // Cut short: it goes as any expired environment does.
    expect((await berth(['env', 'ttl', 'brief', '1s'], env)).code).toBe(0);
    await waitFor('the environment expired', async () => ((await srv.api.get(`/v1/environments/brief`)).status === 404 ? true : undefined), { timeoutMs: 20_000 });
    expect((await viaRouter(routerPort(), 'brief')).status).toBe(404);
    const host = await srv.api.get<{ state: string }>(`/v1/hosts/${hostId}`);
    expect(['terminating', 'terminated']).toContain(host.body.state);
    const removed = await berth(['env', 'rm', 'bob'], env);
    expect(removed.stdout).toContain('bob removed');
    expect((await viaRouter(routerPort(), 'bob')).status).toBe(404);
    expect((await berth(['env', 'rm', 'bob'], env)).code).toBe(2);
  });

  it('service mode puts each service on its own hosts, N of each, dependencies first, the router spreading over the web hosts', async () => {
    const created = await create(['split', '--stack', 'shop', '--mode', 'service', '--replicas', '2']);
    expect(created.code, created.stderr).toBe(0);
    const view = JSON.parse(created.stdout) as EnvironmentView;
    expect(view.hosts.map((h) => h.service).sort()).toEqual(['api', 'api', 'web', 'web']);
    for (const host of view.hosts) {
      const services = (await srv.api.get<{ services: { name: string }[] }>(`/v1/hosts/${host.hostId}/services`)).body.services.map((s) => s.name);
      expect(services).toEqual([host.service]);
    }
    expect(view.backends?.map((b) => b.id).sort()).toEqual(view.hosts.filter((h) => h.service === 'web').map((h) => h.hostId).sort());
    const answers = await Promise.all(Array.from({ length: 10 }, () => viaRouter(routerPort(), 'split')));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(new Set(answers.map((a) => a.backend)).size).toBe(2);
    // The environment's hosts reach each other (web dials api on another host); no other host does.
    const hostOf = async (id: string) => (await srv.api.get<{ id: string; ip: string; hostname: string }>(`/v1/hosts/${id}`)).body;
    const apiHost = await hostOf(view.hosts.find((h) => h.service === 'api')?.hostId ?? '');
    const webHost = await hostOf(view.hosts.find((h) => h.service === 'web')?.hostId ?? '');
    const shell = async (hostId: string, command: string) =>
      (await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: [command] }, wait: 30 })).body.invocations[0]?.stdout.trim();
    await shell(apiHost.id, `nohup python3 -c "import socket;s=socket.create_server(('',9200));[c.sendall(socket.gethostname().encode()+b'\\n') or c.close() for c,_ in iter(s.accept,None)]" >/dev/null 2>&1 & sleep 0.5`);
    const dial = `timeout 2 bash -c 'exec 3<>/dev/tcp/${apiHost.ip}/9200 && head -1 <&3' 2>/dev/null || echo blocked`;
    expect(await shell(webHost.id, dial)).toBe(apiHost.hostname);
    // And find it by its service's name, as in a compose file: `api` is both api hosts.
    const apiIps = await Promise.all(view.hosts.filter((h) => h.service === 'api').map(async (h) => (await hostOf(h.hostId)).ip));
    const lookup = (name: string) => `getent ahostsv4 ${name} | cut -d' ' -f1 | sort -u | tr '\n' ' '; true`;
    expect((await shell(webHost.id, lookup('api')))?.split(' ').sort()).toEqual([...apiIps].sort());
    const other = await create(['other', '--stack', 'shop']);
    expect(other.code, other.stderr).toBe(0);
    const otherHost = (JSON.parse(other.stdout) as EnvironmentView).hosts[0]?.hostId ?? '';
    expect(await shell(otherHost, dial)).toBe('blocked');
    expect(await shell(otherHost, lookup('api'))).toBe('');
    // A terminal on the host running a given service; a service the stack has not is refused.
    const onApi = await berth(['env', 'shell', 'split', '--service', 'api', '--', 'hostname'], env, { input: '' });
    expect(onApi.code, onApi.stderr).toBe(0);
    expect(view.hosts.filter((h) => h.service === 'api').map((h) => h.hostId)).toContain(onApi.stdout.trim());
    const noSuch = await berth(['env', 'shell', 'split', '--service', 'nope', '--', 'true'], env, { input: '' });
    expect(noSuch.code).toBe(2);
    expect(noSuch.stderr).toMatch(/environment split has no host for service nope; its hosts: h-\S+ \(api\)/);
    // This server records no sessions, and says how to make it.
    const recordings = await berth(['shell', 'recordings'], env);
    expect(recordings.code).toBe(2);
    expect(recordings.stderr).toContain('berth server --record-shells');
    await berth(['env', 'rm', 'split', 'other'], env);
  });

  it('runs a slug (a tarball with a Procfile) as an environment, and rejects bad slugs before claiming anything', async () => {
    const app = join(project, 'app');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'index.html'), 'slug app v1\n');
    await writeFile(join(app, 'Procfile'), 'web: exec python3 -m http.server $PORT\n');
    const slug = join(project, 'app.tgz');
    await createTar({ gzip: true, file: slug, cwd: app, portable: true }, ['.']);
    const created = await create(['sluggy', '--stack', 'shop', '--ref', slug]);
    expect(created.code, created.stderr).toBe(0);
    expect(await viaRouter(routerPort(), 'sluggy')).toMatchObject({ status: 200, body: 'slug app v1\n' });
    // Without a Procfile, --command gives the web process.
    const bare = join(project, 'bare.tgz');
    await rm(join(app, 'Procfile'));
    await writeFile(join(app, 'index.html'), 'bare app\n');
    await createTar({ gzip: true, file: bare, cwd: app, portable: true }, ['.']);
    const refused = await berth(['env', 'create', 'bare', '--stack', 'shop', '--ref', bare], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('has no Procfile');
    const withCommand = await create(['bare', '--stack', 'shop', '--ref', bare, '--command', 'exec python3 -m http.server $PORT']);
    expect(withCommand.code, withCommand.stderr).toBe(0);
    expect((await viaRouter(routerPort(), 'bare')).body).toBe('bare app\n');
    await berth(['env', 'rm', 'sluggy', 'bare'], env);

    // Malicious archives: nothing is claimed and nothing is written outside the slug's place.
    const before = await claimedHosts();
    const marker = join(tmpdir(), `berth-slug-escape-${process.pid}`);
    const evil = (name: string, script: string) => {
      const file = join(project, name);
      execFileSync('python3', ['-c', script, file, marker]);
      return file;
    };
    const cases: Array<[string, RegExp]> = [
      [evil('traversal.tar', 'import sys,tarfile,io\nt=tarfile.open(sys.argv[1],"w")\ni=tarfile.TarInfo("../../../.."+sys.argv[2]);d=b"x";i.size=len(d);t.addfile(i,io.BytesIO(d));t.close()'), /\.\./],
      [evil('symlink.tar', 'import sys,tarfile,io\nt=tarfile.open(sys.argv[1],"w")\ni=tarfile.TarInfo("out");i.type=tarfile.SYMTYPE;i.linkname="/tmp";t.addfile(i)\nj=tarfile.TarInfo("out/"+sys.argv[2].split("/")[-1]);d=b"x";j.size=len(d);t.addfile(j,io.BytesIO(d));t.close()'), /link|outside/],
      [evil('hardlink.tar', 'import sys,tarfile\nt=tarfile.open(sys.argv[1],"w")\ni=tarfile.TarInfo("passwd");i.type=tarfile.LNKTYPE;i.linkname="/etc/passwd";t.addfile(i);t.close()'), /link|outside/],
      [evil('device.tar', 'import sys,tarfile\nt=tarfile.open(sys.argv[1],"w")\ni=tarfile.TarInfo("null");i.type=tarfile.CHRTYPE;i.devmajor=1;i.devminor=3;t.addfile(i);t.close()'), /device/],
      [evil('notatar.tgz', 'import sys\nopen(sys.argv[1],"wb").write(b"this is not an archive")'), /archive|gzip|tar/i],
    ];
    for (const [file, message] of cases) {
      const res = await berth(['env', 'create', 'evil', '--stack', 'shop', '--ref', file], env);
      expect(res.code, file).toBe(2);
      expect(res.stderr, file).toMatch(/slug/);
      expect(res.stderr, file).toMatch(message);
    }
    const unreachable = await berth(['env', 'create', 'evil', '--stack', 'shop', '--ref', 'http://127.0.0.1:9/app.tgz'], env);
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toMatch(/slug http:\/\/127\.0\.0\.1:9\/app\.tgz: .*fetch/i);
    expect(existsSync(marker)).toBe(false);
    expect(await claimedHosts()).toBe(before);
    expect((await srv.api.get('/v1/environments/evil')).status).toBe(404);
  });

  it("gives hosts back to a pool whose onRelease is reuse: reset in place, not terminated", async () => {
    expect((await srv.api.put('/v1/pools/shopreuse', { size: 1, onRelease: 'reuse', template: { tags: { 'berth.stack': 'shop', 'berth.mode': 'review' } } })).status).toBe(200);
    const created = await create(['recycled', '--stack', 'shop', '--pool', 'shopreuse']);
    expect(created.code, created.stderr).toBe(0);
    const hostId = (JSON.parse(created.stdout) as EnvironmentView).hosts[0]?.hostId ?? '';
    expect((await berth(['env', 'rm', 'recycled'], env)).code).toBe(0);
    const back = await waitFor('the host back in its pool', async () => {
      const { hosts } = (await srv.api.get<{ hosts: { id: string; slot: string | null }[] }>('/v1/pools/shopreuse/hosts')).body;
      return hosts.find((h) => h.id === hostId && h.slot === 'ready');
    }, { timeoutMs: 30_000 });
    expect(back.id).toBe(hostId);
    await srv.api.delete('/v1/pools/shopreuse');
  });

  it('brings routes back after a server restart, without user action', async () => {
    const dataDir = srv.dataDir;
    await srv.server.stop();
    srv = { ...srv, ...(await startServer(NET, { dataDir })) };
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    const page = await waitFor('alice answers again', async () => {
      const res = await viaRouter(routerPort(), 'alice').catch(() => undefined);
      return res?.status === 200 ? res : undefined;
    }, { timeoutMs: 20_000 });
    expect(page.body).toBe('hello hi from alice at v2\n');
  });
});
