/**
 * Tokens with roles, end to end through the CLI and the API: an admin makes tokens for a
 * dashboard (read), a developer (use) and another admin; each can do what its role allows and is
 * refused the rest with a 403 that says why, and a refusal changes nothing. Revoking one stops it at
 * once. A terminal needs `use`, and its listing says whose token opened it.
 */
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { ErrorBody } from '../../src/core/errors.js';
import type { HostView } from '../../src/hosts/views.js';
import type { TokenView } from '../../src/tokens/token-service.js';
import { samples } from '../helpers/metrics-text.js';
import { waitFor } from '../helpers/wait.js';
import { Api, berth, startServer, type InProcessServer } from '../helpers/server.js';

const NET = { bridge: 'berthtok0', subnet: '10.248.0.0/24', cgroupName: 'berthtok' };

describe('API tokens with roles', () => {
  let srv: InProcessServer;
  let host: HostView;
  let admin: Record<string, string>;
  const secrets: Record<string, string> = {};
  const as = (name: string) => new Api(srv.server.url, secrets[name]);

  beforeAll(async () => {
    srv = await startServer(NET);
    admin = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    host = (await srv.api.post<HostView>('/v1/hosts', { hostname: 'tok-box' })).body;
    for (const [name, role] of [['dashboard', 'read'], ['dev', 'use'], ['ops', 'admin']] as const) {
      const made = await berth(['token', 'create', name, '--role', role], admin);
      expect(made.code).toBe(0);
      expect(made.stderr).toContain('This is the only time its secret is shown');
      secrets[name] = made.stdout.trim();
    }
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('lists the tokens with their roles; whoami names the caller', async () => {
    const ls = await berth(['token', 'ls', '--json'], admin);
    const tokens = JSON.parse(ls.stdout) as TokenView[];
    expect(tokens.map((t) => [t.name, t.role, t.origin])).toEqual([
      ['data dir token', 'admin', 'data-dir'],
      ['dashboard', 'read', 'api'],
      ['dev', 'use', 'api'],
      ['ops', 'admin', 'api'],
    ]);
    expect(ls.stdout).not.toContain(secrets['dev']);
    const me = await berth(['whoami'], { ...admin, BERTH_TOKEN: secrets['dev'] ?? '' });
    expect(me.code).toBe(0);
    expect(me.stdout).toMatch(/^dev \(tk-[0-9a-f]+\), role use, tenant default, at http:/);
    const table = await berth(['token', 'ls'], admin);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+NAME\s+ROLE\s+GROUPS\s+AGE\s+LAST USED\s+EXPIRES$/);
  });

  it('read: looks at everything, changes nothing', async () => {
    const reader = as('dashboard');
    expect((await reader.get('/v1/hosts')).status).toBe(200);
    expect((await reader.get(`/v1/hosts/${host.id}`)).status).toBe(200);
    expect((await reader.get('/v1/pools')).status).toBe(200);
    expect((await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${secrets['dashboard'] ?? ''}` } })).status).toBe(200);
    const before = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts')).body.hosts.length;
    const launch = await reader.post<ErrorBody>('/v1/hosts', {});
    expect(launch.status).toBe(403);
    expect(launch.body).toMatchObject({ code: 'forbidden', message: 'token "dashboard" has role read, and POST /v1/hosts needs role admin' });
    expect(launch.body.hint).toContain('berth token create NAME --role admin');
    const run = await reader.post<ErrorBody>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: ['touch /tmp/by-reader'] }, wait: 10 });
    expect(run.status).toBe(403);
    expect((await srv.api.get<{ hosts: HostView[] }>('/v1/hosts')).body.hosts.length).toBe(before);
    const commands = await srv.api.get<{ commands: { parameters: { commands: string[] } }[] }>('/v1/commands');
    expect(commands.body.commands.flatMap((c) => c.parameters.commands)).not.toContain('touch /tmp/by-reader');
    // The CLI says the same and exits 2.
    const cli = await berth(['run', '--host', host.id, '--', 'true'], { ...admin, BERTH_TOKEN: secrets['dashboard'] ?? '' });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('has role read, and POST /v1/commands needs role use');
  });

  it('use: runs commands, but does not shape the platform or see tokens', async () => {
    const dev = as('dev');
    const run = await dev.post<{ status: string; invocations: { stdout: string }[]; createdBy: { name: string } | null }>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: ['hostname'] }, wait: 10 });
    expect(run.status).toBe(201);
    expect(run.body.status).toBe('Success');
    expect(run.body.createdBy?.name).toBe('dev');
    expect((await berth(['cmd', 'ls'], admin)).stdout).toMatch(/\bdev\s+\["hostname"\]/);
    expect(run.body.invocations[0]?.stdout).toBe('tok-box\n');
    expect((await dev.post('/v1/pools', { name: 'sneaky', image: 'base', size: 1 })).status).toBe(403);
    expect((await srv.api.get<{ pools: unknown[] }>('/v1/pools')).body.pools).toEqual([]);
    expect((await dev.delete(`/v1/hosts/${host.id}`)).status).toBe(403);
    expect((await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.state).toBe('running');
    expect((await dev.get('/v1/tokens')).status).toBe(403);
    expect((await dev.post('/v1/tokens', { name: 'escalate', role: 'admin' })).status).toBe(403);
    expect((await dev.get('/v1/shells/recordings')).status).toBe(403);
    // An admin's token made by the API (not the data dir's) does all of it.
    const ops = as('ops');
    expect((await ops.get<{ tokens: TokenView[] }>('/v1/tokens')).body.tokens.length).toBe(4);
  });

  it('a terminal needs use; its listing says which token opened it', async () => {
    const open = (token: string) =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(`${srv.server.url.replace('http', 'ws')}/v1/hosts/${host.id}/shell?command=${encodeURIComponent('sleep 30')}`, { headers: { authorization: `Bearer ${token}` } });
        ws.once('open', () => resolve(ws));
        ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
        ws.once('error', reject);
      });
    await expect(open(secrets['dashboard'] ?? '')).rejects.toThrow('HTTP 403');
    const ws = await open(secrets['dev'] ?? '');
    try {
      await expect
        .poll(async () => (await berth(['shell', 'ls', '--json'], admin)).stdout)
        .toMatch(/"openedBy": "dev"/);
      const table = await berth(['shell', 'ls'], admin);
      expect(table.stdout).toMatch(/\bdev\b/);
    } finally {
      ws.close();
    }
  });

  it('revoking stops a token at once; bad input and the data dir token are refused and change nothing', async () => {
    expect((await as('ops').get('/v1/hosts')).status).toBe(200);
    const revoke = await berth(['token', 'revoke', 'ops'], admin);
    expect(revoke.code).toBe(0);
    expect(revoke.stderr).toMatch(/^revoked tk-[0-9a-f]+ "ops" \(role admin\)/);
    const after = await as('ops').get<ErrorBody>('/v1/hosts');
    expect(after.status).toBe(401);
    expect(after.body.message).toMatch(/^API token "ops" was revoked at /);

    const ids = async () => (JSON.parse((await berth(['token', 'ls', '--json', '--all'], admin)).stdout) as TokenView[]).map((t) => `${t.id}:${t.revokedAt ?? ''}`);
    const before = await ids();
    const badRole = await berth(['token', 'create', 'x', '--role', 'root'], admin);
    expect(badRole.code).toBe(2);
    expect(badRole.stderr).toContain('--role "root" is not one of read, use, admin');
    const badExpiry = await berth(['token', 'create', 'x', '--role', 'read', '--expires', 'soon'], admin);
    expect(badExpiry.code).toBe(2);
    const badName = await berth(['token', 'create', '../x', '--role', 'read'], admin);
    expect(badName.code).toBe(2);
    expect(badName.stderr).toContain('token name "../x" is not valid');
    const taken = await berth(['token', 'create', 'dev', '--role', 'read'], admin);
    expect(taken.code).toBe(2);
    expect(taken.stderr).toContain('a token named "dev" already exists');
    const own = await berth(['token', 'revoke', 'data dir token'], admin);
    expect(own.code).toBe(2);
    expect(own.stderr).toContain("is a server's own, from its data dir");
    const unknown = await berth(['token', 'revoke', 'nobody'], admin);
    expect(unknown.code).toBe(2);
    expect(await ids()).toEqual(before);
  });

  it('the audit log says who changed what, refusals and terminals included, and no reads', async () => {
    const unknown = await new Api(srv.server.url, 'not-a-token').post('/v1/hosts', {});
    expect(unknown.status).toBe(401);
    const audit = await berth(['audit', '--json', '--limit', '1000'], admin);
    expect(audit.code, audit.stderr).toBe(0);
    const entries = JSON.parse(audit.stdout) as { tokenName: string | null; method: string; route: string; path: string; status: number }[];
    const lines = entries.map((e) => `${e.tokenName ?? '?'} ${e.method} ${e.path} ${e.status}`);
    // Newest first: the unknown token's try, then what the tests above did, the admin's token making tokens first of all.
    expect(lines[0]).toBe('? POST /v1/hosts 401');
    expect(lines).toContain('data dir token POST /v1/tokens 201');
    expect(lines).toContain('dashboard POST /v1/hosts 403');
    expect(lines).toContain('dashboard POST /v1/commands 403');
    expect(lines).toContain('dev POST /v1/commands 201');
    expect(lines).toContain(`dev DELETE /v1/hosts/${host.id} 403`);
    expect(lines).toContain(`dashboard GET /v1/hosts/${host.id}/shell 403`);
    expect(lines).toContain(`dev GET /v1/hosts/${host.id}/shell 101`);
    expect(lines).toContain('data dir token DELETE /v1/tokens/ops 200');
    expect(lines.filter((l) => l.includes('GET /v1/hosts ') || l.includes('GET /v1/pools'))).toEqual([]);
    expect(lines.at(-1)).toBe('data dir token POST /v1/hosts 201');

    const mine = JSON.parse((await berth(['audit', '--json', '--token', 'dev'], admin)).stdout) as { tokenName: string }[];
    expect(new Set(mine.map((e) => e.tokenName))).toEqual(new Set(['dev']));
    const failed = JSON.parse((await berth(['audit', '--json', '--failed', '--since', '1h'], admin)).stdout) as { status: number }[];
    expect(failed.length).toBeGreaterThan(5);
    expect(failed.every((e) => e.status >= 400)).toBe(true);
    const table = await berth(['audit', '--token', 'dashboard', '--limit', '1'], admin);
    expect(table.stdout).toMatch(/^AT\s+TOKEN\s+STATUS\s+MS\s+CALL\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+dashboard\s+403\s+[\d.]+\s+(GET|POST) \/v1\//);
    expect((await as('dev').get('/v1/audit')).status).toBe(403);
    expect((await berth(['audit', '--limit', '0'], admin)).code).toBe(2);

    // /metrics counts the same calls by route and status, unknown tokens under tenant="".
    const text = await (await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } })).text();
    const metrics = samples(text);
    expect(metrics.get('berth_api_requests_total{tenant="default",method="POST",route="/v1/hosts",status="403"}')).toBe(1);
    expect(metrics.get('berth_api_requests_total{tenant="default",method="POST",route="/v1/commands",status="403"}')).toBe(2); // the API's and the CLI's
    expect(metrics.get('berth_api_requests_total{tenant="",method="POST",route="/v1/hosts",status="401"}')).toBe(1);
    expect(metrics.get('berth_api_requests_total{tenant="default",method="POST",route="/v1/tokens",status="201"}')).toBe(3);
    expect(metrics.get('berth_api_request_duration_seconds_count{tenant="default",method="POST",route="/v1/commands"}')).toBe(3); // two refused, one run
    expect(text).not.toMatch(/route="\/v1\/hosts\/h-/);
  });

  it("a scoped token sees and touches only its groups' hosts, commands, claims and terminals", async () => {
    expect((await srv.api.post('/v1/pools', { name: 'scoped', size: 2 })).status).toBe(201);
    await waitFor('pool scoped to hold 2 ready hosts', async () => ((await srv.api.get<{ status: { ready: number } }>('/v1/pools/scoped')).body.status.ready === 2 ? true : undefined), { timeoutMs: 60_000 });
    const claim = async (api: Api, group: string) => api.post<{ host: { id: string } | null; group: string } & ErrorBody>('/v1/pools/scoped/claims', { group, init: ['true'] });
    const bobs = (await claim(srv.api, 'bob')).body.host?.id ?? '';
    const made = await berth(['token', 'create', 'alice', '--role', 'use', '--scope', 'alice', '--scope', 'alice-*'], admin);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stderr).toContain('groups alice,alice-*');
    const alice = new Api(srv.server.url, made.stdout.trim());
    const aliceEnv = { ...admin, BERTH_TOKEN: made.stdout.trim() };
    expect((await berth(['whoami'], aliceEnv)).stdout).toContain('role use, tenant default, groups alice,alice-*,');

    // Claims: into her groups only; a refusal claims nothing.
    const claimsBefore = (await srv.api.get<{ claims: unknown[] }>('/v1/claims')).body.claims.length;
    const refused = await claim(alice, 'bob');
    expect(refused.status).toBe(403);
    expect(refused.body.message).toBe('token "alice" may act only in the groups alice, alice-*, and group bob is not in them');
    expect((await srv.api.get<{ claims: unknown[] }>('/v1/claims')).body.claims.length).toBe(claimsBefore);
    const mine = await claim(alice, 'alice-1');
    expect(mine.status).toBe(201);
    const hers = mine.body.host?.id ?? '';

    // Listings hold her things only; another's host, command and claim are refused.
    expect((await alice.get<{ hosts: HostView[] }>('/v1/hosts')).body.hosts.map((h) => h.id)).toEqual([hers]);
    expect((await alice.get<{ claims: { group: string }[] }>('/v1/claims')).body.claims.map((c) => c.group)).toEqual(['alice-1']);
    expect((await alice.get<{ groups: { name: string }[] }>('/v1/groups')).body.groups.map((g) => g.name)).toEqual(['alice-1']);
    expect((await alice.get(`/v1/hosts/${bobs}`)).status).toBe(403);
    expect((await alice.get(`/v1/hosts/${hers}`)).status).toBe(200);
    const run = (api: Api, targets: Record<string, unknown>) => api.post<{ id: string; status: string } & ErrorBody>('/v1/commands', { targets, parameters: { commands: ['hostname'] }, wait: 10 });
    expect((await run(alice, { hostIds: [bobs] })).status).toBe(403);
    expect((await run(alice, { hostIds: [hers, bobs] })).status).toBe(403);
    expect((await run(alice, { tags: { any: 'thing' } })).body.message).toContain('its commands name their hosts or a group');
    expect((await run(alice, { group: 'bob' })).status).toBe(403);
    const ok = await run(alice, { group: 'alice-1' });
    expect(ok.body.status).toBe('Success');
    const bobsCommand = (await run(srv.api, { hostIds: [bobs] })).body.id;
    expect((await alice.get(`/v1/commands/${bobsCommand}`)).status).toBe(403);
    expect((await alice.get(`/v1/commands/${ok.body.id}`)).status).toBe(200);
    expect((await alice.get<{ commands: { id: string }[] }>('/v1/commands')).body.commands.map((c) => c.id)).toEqual([ok.body.id]);
    expect((await alice.post(`/v1/hosts/${bobs}/release`, {})).status).toBe(403);
    expect((await alice.post('/v1/environments', { name: 'bob-demo', stack: 'demo' })).status).toBe(403);
    // Tenant-wide views are not for a scoped token; what all users share is.
    expect((await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${made.stdout.trim()}` } })).status).toBe(403);
    expect((await alice.get('/v1/events')).status).toBe(403);
    expect((await alice.get('/v1/pools')).status).toBe(200);

    // A terminal on her host, not on bob's.
    const open = (hostId: string) =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(`${srv.server.url.replace('http', 'ws')}/v1/hosts/${hostId}/shell?command=true`, { headers: { authorization: `Bearer ${made.stdout.trim()}` } });
        ws.once('open', () => resolve(ws));
        ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
        ws.once('error', reject);
      });
    await expect(open(bobs)).rejects.toThrow('HTTP 403');
    (await open(hers)).close();

    // Her release works; an admin's token cannot be scoped.
    expect((await alice.post(`/v1/hosts/${hers}/release`, {})).status).toBe(200);
    const scopedAdmin = await berth(['token', 'create', 'root-ish', '--role', 'admin', '--scope', 'x'], admin);
    expect(scopedAdmin.code).toBe(2);
    expect(scopedAdmin.stderr).toContain('an admin token cannot have a scope');
    expect((await berth(['token', 'create', 'x', '--role', 'use', '--scope', 'a b'], admin)).stderr).toContain('is not a group name or prefix');
    await srv.api.post(`/v1/hosts/${bobs}/release`, {});
  });

  it('every route the API names in the role table exists (the table does not rot)', async () => {
    const { namedRoutes } = await import('../../src/tokens/route-roles.js');
    const spec = (await srv.api.get<{ paths: Record<string, Record<string, unknown>> }>('/openapi.json')).body;
    const served = new Set(Object.entries(spec.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`)));
    // The terminal is a WebSocket upgrade beside the routes, not one of them.
    expect(namedRoutes().filter((r) => !served.has(r) && r !== 'GET /v1/hosts/:id/shell')).toEqual([]);
  });

  it("rotates the server's own token: the old one stops at once, the local CLI goes on with the new one", async () => {
    const local = { BERTH_DATA_DIR: srv.dataDir };
    const old = srv.server.token;
    const rotated = await berth(['token', 'rotate-data-dir', '--json'], local);
    expect(rotated.code, rotated.stderr).toBe(0);
    const file = join(srv.dataDir, 'token');
    const fresh = readFileSync(file, 'utf8').trim();
    expect(fresh).not.toBe(old);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(srv.server.token).toBe(fresh);
    srv.api = new Api(srv.server.url, fresh);
    expect(JSON.parse(rotated.stdout) as TokenView).toMatchObject({ name: 'data dir token', role: 'admin', origin: 'data-dir', revokedAt: null });
    const refused = await new Api(srv.server.url, old).get<ErrorBody>('/v1/hosts');
    expect(refused.status).toBe(401);
    expect(refused.body.message).toMatch(/^API token "data dir token" was revoked at /);
    expect((await berth(['whoami'], local)).stdout).toMatch(/^data dir token \(t-[0-9a-f]{16}\), role admin/);
    const live = JSON.parse((await berth(['token', 'ls', '--json'], local)).stdout) as TokenView[];
    expect(live.filter((t) => t.origin === 'data-dir')).toHaveLength(1);
    // Other tokens are untouched.
    expect((await as('dev').get('/v1/hosts')).status).toBe(200);
  });

  it('a token file replaced by hand (it leaked, say): the next start revokes the token it replaced', async () => {
    const before = srv.server.token;
    await srv.stop({ removeHosts: false });
    rmSync(join(srv.dataDir, 'token'));
    srv = await startServer(NET, { dataDir: srv.dataDir });
    expect(srv.server.token).not.toBe(before);
    const refused = await new Api(srv.server.url, before).get<ErrorBody>('/v1/hosts');
    expect(refused.status).toBe(401);
    expect(refused.body.message).toMatch(/^API token "data dir token" was revoked at /);
    // The hosts were adopted, and the new token reaches them.
    expect((await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.state).toBe('running');
  });
});
