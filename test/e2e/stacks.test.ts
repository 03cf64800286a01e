/**
 * Stacks on real hosts: one `berth apply`, and the same image runs the whole stack on a host tagged
 * review or one service on a host tagged service, each with its layered config; a changed config
 * restarts only what it touches; bad input changes nothing.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import type { HostServicesView } from '../../src/services/services-service.js';
import type { HostConfigView } from '../../src/services/stack-sync.js';
import { berth, useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthstk0', subnet: '10.233.0.0/22', cgroupName: 'berthstk' };

const berthYaml = (webEnv: string) => `stacks:
  shop:
    config: config/
    secrets: [DB_PASSWORD]
    procfile: Procfile
    services:
      web:
        cmd: exec python3 -m http.server $PORT --bind 127.0.0.1
        env: {PORT: "8080"${webEnv}}
        ready: {http: 8080}
        dependsOn: [db]
`;

describe('stacks', () => {
  let srv: InProcessServer;
  let env: Record<string, string>;
  let project: string;
  const server = useServer(NET);

  const apply = (yaml: string) => writeFile(join(project, 'berth.yaml'), yaml).then(() => berth(['apply', '-f', join(project, 'berth.yaml')], env));
  const launch = async (tags: Record<string, string>) => (await srv.api.post<HostView>('/v1/hosts', { tags })).body;
  const services = async (hostId: string) => (await srv.api.get<HostServicesView>(`/v1/hosts/${hostId}/services`)).body;
  const readyServices = (hostId: string, names: string[]) =>
    waitFor(`${names.join(', ')} ready on ${hostId}`, async () => {
      const view = await services(hostId);
      const ready = view.services.filter((s) => s.status?.state === 'ready' && s.status.configHash === s.configHash).map((s) => s.name).sort();
      return JSON.stringify(ready) === JSON.stringify([...names].sort()) && view.services.length === names.length ? view : undefined;
    }, { timeoutMs: 30_000 });

  beforeAll(async () => {
    srv = server.srv;
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    project = await mkdtemp(join(tmpdir(), 'berth-stack-'));
    await mkdir(join(project, 'config', 'common'), { recursive: true });
    await mkdir(join(project, 'config', 'env', 'prod'), { recursive: true });
    await mkdir(join(project, 'config', 'services', 'web'), { recursive: true });
    await writeFile(join(project, 'config', 'common', 'DB_HOST'), 'localhost\n');
    await writeFile(join(project, 'config', 'common', '.env'), 'DB_PASSWORD=hunter2\nLOG_LEVEL=info\n');
    await writeFile(join(project, 'config', 'env', 'prod', 'DB_HOST'), 'prod-db\n');
    await writeFile(join(project, 'config', 'env', 'prod', 'LOG_LEVEL'), '');
    await writeFile(join(project, 'config', 'services', 'web', 'GREETING'), 'hi\n');
    await writeFile(join(project, 'Procfile'), 'db: exec sleep 1000000\n');
  });
  afterAll(async () => {
    await rm(project, { recursive: true, force: true });
  });

  it('runs the whole stack on a review host and one service on a service host, each with its layered config', async () => {
    const applied = await apply(berthYaml(''));
    expect(applied.code).toBe(0);
    expect(applied.stdout).toContain('created stack shop');

    const review = await launch({ 'berth.stack': 'shop', 'berth.mode': 'review' });
    const single = await launch({ 'berth.stack': 'shop', 'berth.mode': 'service', 'berth.service': 'web', 'berth.env': 'prod', 'berth.env.GREETING': 'hello' });
    await readyServices(review.id, ['db', 'web']);
    const view = await readyServices(single.id, ['web']);
    expect(view.stack).toEqual({ stack: 'shop', mode: 'service', problems: [] });

    const shown = await berth(['config', 'show', 'web', '--host', single.id, '--json'], env);
    const config = JSON.parse(shown.stdout) as HostConfigView;
    const web = config.services['web'];
    expect(web?.env).toMatchObject({ PORT: '8080', DB_HOST: 'prod-db', GREETING: 'hello', DB_PASSWORD: '********' });
    expect(web?.env['LOG_LEVEL']).toBeUndefined(); // an empty envdir file in env/prod unsets it
    expect(web?.unset).toContain('LOG_LEVEL');
    expect(web?.sources['DB_HOST']).toContain('config/env/prod/DB_HOST');
    expect(web?.sources['GREETING']).toBe('host override');
    expect(web?.masked).toEqual(['DB_PASSWORD']);
    const secret = await berth(['config', 'show', 'web', '--host', single.id, '--show-secrets', '--json'], env);
    expect((JSON.parse(secret.stdout) as HostConfigView).services['web']?.env['DB_PASSWORD']).toBe('hunter2');
    const diff = await berth(['config', 'diff', review.id, single.id, '--json'], env);
    expect(diff.code).toBe(1); // as diff(1): they differ
    expect(JSON.parse(diff.stdout)).toEqual(
      expect.arrayContaining([
        { service: 'db', variable: '*', a: 'runs', b: null },
        { service: 'web', variable: 'DB_HOST', a: 'localhost', b: 'prod-db' },
        { service: 'web', variable: 'GREETING', a: 'hi', b: 'hello' },
        { service: 'web', variable: 'LOG_LEVEL', a: 'info', b: null },
      ]),
    );
    const table = await berth(['config', 'diff', review.id, single.id], env);
    expect(table.stdout).toMatch(/web\s+DB_HOST\s+localhost\s+prod-db/);
    expect((await berth(['config', 'diff', review.id, review.id], env)).stdout).toContain('no differences');
    const human = await berth(['config', 'show', '--host', review.id], env);
    expect(human.stdout).toMatch(/DB_HOST\s+localhost\s+config\/common\/DB_HOST/);
    expect(human.stdout).not.toContain('hunter2');
  });

  it('restarts only the service a changed config touches, on every host of the stack', async () => {
    const { hosts } = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?tag=berth.mode=review')).body;
    const review = hosts[0];
    if (!review) throw new Error('no review host');
    const before = await services(review.id);
    const applied = await apply(berthYaml(', FEATURE: "on"'));
    expect(applied.stdout).toContain('updated stack shop');
    const after = await waitFor('web restarted with the new config', async () => {
      const view = await services(review.id);
      const web = view.services.find((s) => s.name === 'web');
      return web?.status?.state === 'ready' && web.status.configHash === web.configHash && web.configHash !== before.services.find((s) => s.name === 'web')?.configHash ? view : undefined;
    }, { timeoutMs: 30_000 });
    const pid = (view: HostServicesView, name: string) => view.services.find((s) => s.name === name)?.status?.pid;
    expect(pid(after, 'db')).toBe(pid(before, 'db'));
    expect(pid(after, 'web')).not.toBe(pid(before, 'web'));
  });

  it("starts the services a claim's tags ask for on the claimed host", async () => {
    expect((await srv.api.post('/v1/pools', { name: 'shoppool', size: 1 })).status).toBe(201);
    await waitFor('a ready pool host', async () => {
      const { hosts } = (await srv.api.get<{ hosts: { slot: string | null }[] }>('/v1/pools/shoppool/hosts')).body;
      return hosts.some((h) => h.slot === 'ready') ? true : undefined;
    });
    const claim = await srv.api.post<{ host: HostView }>('/v1/pools/shoppool/claims', { group: 'alice', tags: { 'berth.stack': 'shop', 'berth.mode': 'service', 'berth.service': 'db' } });
    expect(claim.status).toBe(201);
    await readyServices(claim.body.host.id, ['db']);
    // Commands on the host see its new tags, in its tags file and as BERTH_TAGS.
    const { body } = await srv.api.post<{ invocations: { stdout: string }[] }>('/v1/commands', {
      targets: { hostIds: [claim.body.host.id] },
      parameters: { commands: ['cat /etc/berth/tags.json; echo "$BERTH_TAGS"'] },
      wait: 30,
    });
    const [file, env] = (body.invocations[0]?.stdout ?? '').trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    expect(file).toMatchObject({ 'berth.stack': 'shop', 'berth.service': 'db', 'berth:group': 'alice' });
    expect(env).toEqual(file);
    await srv.api.delete('/v1/pools/shoppool');
  });

  it('says why a host gets nothing when its tags name an unknown service, and refuses bad stacks', async () => {
    const wrong = await launch({ 'berth.stack': 'shop', 'berth.mode': 'service', 'berth.service': 'nope' });
    const view = await waitFor('the stack problem', async () => {
      const v = await services(wrong.id);
      return v.stack ? v : undefined;
    });
    expect(view.stack?.problems.join(' ')).toContain('stack shop has no service nope (it has: db, web)');
    expect(view.services).toEqual([]);

    const cycle = await apply(berthYaml('').replace('dependsOn: [db]', 'dependsOn: [web]'));
    expect(cycle.code).toBe(2);
    expect(cycle.stderr).toMatch(/berth\.yaml:\d+:\d+: .*cycle/);
    const missing = await apply(berthYaml('').replace('config: config/', 'config: nowhere/'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('nowhere');
    // Nothing was applied: the stack is as the last good apply left it.
    const again = await apply(berthYaml(', FEATURE: "on"'));
    expect(again.stdout).toContain('unchanged stack shop');
  });

  it('converges a running host when its tags change, leaving the services they do not touch running', async () => {
    const { hosts } = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts?tag=berth.mode=review')).body;
    const review = hosts.find((h) => !h.tags['berth:group']);
    if (!review) throw new Error('no review host');
    const before = await readyServices(review.id, ['db', 'web']);
    const pid = (view: HostServicesView, name: string) => view.services.find((s) => s.name === name)?.status?.pid;

    // Review -> one service: web leaves, db (whose config is the same in both modes) keeps running.
    const tagged = await berth(['host', 'tag', review.id, 'berth.mode=service', 'berth.service=db', 'owner=bob', '--json'], env);
    expect(tagged.code).toBe(0);
    expect((JSON.parse(tagged.stdout) as HostView).tags).toMatchObject({ 'berth.mode': 'service', 'berth.service': 'db', owner: 'bob' });
    const after = await readyServices(review.id, ['db']);
    expect(pid(after, 'db')).toBe(pid(before, 'db'));
    const { body } = await srv.api.post<{ invocations: { stdout: string }[] }>('/v1/commands', {
      targets: { hostIds: [review.id] },
      parameters: { commands: ['cat /etc/berth/tags.json; echo "$BERTH_TAGS"; pgrep -f "http.server 8080" || echo no-web'] },
      wait: 30,
    });
    const [file, fromEnv, web] = (body.invocations[0]?.stdout ?? '').trim().split('\n');
    expect(JSON.parse(file ?? '{}')).toMatchObject({ owner: 'bob', 'berth.service': 'db' });
    expect(JSON.parse(fromEnv ?? '{}')).toMatchObject({ owner: 'bob' });
    expect(web).toBe('no-web');

    // KEY- removes a tag; the host's problem tag is fixed the same way.
    const untagged = await berth(['host', 'tag', review.id, 'owner-'], env);
    expect(untagged.code).toBe(0);
    expect(untagged.stdout).not.toContain('owner=');

    // Bad input changes nothing: a malformed change (exit 2), both set and removed (400), an unknown host.
    expect((await berth(['host', 'tag', review.id, 'nonsense'], env)).code).toBe(2);
    const both = await srv.api.patch(`/v1/hosts/${review.id}/tags`, { set: { a: '1' }, remove: ['a'] });
    expect(both.status).toBe(400);
    expect((await srv.api.patch('/v1/hosts/h-nosuchhost/tags', { set: { a: '1' } })).status).toBe(404);
    expect((await srv.api.get<HostView>(`/v1/hosts/${review.id}`)).body.tags).toEqual({ 'berth.stack': 'shop', 'berth.mode': 'service', 'berth.service': 'db' });
    expect(pid(await services(review.id), 'db')).toBe(pid(before, 'db'));
  });
});
