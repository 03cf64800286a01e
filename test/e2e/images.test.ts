/**
 * Image baking on real hosts: a spec with every kind of step is baked into layers, hosts launched
 * from it get the files, differ in every identity item and never change the image; rebuilds reuse
 * every unchanged layer; failures register nothing and keep what succeeded.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import type { ImageView } from '../../src/images/views.js';
import type { CommandView } from '../../src/commands/views.js';
import { useServer, type InProcessServer } from '../helpers/server.js';
import { startTestDnsServer } from '../helpers/dns-server.js';
import { startUpstream } from '../helpers/upstream.js';

/** Hosts with egress resolve names through a test name server on loopback (started by the test that needs it). */
const DNS_PORT = 9603;
const NET = { bridge: 'berthimg0', subnet: '10.228.0.0/22', cgroupName: 'berthimg', nameServers: [`127.0.0.1:${DNS_PORT}`] };

interface BakeOutcome {
  status: number;
  events: Record<string, unknown>[];
  result?: { image: ImageView; upToDate: boolean; buildMs: number; rolledPools: string[] }[];
  error?: { code: string; message: string; hint: string; details?: Record<string, unknown> };
}

describe('image baking', () => {
  let srv: InProcessServer;
  let project: string;
  let artifactServer: Server;
  let artifactUrl: string;
  let slugSha: string;
  const server = useServer(NET);

  const bake = async (yaml: string, name?: string): Promise<BakeOutcome> => {
    await writeFile(join(project, 'berth.yaml'), yaml);
    const res = await fetch(`${srv.server.url}/v1/images/builds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ text: yaml, file: 'berth.yaml', projectDir: project, ...(name ? { name } : {}) }),
    });
    if (res.status !== 200) return { status: res.status, events: [], error: (await res.json()) as BakeOutcome['error'] };
    const events = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const last = events.at(-1) ?? {};
    return { status: 200, events, ...(last['type'] === 'result' ? { result: last['results'] as BakeOutcome['result'] } : { error: last['error'] as BakeOutcome['error'] }) };
  };
  const stepStates = (o: BakeOutcome) => o.events.filter((e) => e['type'] === 'step' && e['state'] !== 'running').map((e) => `${String(e['kind'])}:${String(e['state'])}`);
  const run = async (hostId: string, command: string) => {
    const { body } = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: [command] }, wait: 30 });
    const inv = body.invocations[0];
    if (inv?.status !== 'Success') throw new Error(`command failed on ${hostId}: ${JSON.stringify(inv)}`);
    return inv.stdout;
  };
  const launch = async (image: string) => {
    const res = await srv.api.post<HostView>('/v1/hosts', { image });
    expect(res.status).toBe(201);
    return res.body;
  };

  beforeAll(async () => {
    srv = server.srv;
    project = await mkdtemp(join(tmpdir(), 'berth-img-project-'));
    await mkdir(join(project, 'app'));
    await writeFile(join(project, 'app', 'index.txt'), 'hello from the app\n');
    await writeFile(join(project, 'tool.bin'), 'a fetched artifact\n');
    // The slug: an app tarball served over HTTP, as a CI system would publish it.
    const slugDir = join(project, 'slug-src');
    await mkdir(join(slugDir, 'bin'), { recursive: true });
    await writeFile(join(slugDir, 'bin', 'start'), '#!/bin/sh\necho started\n', { mode: 0o755 });
    await writeFile(join(slugDir, 'Procfile'), 'web: bin/start\n');
    execFileSync('tar', ['-czf', join(project, 'slug.tgz'), '-C', slugDir, '.']);
    const slug = await readFile(join(project, 'slug.tgz'));
    slugSha = createHash('sha256').update(slug).digest('hex');
    artifactServer = createServer((req, res) => {
      if (req.url === '/slug.tgz') res.end(slug);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => artifactServer.listen(0, '127.0.0.1', resolve));
    artifactUrl = `http://127.0.0.1:${(artifactServer.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => artifactServer.close(resolve));
    await rm(project, { recursive: true, force: true });
  });

  const spec = (lastStep: string) => `images:
  web:
    parent: /
    steps:
      - copy: app/ /srv/app
      - fetch: {path: tool.bin, dest: /opt/tool.bin, mode: "0755"}
      - slug: {url: ${artifactUrl}/slug.tgz, sha256: ${slugSha}, dest: /app}
      - run:
          - ssh-keygen -q -A
          - echo baked > /etc/baked-by-run
          - rm -f /etc/motd
          - echo junk > /var/tmp/builder-junk && echo secret-log-line > /var/log/berth-bake.log
      - env: {GREETING: hello, PORT: 8080}
      - ${lastStep}
      - test: grep -q 'hello from the app' /srv/app/index.txt && test -x /app/bin/start
`;

  it('bakes every kind of step into layers; hosts of the image get them and differ in identity', async () => {
    const out = await bake(spec('run: echo v1 > /etc/app-version'));
    expect(out.error).toBeUndefined();
    expect(stepStates(out)).toEqual(['copy:done', 'fetch:done', 'slug:done', 'run:done', 'env:done', 'run:done', 'agent:done', 'identity:done', 'check:done']);
    const image = out.result?.[0]?.image;
    expect(image?.name).toBe('web');
    expect(image?.layers).toHaveLength(8);

    const [a, b] = await Promise.all([launch('web'), launch('web')]);
    expect(a.imageId).toBe(image?.id);
    const files = await run(a.id, 'cat /srv/app/index.txt /opt/tool.bin /etc/baked-by-run /etc/app-version; /app/bin/start; cat /etc/berth/image.env; echo "greeting=$GREETING port=$PORT"; test ! -e /etc/motd && echo motd-removed; ls /usr/local/lib/berth/agent');
    expect(files).toContain('hello from the app');
    expect(files).toContain('a fetched artifact');
    expect(files).toContain('baked');
    expect(files).toContain('v1');
    expect(files).toContain('started');
    expect(files).toContain('GREETING="hello"');
    expect(files).toContain('greeting=hello port=8080'); // the agent applies the image's env to commands
    expect(files).toContain('motd-removed');
    expect(files).toContain('berth-agent.cjs');
    // Identity stripping: /var/tmp emptied (kept as a sticky directory), logs kept but emptied.
    expect(await run(a.id, 'ls -A /var/tmp | wc -l; stat -c %a /var/tmp; stat -c %s /var/log/berth-bake.log')).toBe('0\n1777\n0\n');

    const identity = (id: string) => run(id, 'cat /etc/machine-id; hostname; for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k 2>/dev/null; done; true');
    for (let i = 0; i < 100 && !(await identity(a.id)).includes('ED25519'); i++) await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 100 && !(await identity(b.id)).includes('ED25519'); i++) await new Promise((r) => setTimeout(r, 100));
    const [ia, ib] = [(await identity(a.id)).split('\n'), (await identity(b.id)).split('\n')];
    expect(ia[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(ia[0]).not.toBe(ib[0]);
    expect(ia[1]).not.toBe(ib[1]);
    const keysA = ia.filter((l) => l.includes('SHA256:'));
    expect(keysA.length).toBeGreaterThan(0);
    for (const key of keysA) expect(ib).not.toContain(key);

    // A host changing the image's files changes only its own layer.
    await run(a.id, 'echo changed > /srv/app/index.txt');
    expect(await run(b.id, 'cat /srv/app/index.txt')).toBe('hello from the app\n');
    const copyLayer = join(srv.dataDir, 'images', 'layers', image?.layers[0] ?? '', 'diff', 'srv', 'app', 'index.txt');
    expect(await readFile(copyLayer, 'utf8')).toBe('hello from the app\n');
    await Promise.all([a, b].map((h) => srv.api.delete(`/v1/hosts/${h.id}`)));
  });

  it('rebuilds an unchanged spec as a no-op, and a changed last step re-runs only from there', async () => {
    const before = (await srv.api.get<ImageView>('/v1/images/web')).body;
    const same = await bake(spec('run: echo v1 > /etc/app-version'));
    expect(same.result?.[0]?.upToDate).toBe(true);
    expect(stepStates(same).every((s) => s.endsWith(':cached'))).toBe(true);
    expect(same.result?.[0]?.image.id).toBe(before.id);

    const changed = await bake(spec('run: echo v2 > /etc/app-version'));
    expect(stepStates(changed)).toEqual(['copy:cached', 'fetch:cached', 'slug:cached', 'run:cached', 'env:cached', 'run:done', 'agent:done', 'identity:done', 'check:done']);
    const image = changed.result?.[0]?.image;
    expect(image?.id).not.toBe(before.id);
    expect(image?.layers.slice(0, 5)).toEqual(before.layers.slice(0, 5));
    const host = await launch('web');
    expect(await run(host.id, 'cat /etc/app-version')).toBe('v2\n');
    await srv.api.delete(`/v1/hosts/${host.id}`);
  });

  it('stops at a failing step with its output and exit code, registers nothing, keeps the layers before it', async () => {
    const before = (await srv.api.get<ImageView>('/v1/images/web')).body;
    const failing = await bake(spec('run: [echo about to fail, echo oops >&2, exit 7]'));
    expect(failing.error?.code).toBe('bake_failed');
    expect(failing.error?.message).toMatch(/^berth\.yaml:\d+:\d+: images\.web\.steps\[5\]\.run: step 6 failed: Failed with exit code 7/);
    expect(failing.error?.message).toContain('oops');
    expect(failing.error?.details?.['exitCode']).toBe(7);
    expect(stepStates(failing)).toEqual(['copy:cached', 'fetch:cached', 'slug:cached', 'run:cached', 'env:cached', 'run:failed']);
    expect((await srv.api.get<ImageView>('/v1/images/web')).body.id).toBe(before.id);
    const { hosts } = (await srv.api.get<{ hosts: HostView[] }>('/v1/hosts')).body;
    expect(hosts.filter((h) => h.tags['berth:role']?.startsWith('bake'))).toEqual([]);
  });

  it('lets the run steps of an image with egress: true reach beyond the machine, by name, and those of others not', async () => {
    // "Beyond the machine": an upstream namespace this test makes, answering with who connects.
    const upstream = await startUpstream('198.18.1', 9601);
    const names = await startTestDnsServer({ 'upstream.test': upstream.address }, '127.0.0.1', DNS_PORT);
    try {
      const image = (name: string, egress: boolean | string) => `images:
  ${name}:
    parent: /
    egress: ${egress}
    steps:
      - run: "timeout 5 bash -c 'exec 3<>/dev/tcp/upstream.test/${upstream.port} && head -c 100 <&3 > /etc/fetched'"
`;
      const online = await bake(image('online', true));
      expect(online.error).toBeUndefined();
      expect(names.asked.map((q) => q.name)).toContain('upstream.test');
      const host = await launch('online');
      expect(await run(host.id, 'cat /etc/fetched')).toBe(`from ${upstream.machineSide}`);
      // The build host's resolv.conf was berth's, not the step's: no layer of the image keeps it.
      for (const id of await readdir(join(srv.dataDir, 'images', 'layers'))) expect(existsSync(join(srv.dataDir, 'images', 'layers', id, 'diff', 'etc', 'resolv.conf'))).toBe(false);
      await srv.api.delete(`/v1/hosts/${host.id}`);
      // Narrowed to the name it fetches from: still fine; narrowed to another name: it cannot resolve this one.
      expect((await bake(image('narrow', '[upstream.test]'))).error).toBeUndefined();
      const elsewhere = await bake(image('elsewhere', '[registry.example.org, 203.0.113.0/24]'));
      expect(elsewhere.error?.code).toBe('bake_failed');
      const offline = await bake(image('offline', false));
      expect(offline.error?.code).toBe('bake_failed');
      expect((await srv.api.get('/v1/images/offline')).status).toBe(404);
    } finally {
      await upstream.close();
      await names.close();
    }
  });

  it('reports spec errors with file, line and column, and bad checksums at the checksum', async () => {
    const typo = await bake('images:\n  web2:\n    steps:\n      - runn: echo hi\n');
    expect(typo.status).toBe(400);
    expect(typo.error?.message).toMatch(/^berth\.yaml:4:9: .*unknown step type "runn"/);
    const missing = await bake('images:\n  web2:\n    steps:\n      - copy: nothere/ /srv\n');
    expect(missing.status).toBe(400);
    expect(missing.error?.message).toMatch(/^berth\.yaml:4:15: .*does not exist/);
    const badSum = await bake(`images:\n  web2:\n    steps:\n      - slug:\n          url: ${artifactUrl}/slug.tgz\n          sha256: ${'0'.repeat(64)}\n`);
    expect(badSum.error?.code).toBe('validation_failed');
    expect(badSum.error?.message).toMatch(/^berth\.yaml:6:19: .*checksum mismatch/);
    expect((await srv.api.get('/v1/images/web2')).status).toBe(404);
  });

  it('rejects a slug that escapes its target and writes nothing outside it', async () => {
    const evil = join(project, 'evil');
    await mkdir(evil);
    await writeFile(join(evil, 'x'), 'x');
    execFileSync('tar', ['-czf', join(project, 'evil.tgz'), '-C', evil, '--transform', 's,^\\./x$,../../etc/berth-escaped,', './x']);
    const out = await bake('images:\n  evil:\n    steps:\n      - slug: {path: evil.tgz, dest: /app}\n');
    expect(out.error?.message).toMatch(/^berth\.yaml:4:\d+: .*(\.\.|escape|outside)/);
    expect(existsSync('/etc/berth-escaped')).toBe(false);
    const layers = await readdir(join(srv.dataDir, 'images', 'layers'));
    for (const id of layers) expect(existsSync(join(srv.dataDir, 'images', 'layers', id, 'diff', 'etc', 'berth-escaped'))).toBe(false);
    expect((await srv.api.get('/v1/images/evil')).status).toBe(404);
  });

  it('fails the bake when clones of the image cannot be told apart', async () => {
    const out = await bake(`images:
  twin:
    identity: {keep: [/etc/machine-id]}
    steps:
      - run: echo 0123456789abcdef0123456789abcdef > /etc/machine-id
`);
    expect(out.error?.code).toBe('bake_failed');
    expect(out.error?.message).toContain('clone-uniqueness check failed');
    expect(out.error?.message).toMatch(/machine-id\s+0123456789abcdef0123456789abcdef\s+0123456789abcdef0123456789abcdef\s+SAME/);
    expect((await srv.api.get('/v1/images/twin')).status).toBe(404);
  });

  it('captures a host as an image over its own; refuses to remove an image in use; gc frees unused layers', async () => {
    const host = await launch('web');
    await run(host.id, 'echo qa-passed > /srv/qa-result');
    const res = await fetch(`${srv.server.url}/v1/images/web-prod/capture`, {
      method: 'POST',
      headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: host.id }),
    });
    const events = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const last = events.at(-1) as { type: string; results?: { image: ImageView }[]; error?: unknown };
    expect(last.error).toBeUndefined();
    const captured = last.results?.[0]?.image;
    expect(captured?.parent).toBe('web');
    const web = (await srv.api.get<ImageView>('/v1/images/web')).body;
    expect(captured?.layers.slice(0, web.layers.length)).toEqual(web.layers);
    const clone = await launch('web-prod');
    expect(await run(clone.id, 'cat /srv/qa-result /srv/app/index.txt')).toBe('qa-passed\nhello from the app\n');

    expect((await srv.api.post('/v1/pools', { name: 'prod', size: 0, image: 'web-prod' })).status).toBe(201);
    const refused = await srv.api.delete<{ code: string; message: string }>('/v1/images/web-prod');
    expect(refused.status).toBe(409);
    expect(refused.body.message).toContain('pool(s) prod');
    await srv.api.delete('/v1/pools/prod');
    const stillHost = await srv.api.delete<{ code: string; message: string }>('/v1/images/web-prod');
    expect(stillHost.body.message).toContain('1 live host(s)');
    await srv.api.delete(`/v1/hosts/${clone.id}`);
    await srv.api.delete(`/v1/hosts/${host.id}`);
    expect((await srv.api.delete('/v1/images/web-prod')).status).toBe(200);

    const layersBefore = (await readdir(join(srv.dataDir, 'images', 'layers'))).length;
    const gc = await srv.api.post<{ builds: number; layers: number }>('/v1/images/gc', {});
    expect(gc.status).toBe(200);
    expect(gc.body.layers).toBeGreaterThan(0);
    const left = await readdir(join(srv.dataDir, 'images', 'layers'));
    expect(left.length).toBe(layersBefore - gc.body.layers);
    const current = (await srv.api.get<ImageView>('/v1/images/web')).body;
    for (const id of current.layers) expect(left).toContain(id);
    const again = await launch('web');
    expect(await run(again.id, 'cat /etc/app-version')).toBe('v2\n');
    await srv.api.delete(`/v1/hosts/${again.id}`);
  });

  it('rolls a pool of an image to the new build when the image is rebuilt', async () => {
    interface PoolHost { id: string; slot: string | null; generation: number | null; imageId: string | null }
    const readyHosts = async () => (await srv.api.get<{ hosts: PoolHost[] }>('/v1/pools/webpool/hosts')).body.hosts.filter((h) => h.slot === 'ready');
    const waitReady = async (imageId: string) => {
      for (let i = 0; i < 300; i++) {
        const ready = await readyHosts();
        if (ready.length === 1 && ready[0]?.imageId === imageId) return ready[0];
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`no ready host of build ${imageId}: ${JSON.stringify(await readyHosts())}`);
    };
    const missing = await srv.api.post<{ code: string }>('/v1/pools', { name: 'nopool', size: 1, image: 'no-such-image' });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('image_not_found');

    expect((await srv.api.post('/v1/pools', { name: 'webpool', size: 1, image: 'web' })).status).toBe(201);
    const first = (await srv.api.get<ImageView>('/v1/images/web')).body;
    const old = await waitReady(first.id);
    const rebuilt = await bake(spec('run: echo v3 > /etc/app-version'));
    expect(rebuilt.result?.[0]?.rolledPools).toEqual(['webpool']);
    const fresh = await waitReady(rebuilt.result?.[0]?.image.id ?? '');
    expect(fresh.id).not.toBe(old.id);
    expect(fresh.generation).toBe((old.generation ?? 0) + 1);
    expect(await run(fresh.id, 'cat /etc/app-version')).toBe('v3\n');
    await srv.api.delete('/v1/pools/webpool');
  });
});
