/**
 * `berth env up`, as a CI pipeline runs it on every push of a branch, on real hosts through the
 * real CLI and router: the first run creates, a new ref deploys, new settings change in place, the
 * same run again changes nothing, what cannot change in place and bad values are refused changing
 * nothing, and a sleeping environment takes the new ref for its next wake.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { c as createTar } from 'tar';
import { describe, expect, it } from 'vitest';
import type { UpsertResult } from '../../src/environments/upsert.js';
import { EnvironmentsRepo } from '../../src/store/environments-repo.js';
import type { EnvironmentView } from '../../src/environments/views.js';
import { berth } from '../helpers/server.js';
import { routerGet, useStackServer } from '../helpers/stack-server.js';

const NET = { bridge: 'berthupt0', subnet: '10.253.0.0/22', cgroupName: 'berthupt' };

const berthYaml = `stacks:
  app:
    services:
      web:
        cmd: mkdir -p /tmp/www && printf '%s %s at %s\\n' "$GREETING" "$BERTH_ENVIRONMENT" "\${BERTH_REF:-none}" > /tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www
        env: {GREETING: "hello"}
        ports: [8080]
        ready: {http: 8080}
        stopTimeout: 1s
  nine:
    services:
      web:
        cmd: mkdir -p /tmp/www && echo nine > /tmp/www/index.html && exec python3 -m http.server 9090 --directory /tmp/www
        ports: [9090]
        ready: {http: 9090}
        stopTimeout: 1s
pools:
  - name: app
    size: 2
    template: {tags: {berth.stack: app, berth.mode: review}}
`;

/** `STATUS BODY` of a GET through the router. */
async function page(port: number, name: string): Promise<string> {
  const answer = await routerGet(port, name);
  return `${answer.status} ${answer.body}`;
}

describe('berth env up', () => {
  const stack = useStackServer(NET, berthYaml, { app: 2 });
  const routerPort = () => stack.routerPort();
  const up = async (args: string[]) => {
    const res = await berth(['env', 'up', 'pr-1', '--stack', 'app', ...args, '--json'], stack.env, { timeoutMs: 60_000 });
    if (res.code !== 0) return { code: res.code, stderr: res.stderr, result: undefined };
    return { code: 0, stderr: res.stderr, result: JSON.parse(res.stdout) as UpsertResult };
  };
  const hostsOf = (e: EnvironmentView | undefined) => (e?.hosts ?? []).map((h) => h.hostId);

  it('creates, then deploys a new ref, changes settings in place, and changes nothing when run again', async () => {
    const created = await up(['--ref', 'v1', '--set', 'GREETING=hi', '--ttl', '1h']);
    expect(created.result).toMatchObject({ action: 'created', environment: { state: 'ready', ref: 'v1', settings: ['GREETING'] } });
    expect(await page(routerPort(), 'pr-1')).toBe('200 hi pr-1 at v1\n');
    const first = hostsOf(created.result?.environment);

    const again = await up(['--ref', 'v1', '--set', 'GREETING=hi', '--ttl', '1h']);
    expect(again.result).toMatchObject({ action: 'unchanged', changes: ['expires 1h from now'] });
    expect(hostsOf(again.result?.environment)).toEqual(first);

    const deployed = await up(['--ref', 'v2', '--set', 'GREETING=hi']);
    expect(deployed.result).toMatchObject({ action: 'deployed', changes: ['deployed v2'], environment: { ref: 'v2' } });
    expect(hostsOf(deployed.result?.environment)).not.toEqual(first);
    expect(await page(routerPort(), 'pr-1')).toBe('200 hi pr-1 at v2\n');

    const configured = await up(['--ref', 'v2', '--set', 'GREETING=hey']);
    expect(configured.result).toMatchObject({ action: 'configured', changes: ['settings ~GREETING'] });
    expect(hostsOf(configured.result?.environment)).toEqual(hostsOf(deployed.result?.environment));
    expect(await page(routerPort(), 'pr-1')).toBe('200 hey pr-1 at v2\n');

    // A new ref and new settings: one deploy whose new hosts start with the new settings.
    const both = await up(['--ref', 'v3', '--set', 'GREETING=yo', '--set', 'EXTRA=1']);
    expect(both.result).toMatchObject({ action: 'deployed', changes: ['deployed v3', 'settings +EXTRA ~GREETING'], environment: { settings: ['EXTRA', 'GREETING'] } });
    expect(await page(routerPort(), 'pr-1')).toBe('200 yo pr-1 at v3\n');

    expect((await up(['--ref', 'v3', '--keep-settings'])).result).toMatchObject({ action: 'unchanged', changes: [], environment: { settings: ['EXTRA', 'GREETING'] } });
    // --set given is all its settings: none given, none kept; the stack's default shows again.
    expect((await up(['--ref', 'v3'])).result).toMatchObject({ action: 'configured', changes: ['settings -EXTRA -GREETING'], environment: { settings: [] } });
    expect(await page(routerPort(), 'pr-1')).toBe('200 hello pr-1 at v3\n');

    // A person reads what it did.
    const human = await berth(['env', 'up', 'pr-1', '--stack', 'app', '--ref', 'v4'], stack.env, { timeoutMs: 60_000 });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr).toMatch(/^bringing pr-1 up to date \(stack app, ref v4\)…\n/);
    expect(human.stderr).toMatch(/pr-1 deployed: deployed v4 in [\d.]+ ms \(claim [\d.]+ ms/);
    expect(human.stdout.trim()).toBe(`http://pr-1.localhost:${routerPort()}/`);
  });

  it('refuses what cannot change in place and bad values, changing nothing', async () => {
    const before = (await stack.srv.api.get<EnvironmentView>('/v1/environments/pr-1')).body;
    const cases: Array<[string[], RegExp]> = [
      [['--mode', 'service'], /environment pr-1 exists with mode review, not service/],
      [['--pool', 'other'], /exists with pool app, not other/],
      [['--ref', 'v9', '--ttl', 'soon'], /ttl "soon" is not a duration/],
      [['--ref', 'v9', '--sleep-after', '8d'], /sleep-after 8d is out of range/],
      [['--ref', 'v9', '--set', 'BERTH_REF=x'], /berth sets BERTH_REF itself/],
    ];
    for (const [args, message] of cases) {
      const res = await up(args);
      expect([args.join(' '), res.code, res.stderr]).toEqual([args.join(' '), 2, expect.stringMatching(message)]);
    }
    const after = (await stack.srv.api.get<EnvironmentView>('/v1/environments/pr-1')).body;
    expect({ ref: after.ref, hosts: after.hosts, state: after.state }).toEqual({ ref: before.ref, hosts: before.hosts, state: before.state });
    expect((await berth(['env', 'up', 'pr-1'], stack.env)).code).toBe(2);
    // A duration where seconds are asked for is refused by the CLI, before anything is sent or started.
    for (const args of [['env', 'deploy', 'pr-1', '--ref', 'v9', '--wait', '5m'], ['env', 'scale', 'pr-1', '2', '--wait', '0'], ['up', '--wait', '5m']]) {
      const res = await berth(args, stack.env);
      expect([args.join(' '), res.code, res.stderr]).toEqual([args.join(' '), 2, expect.stringContaining('--wait takes seconds (a positive number)')]);
    }
    expect((await berth(['env', 'up', 'pr-1', '--stack', 'app', '--set', 'A=1', '--keep-settings'], stack.env)).code).toBe(2);
  });

  it('scales review hosts in place: the first one stays, new ones join the route, leaving ones lose no request', async () => {
    const made = await berth(['env', 'create', 'wide', '--stack', 'app', '--ref', 'v1', '--json'], stack.env, { timeoutMs: 60_000 });
    expect(made.code, made.stderr).toBe(0);
    const first = (JSON.parse(made.stdout) as EnvironmentView).hosts[0]?.hostId;
    const up3 = await berth(['env', 'scale', 'wide', '3'], stack.env, { timeoutMs: 60_000 });
    expect(up3.code, up3.stderr).toBe(0);
    expect(up3.stdout).toBe('wide: 3 replicas, 3 hosts (2 new)\n');
    const three = (await stack.srv.api.get<EnvironmentView>('/v1/environments/wide')).body;
    expect(three).toMatchObject({ state: 'ready', replicas: 3, stateReason: 'scaled to 3 replicas' });
    // The scale's own stages are the environment's timings now (env show, /metrics).
    expect(three).toMatchObject({ operation: 'scale', timings: { claimMs: expect.any(Number) as unknown, readyMs: expect.any(Number) as unknown, routeMs: expect.any(Number) as unknown, totalMs: expect.any(Number) as unknown } });
    expect(three.hosts[0]?.hostId).toBe(first);
    expect(new Set(three.hosts.map((h) => h.generation))).toEqual(new Set([1]));
    expect(three.backends?.map((b) => b.id).sort()).toEqual(three.hosts.map((h) => h.hostId).sort());
    const seen = new Set<string>();
    for (let i = 0; i < 9; i++) {
      const res = (await routerGet(routerPort(), 'wide')).headers['x-berth-backend'] as string | undefined;
      if (res) seen.add(res);
    }
    expect(seen.size).toBe(3);

    // Down to one under a steady load: the leaving hosts drain first, nothing fails.
    let stop = false;
    const failures: string[] = [];
    let ok = 0;
    const load = (async () => {
      while (!stop) {
        const answer = await page(routerPort(), 'wide').catch((err: unknown) => String(err));
        if (answer.startsWith('200 ')) ok++;
        else failures.push(answer);
      }
    })();
    const down = await berth(['env', 'scale', 'wide', '1', '--json'], stack.env, { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await load;
    expect(down.code, down.stderr).toBe(0);
    expect(JSON.parse(down.stdout)).toMatchObject({ replicas: 1, hosts: [{ hostId: first }], operation: 'scale', timings: { drainMs: expect.any(Number) as unknown, releaseMs: expect.any(Number) as unknown } });
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(5);
    const gone = three.hosts.slice(1).map((h) => h.hostId);
    for (const id of gone) expect((await stack.srv.api.get<{ state: string }>(`/v1/hosts/${id}`)).body.state).toBe('terminated');

    // env up scales too, and bad counts change nothing.
    expect((await berth(['env', 'up', 'wide', '--stack', 'app', '--ref', 'v1', '--replicas', '2', '--keep-settings', '--json'], stack.env, { timeoutMs: 60_000 })).stdout).toContain('"action": "scaled"');
    expect((await berth(['env', 'scale', 'wide', '0'], stack.env)).code).toBe(2);
    expect((await berth(['env', 'scale', 'wide', 'many'], stack.env)).code).toBe(2);
    expect((await stack.srv.api.get<EnvironmentView>('/v1/environments/wide')).body.hosts).toHaveLength(2);
    expect((await berth(['env', 'rm', 'wide'], stack.env)).code).toBe(0);
  });

  it('gives a sleeping environment the new ref for its next wake, claiming nothing meanwhile', async () => {
    expect((await berth(['env', 'sleep', 'pr-1'], stack.env)).code).toBe(0);
    const asleep = await up(['--ref', 'v5', '--keep-settings', '--sleep-after', '10m']);
    expect(asleep.result).toMatchObject({ action: 'deployed', changes: ['deployed v5 for its next wake', 'sleeps after 10m idle'], environment: { state: 'sleeping', hosts: [], ref: 'v5', sleepAfterMs: 600_000 } });
    expect(await page(routerPort(), 'pr-1')).toBe('200 hello pr-1 at v5\n');
    expect((await berth(['env', 'rm', 'pr-1'], stack.env)).code).toBe(0);
  });

  it('runs the slug it was deployed with when it scales or wakes, and deploys a slug rebuilt at the same path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-slug-pin-'));
    const slug = join(dir, 'app.tgz');
    const build = async (body: string) => {
      const app = join(dir, 'app');
      await mkdir(app, { recursive: true });
      await writeFile(join(app, 'index.html'), body);
      await writeFile(join(app, 'Procfile'), 'web: exec python3 -m http.server $PORT\n');
      await createTar({ gzip: true, file: slug, cwd: app, portable: true }, ['.']);
    };
    const slugUp = async (args: string[]) => {
      const res = await berth(['env', 'up', 'slugged', '--stack', 'app', '--ref', slug, ...args, '--json'], stack.env, { timeoutMs: 60_000 });
      expect(res.code, res.stderr).toBe(0);
      return JSON.parse(res.stdout) as UpsertResult;
    };
    const pages = async (n: number) => {
      const seen = new Set<string>();
      for (let i = 0; i < n; i++) seen.add(await page(routerPort(), 'slugged'));
      return [...seen];
    };
    try {
      await build('slug v1\n');
      const created = await slugUp([]);
      const v1 = created.environment.slugDigest;
      expect(v1).toMatch(/^[0-9a-f]{64}$/);
      expect(await pages(1)).toEqual(['200 slug v1\n']);

      // CI writes the next build to the same path: the hosts berth adds still run what was deployed.
      await build('slug v2\n');
      expect((await berth(['env', 'scale', 'slugged', '2'], stack.env, { timeoutMs: 60_000 })).code).toBe(0);
      expect(await pages(6)).toEqual(['200 slug v1\n']);
      expect((await berth(['env', 'sleep', 'slugged'], stack.env)).code).toBe(0);
      expect(await pages(4)).toEqual(['200 slug v1\n']);
      const shown = await berth(['env', 'show', 'slugged'], stack.env);
      expect(shown.stdout).toContain(`ref ${slug} (slug sha256 ${v1?.slice(0, 12) ?? ''})`);

      // env up reads the path again: new content is a deploy, the same content is nothing.
      const deployed = await slugUp(['--keep-settings']);
      expect(deployed).toMatchObject({ action: 'deployed', changes: [`deployed ${slug} (new content: sha256 ${deployed.environment.slugDigest?.slice(0, 12) ?? ''}, was ${v1?.slice(0, 12) ?? ''})`] });
      expect(deployed.environment.slugDigest).not.toBe(v1);
      expect(await pages(6)).toEqual(['200 slug v2\n']);
      expect((await slugUp(['--keep-settings'])).action).toBe('unchanged');
      // What the slug store's collection keeps: the slug it runs now, not the one before.
      const inUse = await new EnvironmentsRepo(stack.srv.server.store.db).slugDigests();
      expect(inUse.has(deployed.environment.slugDigest ?? '')).toBe(true);
      expect(inUse.has(v1 ?? '')).toBe(false);
    } finally {
      await berth(['env', 'rm', 'slugged'], stack.env);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a failed deploy leaves the route where it was: on the old hosts, their service and port', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-slug-crash-'));
    try {
      const made = await berth(['env', 'create', 'nine', '--stack', 'nine', '--pool', 'app'], stack.env, { timeoutMs: 60_000 });
      expect(made.code, made.stderr).toBe(0);
      expect(await page(routerPort(), 'nine')).toBe('200 nine\n');
      // A slug whose web never starts: its route target (port 8080) is not the running one's.
      await writeFile(join(dir, 'Procfile'), 'web: exit 3\n');
      await createTar({ gzip: true, file: join(dir, 'crash.tgz'), cwd: dir, portable: true }, ['Procfile']);
      const deploy = await berth(['env', 'deploy', 'nine', '--ref', join(dir, 'crash.tgz'), '--wait', '5'], stack.env, { timeoutMs: 60_000 });
      expect(deploy.code).not.toBe(0);
      expect(await page(routerPort(), 'nine')).toBe('200 nine\n');
      expect((await stack.srv.api.get<EnvironmentView>('/v1/environments/nine')).body).toMatchObject({ state: 'ready', route: { port: 9090 } });
    } finally {
      await berth(['env', 'rm', 'nine'], stack.env);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
