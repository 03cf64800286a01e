/** `berth pool`, `claim`, `release`, `group` and `apply` end to end: CLI -> server -> real hosts. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import type { ClaimView, PoolHostView, PoolStatusView } from '../../src/pools/views.js';
import { berth, startServer, type InProcessServer } from '../helpers/server.js';

const NET = { bridge: 'berthcli0', subnet: '10.225.0.0/22', cgroupName: 'berthcli' };
const GATEWAY = '10.225.0.1';

type PoolShow = PoolStatusView & { hosts: PoolHostView[] };

describe('berth pool, claim, release, group and apply', () => {
  let srv: InProcessServer;
  let env: Record<string, string>;
  let dir: string;
  let before: ReturnType<InProcessServer['leftovers']>;

  const json = async <T>(...args: string[]): Promise<T> => {
    const res = await berth([...args, '--json'], env);
    if (res.code !== 0) throw new Error(`berth ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
    return JSON.parse(res.stdout) as T;
  };
  const poolNames = async () => (await json<PoolStatusView[]>('pool', 'ls')).map((p) => p.name);
  const liveHosts = async () => json<HostView[]>('host', 'ls');

  /** Polls `pool show --json` until the pool has `ready` ready hosts of its current generation. */
  const waitReady = async (name: string, timeoutMs = 30_000): Promise<PoolShow> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const view = await json<PoolShow>('pool', 'show', name);
      if (view.status.ready === view.size && view.status.stale === 0) return view;
      if (Date.now() > deadline) throw new Error(`pool ${name} not ready within ${timeoutMs} ms: ${JSON.stringify(view.status)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };

  /** Polls until the pool has as many ready hosts as it aims for now (`target`). */
  const waitReadyTarget = async (name: string, target: number, timeoutMs = 30_000): Promise<PoolShow> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const view = await json<PoolShow>('pool', 'show', name);
      if (view.status.targetSize === target && view.status.ready === target) return view;
      if (Date.now() > deadline) throw new Error(`pool ${name} not at ${target} ready within ${timeoutMs} ms: ${JSON.stringify(view.status)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  };

  const removeAllPools = async () => {
    for (const name of await poolNames()) await berth(['pool', 'rm', name], env);
    await srv.server.pools.reconciler.settled();
  };

  beforeAll(async () => {
    srv = await startServer(NET);
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    before = srv.leftovers();
    dir = await mkdtemp(join(tmpdir(), 'berth-apply-'));
  });
  afterAll(async () => {
    if (srv) {
      await removeAllPools();
      await srv.stop();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pool create fills the pool; pool ls and pool show describe it', async () => {
    const created = await json<PoolStatusView>('pool', 'create', 'web', '--size', '1', '--max-launching', '1', '--warmup', 'echo warm', '--health', 'true', '--tag', 'app=web');
    expect(created).toMatchObject({ name: 'web', image: '/', size: 1, maxSize: 2, maxLaunching: 1, warmup: ['echo warm'], healthCheck: { command: 'true' }, onEmpty: 'launch', template: { tags: { app: 'web' } } });

    const view = await waitReady('web');
    expect(view.hosts.filter((h) => h.slot === 'ready')).toHaveLength(1);
    expect(view.hosts[0]).toMatchObject({ pool: 'web', generation: 1, group: null });

    const ls = await berth(['pool', 'ls'], env);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^NAME\s+IMAGE\s+GEN\s+READY\/SIZE\s+WARMING\s+CLAIMED\s+HITS\s+MISSES\s+STATUS$/m);
    expect(ls.stdout).toMatch(/^web\s+\/\s+1\s+1\/1\s+0\s+0\s+0\s+0\s+full$/m);

    const show = await berth(['pool', 'show', 'web'], env);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain('warmup: "echo warm"');
    expect(show.stdout).toContain('tags app=web');
    expect(show.stdout).toMatch(/^ID\s+SLOT\s+GEN\s+GROUP\s+IP\s+AGENT$/m);
    expect(show.stdout).toMatch(/^h-\S+\s+ready\s+1\s+-\s+10\.225\.\S+\s+connected$/m);
  });

  it('claim hands a ready host to a group, with its timings; release terminates it', async () => {
    const claim = await json<ClaimView>('claim', 'web', '--group', 'alice', '--init', 'echo hi', '--tag', 'user=alice');
    expect(claim).toMatchObject({ state: 'ready', pool: 'web', group: 'alice', hit: true });
    expect(claim.timings['totalMs']).toBeGreaterThan(0);
    const host = claim.host;
    if (!host) throw new Error('claim without a host');
    expect(host).toMatchObject({ state: 'running', slot: 'claimed', group: 'alice', pool: 'web', tags: { app: 'web', user: 'alice' } });

    const claims = await json<ClaimView[]>('claim', 'ls', '--pool', 'web');
    expect(claims.map((c) => c.id)).toContain(claim.id);
    const human = await berth(['claim', 'ls', '--group', 'alice'], env);
    expect(human.stdout).toMatch(new RegExp(`^${claim.id}\\s+web\\s+alice\\s+ready\\s+hit\\s`, 'm'));

    expect((await json<{ name: string }[]>('group', 'ls')).map((g) => g.name)).toContain('alice');
    expect((await json<PoolHostView[]>('group', 'hosts', 'alice')).map((h) => h.id)).toEqual([host.id]);

    const released = await json<PoolHostView>('release', host.id);
    expect(released).toMatchObject({ id: host.id, state: 'terminated' });
    expect((await liveHosts()).map((h) => h.id)).not.toContain(host.id);
    expect(await json<PoolHostView[]>('group', 'hosts', 'alice')).toEqual([]);

    const again = await berth(['release', host.id], env);
    expect(again.code).toBe(2);
  });

  it('a claim whose init fails on every host exits 1 and leaves nothing in the group', async () => {
    await waitReady('web');
    const res = await berth(['claim', 'web', '--group', 'bob', '--init', 'false', '--deadline', '10'], env);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('claim on pool web failed');
    expect(await json<PoolHostView[]>('group', 'hosts', 'bob')).toEqual([]);
  });

  it('pool create with size above --max exits 2 and creates nothing', async () => {
    const res = await berth(['pool', 'create', 'big', '--size', '3', '--max', '2'], env);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('size 3 is above maxSize 2');
    expect(await poolNames()).not.toContain('big');

    const bad = await berth(['pool', 'create', 'big', '--size', '-1'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--size');
    expect(await poolNames()).not.toContain('big');
  });

  it('pool scale changes a pool\'s size without a roll: up launches, down retires idle ready hosts; bad sizes exit 2 and change nothing', async () => {
    expect((await berth(['pool', 'create', 'elastic', '--size', '1', '--max', '4'], env)).code).toBe(0);
    const first = await waitReady('elastic');
    const up = await berth(['pool', 'scale', 'elastic', '--size', '3'], env);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/^pool elastic: size 3, max 4, /);
    const grown = await waitReady('elastic');
    // No roll: the first host is still there, of the same generation.
    expect(grown.generation).toBe(first.generation);
    expect(grown.hosts.map((h) => h.id)).toContain(first.hosts[0]?.id);
    // Above the max: refused, saying how; nothing changed.
    const over = await berth(['pool', 'scale', 'elastic', '--size', '5'], env);
    expect(over.code).toBe(2);
    expect(over.stderr).toContain('size 5 is above maxSize 4');
    expect(over.stderr).toContain('--max');
    expect((await berth(['pool', 'scale', 'elastic'], env)).code).toBe(2);
    expect((await berth(['pool', 'scale', 'nosuch', '--size', '1'], env)).code).toBe(2);
    expect((await srv.api.patch('/v1/pools/elastic', { size: 2, image: '/tmp' })).status).toBe(400);
    expect((await json<PoolShow>('pool', 'show', 'elastic')).size).toBe(3);
    // Down: two ready hosts retired, the pool keeps one.
    const down = await json<PoolStatusView>('pool', 'scale', 'elastic', '--size', '1', '--max', '2');
    expect(down).toMatchObject({ size: 1, maxSize: 2 });
    const shrunk = await waitReady('elastic');
    expect(shrunk.hosts.filter((h) => h.slot === 'ready')).toHaveLength(1);
    expect((await berth(['pool', 'rm', 'elastic'], env)).code).toBe(0);
  });

  it('pool create --demand-max sizes the pool by demand; bad demand flags exit 2 and create nothing', async () => {
    const view = await json<PoolStatusView>('pool', 'create', 'rush', '--size', '0', '--demand-max', '2', '--demand-window', '60');
    expect(view.demand).toEqual({ max: 2, window: 60, leadTime: null });
    const timed = await json<PoolStatusView>('pool', 'create', 'rush-timed', '--size', '0', '--demand-max', '2', '--demand-lead-time', '2.5');
    expect(timed.demand).toEqual({ max: 2, window: 600, leadTime: 2.5 });
    expect((await berth(['pool', 'rm', 'rush-timed'], env)).code).toBe(0);
    expect(view.status).toMatchObject({ targetSize: 0 });
    const shown = await berth(['pool', 'show', 'rush'], env);
    expect(shown.stdout).toMatch(/demand: up to 2 ready hosts, as many as the most claims within one refill time \(measured\) over the last 60 s/);
    expect((await berth(['pool', 'rm', 'rush'], env)).code).toBe(0);

    const lonely = await berth(['pool', 'create', 'rush', '--size', '1', '--demand-window', '60'], env);
    expect([lonely.code, lonely.stderr]).toEqual([2, expect.stringContaining('--demand-window and --demand-lead-time need --demand-max')]);
    const zero = await berth(['pool', 'create', 'rush', '--size', '1', '--demand-max', '2', '--demand-lead-time', '0'], env);
    expect([zero.code, zero.stderr]).toEqual([2, expect.stringContaining('--demand-lead-time')]);
    const below = await berth(['pool', 'create', 'rush', '--size', '3', '--demand-max', '2'], env);
    expect([below.code, below.stderr]).toEqual([2, expect.stringContaining('demand.max 2 is below size 3')]);
    expect(await poolNames()).not.toContain('rush');
  });

  it('pool create --schedule sizes the pool by the clock; pool show says which rule holds; bad rules exit 2 and create nothing', async () => {
    const created = await berth(['pool', 'create', 'shifts', '--size', '0', '--schedule', '* * * * *=1', '--timezone', 'Europe/Berlin'], env);
    expect([created.code, created.stdout]).toEqual([0, expect.stringContaining("pool shifts created: filling to 1 ready host (its schedule's rule 1 holds now; otherwise 0)")]);
    const view = await waitReadyTarget('shifts', 1);
    expect(view.schedule).toEqual({ timezone: 'Europe/Berlin', rules: [{ cron: '* * * * *', size: 1 }] });
    expect(view.status).toMatchObject({ targetSize: 1, schedule: { size: 1, rule: 0, next: null } });
    const shown = await berth(['pool', 'show', 'shifts'], env);
    expect(shown.stdout).toMatch(/schedule: 1 while "\* \* \* \* \*"; otherwise 0 \(Europe\/Berlin\)/);
    expect(shown.stdout).toMatch(/ready 1\/1 \(schedule: rule 1, all week\)/);
    expect((await berth(['pool', 'rm', 'shifts'], env)).code).toBe(0);

    const noSize = await berth(['pool', 'create', 'shifts', '--size', '0', '--schedule', '* 8-18 * * 1-5'], env);
    expect([noSize.code, noSize.stderr]).toEqual([2, expect.stringContaining('write CRON=N')]);
    const lonely = await berth(['pool', 'create', 'shifts', '--size', '0', '--timezone', 'UTC'], env);
    expect([lonely.code, lonely.stderr]).toEqual([2, expect.stringContaining('--timezone needs --schedule')]);
    const minute = await berth(['pool', 'create', 'shifts', '--size', '0', '--schedule', '0 8 * * *=2'], env);
    expect([minute.code, minute.stderr]).toEqual([2, expect.stringContaining('the minute field of "0 8 * * *" is not *')]);
    expect(await poolNames()).not.toContain('shifts');
  });

  it('pool create --disk gives each host a disk of its own (host stats shows it); a bad size exits 2 and creates nothing', async () => {
    const view = await json<PoolStatusView>('pool', 'create', 'disky', '--size', '1', '--disk', '64');
    expect(view.template).toMatchObject({ diskMiB: 64 });
    const claim = await json<{ host: { id: string } }>('claim', 'disky', '--group', 'dora');
    const df = await berth(['run', '--host', claim.host.id, '--json', '--', 'df -k / | tail -1'], env);
    const sizeKiB = Number((JSON.parse(df.stdout) as { invocations: { stdout: string }[] }).invocations[0]?.stdout.trim().split(/\s+/)[1]);
    expect(sizeKiB).toBeGreaterThan(48 * 1024);
    expect(sizeKiB).toBeLessThanOrEqual(64 * 1024);
    // host stats: the disk's size and use beside memory and processes, and a CPU rate from two readings.
    const [stats] = await json<{ hostId: string; cpuPercent?: number; diskSizeBytes?: number; diskUsedBytes?: number; memoryBytes?: number; pids?: number }[]>('host', 'stats', claim.host.id, '--interval', '0.2');
    expect(stats?.hostId).toBe(claim.host.id);
    expect(stats?.diskSizeBytes).toBe(sizeKiB * 1024);
    expect(stats?.diskUsedBytes).toBeGreaterThan(0);
    expect(stats?.memoryBytes).toBeGreaterThan(0);
    expect(stats?.pids).toBeGreaterThanOrEqual(2); // the init and the agent
    expect(stats?.cpuPercent).toBeGreaterThanOrEqual(0);
    const table = await berth(['host', 'stats', claim.host.id, '--interval', '0.1'], env);
    expect(table.stdout).toMatch(new RegExp(`^ID +CPU % +MEMORY +PIDS +DISK\n${claim.host.id} `));
    expect((await berth(['host', 'stats', '--interval', '0'], env)).code).toBe(2);
    expect((await berth(['release', claim.host.id], env)).code).toBe(0);
    expect((await berth(['pool', 'rm', 'disky'], env)).code).toBe(0);
    const bad = await berth(['pool', 'create', 'disky', '--size', '1', '--disk', '8'], env);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('--disk')]);
    expect(await poolNames()).not.toContain('disky');
  });

  it('pool create --machine-port lets each host connect to that port of the machine, and to no other (with --egress too)', async () => {
    // A service of the machine's own, on every address (as a database or an sshd listens).
    const servers = [9120, 9121].map((port) => createServer((socket) => socket.end(`port ${port}\n`)).listen(port, '0.0.0.0'));
    try {
      const view = await json<PoolStatusView>('pool', 'create', 'porty', '--size', '1', '--machine-port', '9120', '--egress');
      expect(view.template).toMatchObject({ machinePorts: [9120], egress: true });
      const claim = await json<{ host: { id: string } }>('claim', 'porty', '--group', 'pat');
      const dial = async (port: number) => {
        const res = await berth(['run', '--host', claim.host.id, '--json', '--', `timeout 3 bash -c 'exec 3<>/dev/tcp/${GATEWAY}/${port} && head -1 <&3' 2>&1 || true`], env);
        return (JSON.parse(res.stdout) as { invocations: { stdout: string }[] }).invocations[0]?.stdout.trim();
      };
      expect(await dial(9120)).toBe('port 9120');
      expect(await dial(9121)).toMatch(/No route to host/);
      expect((await berth(['release', claim.host.id], env)).code).toBe(0);
      expect((await berth(['pool', 'rm', 'porty'], env)).code).toBe(0);
      const bad = await berth(['pool', 'create', 'porty', '--size', '1', '--machine-port', 'ssh'], env);
      expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('--machine-port')]);
      expect(await poolNames()).not.toContain('porty');
    } finally {
      for (const server of servers) server.close();
    }
  });

  it('pool create --egress-allow narrows each host\'s egress (and implies it); a bad entry exits 2', async () => {
    const view = await json<PoolStatusView>('pool', 'create', 'narrow', '--size', '0', '--egress-allow', '203.0.113.0/24,packages.example.com', '--egress-allow', '*.mirror.example.org');
    expect(view.template).toMatchObject({ egress: true, egressAllow: ['203.0.113.0/24', 'packages.example.com', '*.mirror.example.org'] });
    expect((await berth(['pool', 'rm', 'narrow'], env)).code).toBe(0);
    const bad = await berth(['pool', 'create', 'narrow', '--size', '0', '--egress-allow', '300.1.1.1'], env);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringContaining('"300.1.1.1" is neither an IPv4 range nor a DNS name')]);
    expect(await poolNames()).not.toContain('narrow');
  });

  it('claim on an unknown pool exits 2', async () => {
    const res = await berth(['claim', 'nosuch', '--group', 'alice'], env);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('pool nosuch does not exist');
  });

  it('apply -f creates, then reports unchanged (a schedule written with other spacing too), then rolled after a tag change', async () => {
    const file = join(dir, 'berth.yaml');
    const yaml = (app: string) =>
      ['pools:', '  - name: api', '    image: /', '    size: 1', '    maxLaunching: 1', '    warmup: ["echo warm"]', '    healthCheck: { command: "true" }', '    schedule: { rules: [{ cron: "*  * * * *", size: 1 }] }', `    template: { tags: { app: ${app} } }`, ''].join('\n');
    await writeFile(file, yaml('api'));

    const first = await berth(['apply', '-f', file], env);
    expect(first).toMatchObject({ code: 0, stdout: 'created api\n' });
    await waitReady('api');

    const second = await berth(['apply', '-f', file], env);
    expect(second).toMatchObject({ code: 0, stdout: 'unchanged api\n' });

    await writeFile(file, yaml('api2'));
    const third = await json<{ action: string; pool: PoolStatusView }[]>('apply', '-f', file);
    expect(third).toHaveLength(1);
    expect(third[0]).toMatchObject({ action: 'rolled', pool: { name: 'api', generation: 2, template: { tags: { app: 'api2' } } } });
    const rolled = await waitReady('api');
    expect(rolled.hosts.filter((h) => h.slot === 'ready').map((h) => h.generation)).toEqual([2]);

    // --wait returns once the roll is complete: the pool's ready host is of the new generation, no old one left.
    await writeFile(file, yaml('api3'));
    const waited = await berth(['apply', '-f', file, '--wait', '60'], env);
    expect(waited).toMatchObject({ code: 0, stdout: 'rolled api\npool full: api 1/1\n' });
    expect(waited.stderr).toContain('waiting for the pool to be full of its current generation');
    expect(waited.stderr).toMatch(/pool api: 1\/1 ready/);
    const after = (await srv.api.get<PoolShow>('/v1/pools/api')).body;
    expect([after.generation, after.status.rolling, after.status.stale, after.status.ready]).toEqual([3, false, 0, 1]);
    // Each roll says when it is complete, after it started.
    const poolStates = (await srv.api.get<{ id: string; state: string; reason?: string }[]>('/v1/events?kind=pool&pool=api')).body.filter((e) => e.id === 'api').map((e) => e.state);
    expect(poolStates.filter((st) => st === 'rolled' || st === 'roll-complete')).toEqual(['rolled', 'roll-complete', 'rolled', 'roll-complete']);
    expect((await berth(['apply', '-f', file, '--wait', 'soon'], env)).code).toBe(2);
  });

  it('an invalid berth.yaml exits 2 and creates none of its pools', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, ['pools:', '  - name: one', '    size: 0', '  - name: two', '    size: -1', ''].join('\n'));
    const res = await berth(['apply', '-f', file], env);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${file}:4: pools[1] (two)`);
    expect(res.stderr).toContain('size');
    const names = await poolNames();
    expect(names).not.toContain('one');
    expect(names).not.toContain('two');

    await writeFile(file, 'pools:\n  - name: one\n    size: [0\n');
    const syntax = await berth(['apply', '-f', file], env);
    expect(syntax.code).toBe(2);
    expect(syntax.stderr).toMatch(new RegExp(`${file}:\\d+:\\d+: invalid YAML`));

    await writeFile(file, 'pools: []\nhosts: []\n');
    const unknown = await berth(['apply', '-f', file], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown top-level key "hosts"');

    const missing = await berth(['apply', '-f', join(dir, 'nope.yaml')], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`cannot read ${join(dir, 'nope.yaml')}`);
    expect(await poolNames()).toEqual(['api', 'web']);
  });

  it('pool rm removes pools and their hosts; nothing is left on the machine', async () => {
    for (const name of ['web', 'api']) {
      const res = await berth(['pool', 'rm', name], env);
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(new RegExp(`^pool ${name} removed: \\d+ waiting hosts? terminated\\n$`));
    }
    expect(await poolNames()).toEqual([]);
    expect((await berth(['pool', 'show', 'web'], env)).code).toBe(2);
    expect((await berth(['pool', 'rm', 'web'], env)).code).toBe(2);

    await srv.server.pools.reconciler.settled();
    expect(await liveHosts()).toEqual([]);
    expect(srv.leftovers()).toEqual(before);
  });
});
