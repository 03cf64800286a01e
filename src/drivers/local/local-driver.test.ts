/**
 * Integration tests of the local driver on this machine (root on Linux needed; skipped otherwise).
 * They check what a user would: hosts are isolated from each other and from the machine, limits are
 * applied, hosts survive the control plane and are adopted, and terminate leaves nothing behind.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBerthError } from '../../core/errors.js';
import type { HostSpec, LaunchedHost } from '../types.js';
import { detectCgroupLayout, hostCgroupDirs, readMountinfo } from './cgroups.js';
import { countLocalLeftovers, LocalDriver, type LocalDriverConfig } from './index.js';
import { bridgeMac } from './network.js';
import { inHost, initPidOf, runTool, sleeperDriverConfig, startTestDriver, type ToolOutput } from './test-helpers.js';

const canRun = process.platform === 'linux' && process.getuid?.() === 0;
const root = mkdtempSync('/tmp/berth-local-test-');
const config: LocalDriverConfig = sleeperDriverConfig(root, { bridge: 'berthtst0', subnet: '10.214.0.0/16', cgroupName: 'berthtst' });
const run = randomBytes(3).toString('hex');

function spec(name: string, overrides: Partial<HostSpec> = {}): HostSpec {
  const id = `h-${run}-${name}`;
  return {
    id,
    hostname: `${name}-${run}`,
    image: '/',
    tags: { test: name },
    resources: {},
    agent: { hostId: id, token: `token-${name}`, serverUrl: 'ws://10.214.0.1:7071/v1/agent' },
    ...overrides,
  };
}

/** Like inHost, but first joins the host's cgroups, as the agent's commands are. */
function inHostCgroups(host: LaunchedHost, script: string): Promise<ToolOutput> {
  const layout = detectCgroupLayout(readMountinfo());
  const dirs = hostCgroupDirs(layout, 'berthtst', host.id);
  const joins = layout.hierarchies.map((h, i) => (h.version === 1 ? `echo 0 > ${dirs[i]}/tasks` : `echo $$ > ${dirs[i]}/cgroup.procs`));
  return runTool('/bin/sh', ['-c', `${joins.join('; ')}; exec nsenter -t ${initPidOf(host)} -a /bin/sh -c "$0"`, script]);
}

function fetchOverTcp(ip: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: ip, port, timeout: 2000 });
    let data = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
    socket.on('timeout', () => socket.destroy(new Error('timeout')));
  });
}

async function eventually<T>(probe: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined && ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms (last: ${JSON.stringify(value)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A tiny root filesystem: sh, umount, sleep, cat, ls and the libraries they need, copied from this machine. */
function buildMiniImage(dir: string): string {
  const binaries = ['/bin/sh', '/usr/bin/umount', '/usr/bin/sleep', '/usr/bin/cat', '/usr/bin/ls'].map((b) => realpathSync(b));
  const libraries = execFileSync('ldd', binaries, { encoding: 'utf8' })
    .split('\n')
    .map((line) => /(\/\S+) \(0x/.exec(line)?.[1])
    .filter((lib): lib is string => lib !== undefined);
  for (const file of [...binaries, ...libraries]) {
    mkdirSync(`${dir}${dirname(file)}`, { recursive: true });
    copyFileSync(file, `${dir}${file}`);
    chmodSync(`${dir}${file}`, 0o755);
  }
  mkdirSync(`${dir}/bin`, { recursive: true });
  for (const name of ['sleep', 'cat', 'ls', 'umount']) if (!existsSync(`${dir}/bin/${name}`)) symlinkSync(`/usr/bin/${name}`, `${dir}/bin/${name}`);
  if (!existsSync(`${dir}/bin/sh`)) symlinkSync(binaries[0] ?? '', `${dir}/bin/sh`);
  return dir;
}

const listenScript = (port: number): string =>
  `node -e "require('net').createServer((s) => s.end(require('os').hostname())).listen(${port})" >/dev/null 2>&1 &`;

describe.skipIf(!canRun)('local driver on this machine', () => {
  let driver: LocalDriver;
  let baseline: ReturnType<typeof countLocalLeftovers>;
  let a: LaunchedHost;
  let b: LaunchedHost;

  beforeAll(async () => {
    ({ driver, baseline } = await startTestDriver(config));
    [a, b] = await Promise.all([
      driver.launch(spec('a', { resources: { cpus: 0.5, memoryMiB: 128, pids: 200 } })),
      driver.launch(spec('b')),
    ]);
  });

  afterAll(async () => {
    const left = await driver.list();
    if (left.length > 0) expect(await driver.teardown()).toBe(false); // refuses while hosts remain
    for (const host of left) await driver.terminate(host.id, host.driverData);
    expect(countLocalLeftovers(config)).toEqual(baseline);
    expect(await driver.teardown()).toBe(true);
    expect(existsSync('/sys/class/net/berthtst0')).toBe(false);
    for (const h of detectCgroupLayout(readMountinfo()).hierarchies) expect(existsSync(`${h.mountPoint}/berthtst`)).toBe(false);
    rmSync(root, { recursive: true, force: true });
  });

  it('init is idempotent and puts the gateway on the bridge', async () => {
    expect(await driver.init()).toEqual({ name: 'local', agentListenHost: '10.214.0.1' });
    const addr = execFileSync('ip', ['-4', '-o', 'addr', 'show', 'dev', 'berthtst0'], { encoding: 'utf8' });
    expect(addr).toContain('10.214.0.1/16');
  });

  it('keeps the bridge (gateway) MAC fixed while hosts come and go', async () => {
    // Otherwise hosts keep a stale ARP entry for the gateway and lose the control plane for a while.
    const mac = () => readFileSync('/sys/class/net/berthtst0/address', 'utf8').trim();
    expect(mac()).toBe(bridgeMac('berthtst0'));
    for (let i = 0; i < 3; i++) {
      const h = await driver.launch(spec(`mac${i}`));
      await driver.terminate(h.id, h.driverData);
      expect(mac()).toBe(bridgeMac('berthtst0'));
    }
  });

  it('gives each host its own hostname and address', async () => {
    expect(a.ip).not.toBe(b.ip);
    const [ha, hb] = await Promise.all([inHost(a, 'hostname; ip -4 -o addr show dev eth0'), inHost(b, 'hostname; ip -4 -o addr show dev eth0')]);
    expect(ha.stdout).toContain(`a-${run}\n`);
    expect(hb.stdout).toContain(`b-${run}\n`);
    expect(ha.stdout).toContain(`${a.ip}/16`);
    expect(hb.stdout).toContain(`${b.ip}/16`);
    expect((await inHost(a, 'cat /etc/hostname; ip route show default')).stdout).toMatch(new RegExp(`a-${run}\\ndefault via 10.214.0.1 dev eth0`));
  });

  it('writes the agent identity and tags into the host', async () => {
    const out = await inHost(a, 'stat -c %a /etc/berth/agent.json; cat /etc/berth/agent.json /etc/berth/tags.json');
    const [mode, agentJson, tagsJson] = out.stdout.trim().split('\n');
    expect(mode).toBe('600');
    expect(JSON.parse(agentJson ?? '')).toEqual(spec('a').agent);
    expect(JSON.parse(tagsJson ?? '')).toEqual({ test: 'a' });
  });

  it('keeps files private to each host and never changes the image', async () => {
    const marker = `/opt/berth-test-${run}.txt`;
    expect((await inHost(a, `echo from-a > ${marker} && cat ${marker}`)).stdout).toBe('from-a\n');
    expect((await inHost(b, `cat ${marker}`)).code).not.toBe(0);
    expect(existsSync(marker)).toBe(false);
    // Changing a file of the image inside a host copies it up; the machine's copy stays as it was.
    const machineHosts = readFileSync('/etc/hosts', 'utf8');
    expect((await inHost(a, 'echo "10.0.0.9 extra" >> /etc/hosts && grep -c extra /etc/hosts')).stdout).toBe('1\n');
    expect(readFileSync('/etc/hosts', 'utf8')).toBe(machineHosts);
    expect((await inHost(b, 'grep -c extra /etc/hosts')).stdout).toBe('0\n');
  });

  it("does not show the machine's other mounts, the state dir or old root", async () => {
    const shmMarker = `/dev/shm/berth-test-${run}`;
    writeFileSync(shmMarker, 'machine');
    try {
      const out = await inHost(a, `ls -A /dev/shm; ls -A ${config.stateDir} 2>&1; cut -d' ' -f2 /proc/mounts`);
      expect(out.stdout).not.toContain(`berth-test-${run}`);
      expect(out.stdout).not.toContain(`h-${run}-b`);
      const mountPoints = out.stdout.trim().split('\n').filter((l) => l.startsWith('/'));
      // Only the host's own mounts (plus the mask over the state dir): the old root is gone.
      // /proc/sys read-only, and sysrq-trigger where the kernel has it (confinement.ts).
      const sysrq = existsSync('/proc/sysrq-trigger') ? ['/proc/sysrq-trigger'] : [];
      expect(mountPoints).toEqual(['/', config.stateDir, '/proc', '/proc/sys', ...sysrq, '/dev', '/dev/pts', '/dev/shm', '/tmp', '/run', '/sys', '/.berth/agent', '/.berth/tools']);
    } finally {
      rmSync(shmMarker, { force: true });
    }
  });

  it('mounts the agent dir read-only and /sys read-only', async () => {
    const out = await inHost(a, 'cat /.berth/agent/berth-agent.txt; touch /.berth/agent/x 2>&1; touch /sys/x 2>&1; echo end');
    expect(out.stdout).toMatch(/^agent bundle\n.*Read-only file system\n.*Read-only file system\nend\n$/s);
  });

  it('has a working minimal /dev', async () => {
    const out = await inHost(a, 'head -c 4 /dev/zero | od -An -tx1; head -c 8 /dev/urandom | wc -c; echo x > /dev/null && echo ok; ls /dev/pts/ptmx');
    expect(out.stdout).toBe(' 00 00 00 00\n8\nok\n/dev/pts/ptmx\n');
  });

  it('hides and protects the processes of one host from another', async () => {
    const bInit = initPidOf(b);
    const out = await inHost(a, `cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'; [ -e /proc/${bInit} ] && echo visible; kill -0 ${bInit} 2>&1 || echo cannot-signal`);
    expect(out.stdout).toMatch(/^\/bin\/sh \/.berth\/init.sh \d+ sleep infinity \n/);
    expect(Number(out.stdout.split('\n')[1])).toBeLessThan(10);
    expect(out.stdout).not.toContain('visible');
    expect(out.stdout).toContain('cannot-signal');
  });

  it('lets each host bind the same port, reachable on its own address (from another host only within a group)', async () => {
    expect((await inHost(a, listenScript(8080))).code).toBe(0);
    expect((await inHost(b, listenScript(8080))).code).toBe(0);
    expect(await eventually(() => fetchOverTcp(a.ip, 8080), (s) => s.length > 0)).toBe(`a-${run}`);
    expect(await eventually(() => fetchOverTcp(b.ip, 8080), (s) => s.length > 0)).toBe(`b-${run}`);
    // Host to host over the bridge: apart, until the driver puts them in one group.
    const dialB = `timeout 2 bash -c 'exec 3<>/dev/tcp/${b.ip}/8080 && cat <&3' 2>/dev/null || echo blocked`;
    expect((await inHost(a, dialB)).stdout.trim()).toBe('blocked');
    await driver.setNetworkGroups([[a, b].map((h) => ({ id: h.id, driverData: h.driverData }))]);
    expect((await inHost(a, dialB)).stdout.trim()).toBe(`b-${run}`);
    await driver.setNetworkGroups([], { all: true });
    expect((await inHost(a, dialB)).stdout.trim()).toBe('blocked');
  });

  it('applies the cgroup limits to every process of the host', async () => {
    const layout = detectCgroupLayout(readMountinfo());
    const read = (controller: string, v1File: string, v2File: string): string => {
      const h = layout.hierarchies.find((x) => x.controllers.includes(controller as 'cpu'));
      if (!h) throw new Error(`no ${controller} controller`);
      return readFileSync(`${h.mountPoint}/berthtst/${a.id}/${h.version === 1 ? v1File : v2File}`, 'utf8').trim();
    };
    expect(read('cpu', 'cpu.cfs_quota_us', 'cpu.max')).toMatch(/^50000( 100000)?$/);
    expect(read('memory', 'memory.limit_in_bytes', 'memory.max')).toBe(String(128 * 1024 * 1024));
    expect(read('pids', 'pids.max', 'pids.max')).toBe('200');
    const cgroupLines = readFileSync(`/proc/${initPidOf(a)}/cgroup`, 'utf8');
    expect(cgroupLines.split('\n').filter((l) => l.endsWith(`/berthtst/${a.id}`))).toHaveLength(layout.hierarchies.length);
    // Inside, the cgroup namespace makes the host's cgroup look like the root.
    expect((await inHost(a, 'cat /proc/1/cgroup')).stdout).not.toContain('berthtst');
  });

  it('enforces the pids limit', async () => {
    const c = await driver.launch(spec('c', { resources: { pids: 20 } }));
    try {
      const out = await inHostCgroups(c, 'for i in $(seq 40); do sleep 30 >/dev/null 2>&1 & done; echo done');
      expect(`${out.stdout}${out.stderr}`).toMatch(/fork|Resource temporarily unavailable/i);
    } finally {
      await driver.terminate(c.id, c.driverData);
    }
  });

  it('restarts the agent when it exits', async () => {
    const init = initPidOf(b);
    const agentPid = (): number => {
      const children = readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim().split(' ').map(Number);
      return children.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8') === 'sleep\0infinity\0') ?? 0;
    };
    const before = agentPid();
    process.kill(before, 'SIGKILL');
    const after = await eventually(() => Promise.resolve(agentPid()), (pid) => pid > 0 && pid !== before, 5000);
    expect(readFileSync(`/proc/${after}/cmdline`, 'utf8')).toBe('sleep\0infinity\0');
  });

  it('describes running hosts and finds them again from a fresh driver (adoption)', async () => {
    const fresh = new LocalDriver(config);
    await fresh.init();
    const found = await fresh.list();
    expect(found.map((h) => h.id)).toEqual(expect.arrayContaining([a.id, b.id]));
    const foundA = found.find((h) => h.id === a.id);
    expect(foundA?.driverData).toMatchObject({ ip: a.ip, initPid: initPidOf(a) });
    expect(await fresh.describe(a.id, foundA?.driverData ?? {})).toEqual({ id: a.id, state: 'running', ip: a.ip });
    // Even without the control plane's driverData, the state file is enough.
    expect(await fresh.describe(b.id, {})).toMatchObject({ state: 'running', ip: b.ip });
    // A fresh driver does not hand out addresses already in use.
    const d = await fresh.launch(spec('d'));
    try {
      expect([a.ip, b.ip]).not.toContain(d.ip);
    } finally {
      await fresh.terminate(d.id, {});
    }
  });

  it('keeps hosts running when the control plane is killed with SIGKILL', async () => {
    const script = `${root}/control-plane.mts`;
    const id = `h-${run}-e`;
    writeFileSync(
      script,
      `import { LocalDriver } from ${JSON.stringify(new URL('./index.ts', import.meta.url).pathname)};
const driver = new LocalDriver(${JSON.stringify(config)});
const host = await driver.launch(${JSON.stringify(spec('e'))});
process.stdout.write(JSON.stringify(host) + '\\n', () => process.kill(process.pid, 'SIGKILL'));
`,
    );
    const out = await runTool(process.execPath, ['--import', 'tsx', script]);
    const host = JSON.parse(out.stdout.trim()) as LaunchedHost;
    expect(host.id).toBe(id);
    expect(await driver.describe(id, host.driverData)).toMatchObject({ state: 'running' });
    expect((await inHost(host, 'hostname')).stdout).toBe(`e-${run}\n`);
    await driver.terminate(id, host.driverData);
    expect(await driver.describe(id, host.driverData)).toMatchObject({ state: 'gone' });
  });

  it('reports a host whose init died as stopped, then cleans it up', async () => {
    const f = await driver.launch(spec('f'));
    process.kill(initPidOf(f), 'SIGKILL');
    const described = await eventually(() => driver.describe(f.id, f.driverData), (d) => d.state !== 'running');
    expect(described.state).toBe('stopped');
    expect(described.reason).toContain(`init process ${initPidOf(f)} exited`);
    await driver.terminate(f.id, f.driverData);
    expect(await driver.describe(f.id, f.driverData)).toMatchObject({ state: 'gone' });
  });

  it('terminates hosts leaving nothing behind, idempotently', async () => {
    const during = countLocalLeftovers(config);
    expect(during.netns).toBeGreaterThanOrEqual(2);
    expect(during.processes).toBeGreaterThanOrEqual(4);
    const g = await driver.launch(spec('g'));
    await driver.terminate(g.id, g.driverData);
    await driver.terminate(g.id, g.driverData);
    expect(countLocalLeftovers(config)).toEqual(during);
    expect(await driver.describe(g.id, g.driverData)).toEqual({ id: g.id, state: 'gone', reason: expect.any(String) as string });
  });

  it('launches many hosts at once with distinct addresses', async () => {
    const hosts = await Promise.all(Array.from({ length: 8 }, (_, i) => driver.launch(spec(`p${i}`))));
    try {
      expect(new Set(hosts.map((h) => h.ip)).size).toBe(8);
      for (const h of hosts) expect(await driver.describe(h.id, h.driverData)).toMatchObject({ state: 'running' });
    } finally {
      await Promise.all(hosts.map((h) => driver.terminate(h.id, h.driverData)));
    }
  });

  it('launches from a directory image and leaves the image untouched', async () => {
    const image = buildMiniImage(`${root}/mini-image`);
    const before = execFileSync('find', [image], { encoding: 'utf8' });
    const host = await driver.launch(spec('img', { image }));
    try {
      const out = await inHost(host, 'ls /; cat /etc/berth/tags.json; echo new > /new-file; cat /new-file');
      // The image's own top-level entries plus the mount points the driver adds; nothing of the machine.
      const expected = [...new Set([...readdirSync(image), 'dev', 'etc', 'proc', 'run', 'sys', 'tmp'])].sort();
      expect(out.stdout).toBe(`${expected.join('\n')}\n{"test":"img"}\nnew\n`);
    } finally {
      await driver.terminate(host.id, host.driverData);
    }
    expect(execFileSync('find', [image], { encoding: 'utf8' })).toBe(before);
  });

  it('explains a failed launch and cleans up after it', async () => {
    const before = countLocalLeftovers(config);
    const emptyImage = mkdtempSync(`${root}/empty-image-`);
    const err: unknown = await driver.launch(spec('bad', { image: emptyImage })).catch((e: unknown) => e);
    expect(isBerthError(err) && err.code).toBe('launch_failed');
    expect(isBerthError(err) && err.message).toContain('the image needs umount');
    expect(isBerthError(err) && err.hint).toContain(emptyImage);
    expect(countLocalLeftovers(config)).toEqual(before);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(emptyImage);
  });

  it('cleans up after a launch that times out or is cancelled midway', async () => {
    const before = countLocalLeftovers(config);
    const impatient = new LocalDriver({ ...config, launchTimeoutMs: 3 });
    const timedOut: unknown = await impatient.launch(spec('slow')).catch((e: unknown) => e);
    expect(isBerthError(timedOut) && timedOut.code).toBe('launch_failed');
    expect(isBerthError(timedOut) && timedOut.message).toContain('did not come up within 3 ms');
    expect(countLocalLeftovers(config)).toEqual(before);

    const controller = new AbortController();
    setTimeout(() => controller.abort(), 4);
    const outcome: unknown = await driver.launch(spec('cancel'), { signal: controller.signal }).catch((e: unknown) => e);
    if (isBerthError(outcome)) expect(outcome.code).toBe('deadline_exceeded');
    else await driver.terminate(`h-${run}-cancel`, {}); // it won the race: still fine
    expect(countLocalLeftovers(config)).toEqual(before);
  });

  it('rejects bad specs and duplicate ids with clear errors', async () => {
    const codeOf = async (p: Promise<unknown>): Promise<string | undefined> => {
      const err = await p.then(() => undefined, (e: unknown) => e);
      return isBerthError(err) ? err.code : String(err);
    };
    expect(await codeOf(driver.launch(spec('h1', { hostname: 'bad name' })))).toBe('validation_failed');
    expect(await codeOf(driver.launch(spec('h2', { image: `${root}/missing` })))).toBe('validation_failed');
    expect(await codeOf(driver.launch(spec('h3', { id: '../escape' })))).toBe('validation_failed');
    expect(await codeOf(driver.launch(spec('a')))).toBe('conflict');
    expect(await driver.describe(a.id, a.driverData)).toMatchObject({ state: 'running' });
  });

  it('resets a host in place: same address, nothing of its previous life left', async () => {
    const before = countLocalLeftovers(config);
    const r = await driver.launch(spec('reset', { tags: { user: 'alice' } }));
    expect((await inHost(r, 'echo secret > /root/alice.txt; echo x > /etc/motd; echo alice-console-secret > /proc/1/fd/1; (sleep 600 >/dev/null 2>&1 &) ; sleep 0.1; ps -e -o comm= | sort | tr "\\n" " "')).stdout).toContain('sleep');
    // Its user was root in its network namespace too.
    expect((await inHost(r, 'ip addr add 10.9.9.9/32 dev lo && ip route add 10.99.0.0/16 dev eth0 && ip link set eth0 mtu 1400 && echo changed')).stdout).toContain('changed');
    const tReset = performance.now();
    const fresh = await driver.reset(spec('reset', { tags: { user: '' }, agent: { hostId: r.id, token: 'token-new', serverUrl: 'ws://10.214.0.1:7071/v1/agent' } }), r.driverData);
    process.stderr.write(`reset took ${(performance.now() - tReset).toFixed(0)} ms\n`);
    expect(fresh.ip).toBe(r.ip);
    expect(initPidOf(fresh)).not.toBe(initPidOf(r));
    const t0 = performance.now();
    const inside = await inHost(fresh, 'test -e /root/alice.txt && echo LEFTOVER; cat /etc/motd 2>/dev/null | head -c 20; echo; cat /etc/berth/agent.json; cat /etc/berth/tags.json; ps -e -o comm= | sort | tr "\\n" " "');
    expect(inside.stdout).not.toContain('LEFTOVER');
    expect(inside.stdout).not.toContain('x\n');
    expect(inside.stdout).toContain('token-new');
    expect(inside.stdout).not.toContain('alice');
    // Nor in its console log on the machine (what a failed boot's error message quotes).
    expect(readFileSync(join(config.stateDir, r.id, 'console.log'), 'utf8')).not.toContain('alice-console-secret');
    expect(performance.now() - t0).toBeLessThan(5000);
    const net = await inHost(fresh, 'echo "$(ip -o addr | grep -c 10.9.9.9) $(ip route | grep -c 10.99) $(cat /sys/class/net/eth0/mtu)"; ip route');
    expect(net.stdout).toContain('0 0 1500');
    expect(net.stdout).toContain('default via'); // and still reachable: the new netns has its route
    // Only the host's init and its agent (here: sleep infinity) run; the user's sleep 600 is gone.
    expect(inside.stdout).not.toMatch(/sleep.*sleep.*sleep/);
    expect(await driver.describe(r.id, fresh.driverData)).toMatchObject({ state: 'running', ip: r.ip });
    await driver.terminate(r.id, fresh.driverData);
    expect(countLocalLeftovers(config)).toEqual(before);
  });
});
