/**
 * `berth down`, as a person who tried berth runs it: with the server stopped (Ctrl-C), every host it
 * left running is removed (pool hosts, a claimed host, a plain one), and with them the bridge,
 * firewall tables, routing rules and cgroups, found without repeating the server's options; the
 * pool is kept, and the next start fills it again. `--purge` then removes the data dir. It refuses,
 * changing nothing, while the server runs or when the store has hosts of another driver, and will
 * not purge a directory that is no data dir. Ctrl-C stops it between hosts, never in the middle of one.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { MachineCheck } from '../../src/drivers/local/doctor.js';
import type { HostView } from '../../src/hosts/views.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import { HostsRepo } from '../../src/store/hosts-repo.js';
import { openStore } from '../../src/store/store.js';
import { packageRoot } from '../../src/cli/paths.js';
import { berth, ServerProcess } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthdwn0', subnet: '10.211.0.0/24', cgroupName: 'berthdwn' };
const PORTS = { api: 17410, agent: 17411 };
const canRun = process.platform === 'linux' && process.getuid?.() === 0;

interface DownJson {
  dataDir: string;
  bridge: string;
  removed: string[];
  failed: { id: string; error: string }[];
  machine: string;
  purged: boolean;
}

const ZERO = { netns: 0, mounts: 0, veths: 0, cgroups: 0, processes: 0, hostDirs: 0, peerRules: 0, loopDevices: 0, machinePortGrants: 0, egressGrants: 0 };

/** What of the instance's is on the machine besides hosts: its bridge and its nftables tables. */
function machineTraces(): string[] {
  const tables = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).split('\n').filter((line) => line.includes(NET.bridge));
  return [...(existsSync(`/sys/class/net/${NET.bridge}`) ? [`bridge ${NET.bridge}`] : []), ...tables];
}

describe.skipIf(!canRun)('berth down', () => {
  let proc: ServerProcess | undefined;
  const others: ServerProcess[] = [];
  afterAll(async () => {
    // Whatever a failed test left, and the host the refused take-down had to leave running.
    await proc?.remove();
    for (const other of others) await other.remove();
  });

  /** A server of its own that launched a host, then was stopped (Ctrl-C): the host runs on. */
  const stoppedServerWithHost = async (prefix: string): Promise<{ proc: ServerProcess; host: { body: HostView } }> => {
    const server = await ServerProcess.start(prefix, NET, PORTS);
    others.push(server);
    const host = await server.api.post<HostView>('/v1/hosts', {});
    expect(host.status).toBe(201);
    await server.stop();
    return { proc: server, host };
  };

  it('removes every host and what the server set up, keeps the pool for the next start; --purge removes the data dir', async () => {
    proc = await ServerProcess.start('down', NET, PORTS);
    const { api, dataDir } = proc;
    expect((await api.post('/v1/pools', { name: 'web', size: 2 })).status).toBe(201);
    const poolReady = (n: number) => waitFor(`${n} ready hosts in pool web`, async () => ((await api.get<PoolStatusView>('/v1/pools/web')).body.status.ready >= n ? true : undefined), { timeoutMs: 60_000 });
    await poolReady(2);
    const claimed = await api.post<ClaimView>('/v1/pools/web/claims', { group: 'alice', init: ['echo hi > /tmp/alice'] });
    expect(claimed.status).toBe(201);
    // Egress and a machine port put the host in nftables tables and routing rules: down takes those too.
    const plain = await api.post<HostView>('/v1/hosts', { resources: { egress: true, machinePorts: [PORTS.api] } });
    expect(plain.status).toBe(201);
    await poolReady(2);
    const live = (await api.get<{ hosts: HostView[] }>('/v1/hosts')).body.hosts.map((h) => h.id).sort();
    expect(live).toHaveLength(4);

    // While the server runs: refused, and nothing changes.
    const refused = await berth(['down', '--data-dir', dataDir], {});
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/a berth server \(pid \d+\) is running on .*\n {2}hint: Stop it first/);
    expect((await api.get<{ hosts: HostView[] }>('/v1/hosts')).body.hosts.filter((h) => h.state === 'running')).toHaveLength(4);

    await proc.stop(); // Ctrl-C: the hosts keep running
    const before = proc.leftovers();
    expect(before.processes).toBeGreaterThan(0);
    expect(before.egressGrants).toBeGreaterThan(0);
    expect(before.machinePortGrants).toBeGreaterThan(0);
    expect(machineTraces()).toEqual(expect.arrayContaining([`bridge ${NET.bridge}`, expect.stringMatching(/^table inet /)]));
    // doctor says so, and points at berth down; it checks the bridge and subnet the server ran with.
    const doctor = await berth(['doctor', '--data-dir', dataDir, '--json'], {});
    const checks = JSON.parse(doctor.stdout) as MachineCheck[];
    const hostsCheck = checks.find((c) => c.name === 'hosts');
    expect(hostsCheck).toMatchObject({ status: 'warn', detail: `4 still running from ${dataDir}, whose server is stopped` });
    expect(hostsCheck?.hint).toContain('berth down');
    expect(checks.find((c) => c.name === 'bridge subnet')?.detail).toContain(`${NET.subnet} on bridge ${NET.bridge}`);

    // No --bridge, --subnet or --name: the ones the server last ran with.
    const down = await berth(['down', '--data-dir', dataDir, '--json'], {}, { timeoutMs: 120_000 });
    expect(down.code, down.stderr).toBe(0);
    const report = JSON.parse(down.stdout) as DownJson;
    expect(report).toMatchObject({ dataDir, bridge: NET.bridge, failed: [], machine: 'removed', purged: false });
    expect(report.removed.sort()).toEqual(live);
    expect(down.stderr).toContain('removing 4 host(s)…');
    expect(down.stderr).toMatch(/removed h-\w+ \(4\/4\)/);
    expect(proc.leftovers()).toEqual(ZERO);
    expect(machineTraces()).toEqual([]);
    expect(existsSync(join(dataDir, 'db'))).toBe(true);
    const doctorAfter = JSON.parse((await berth(['doctor', '--data-dir', dataDir, '--json'], {})).stdout) as MachineCheck[];
    expect(doctorAfter.find((c) => c.name === 'hosts')).toMatchObject({ status: 'ok', detail: `none on this machine from ${dataDir}` });

    // Declared things stay: the next start fills the pool again; the claimed host is gone for good.
    await proc.restart();
    await poolReady(2);
    expect((await proc.api.get<HostView>(`/v1/hosts/${claimed.body.host?.id ?? ''}`)).body.state).toBe('terminated');
    await proc.stop();

    const purged = await berth(['down', '--data-dir', dataDir, '--purge'], {}, { timeoutMs: 120_000 });
    expect(purged.code, purged.stderr).toBe(0);
    expect(purged.stdout).toMatch(/^berth is down: 2 host\(s\) removed, and bridge berthdwn0 with its firewall tables and cgroups; data dir .* removed\n$/);
    expect(existsSync(dataDir)).toBe(false);
    expect(proc.leftovers()).toEqual(ZERO);
    expect(machineTraces()).toEqual([]);

    // Again, with nothing left: nothing to do, and that is no error.
    const again = await berth(['down', '--data-dir', dataDir], {});
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('nothing to take down');
  });

  it('refuses, changing nothing, when the store has live hosts of another driver (a database an AWS server shares)', async () => {
    const { proc: shared, host: local } = await stoppedServerWithHost('down-foreign');
    const foreignId = 'h-0000000a01';
    const store = await openStore({ dataDir: shared.dataDir });
    try {
      await new HostsRepo(store.db).insert({ id: foreignId, tenantId: DEFAULT_TENANT, driver: 'aws', image: 'ami-0123456789abcdef0', hostname: foreignId, tags: {}, resources: {}, agentTokenHash: 'x' });
      await store.db.updateTable('hosts').set({ state: 'running' }).where('id', '=', foreignId).execute();
    } finally {
      await store.close();
    }

    const down = await berth(['down', '--data-dir', shared.dataDir], {}, { timeoutMs: 120_000 });
    expect(down.code).toBe(2);
    expect(down.stderr).toContain(`the store has 1 live host(s) of the aws driver (${foreignId}), and this server runs the local driver`);
    expect(down.stderr).toContain('hint: Start the server (or berth down) with --driver aws');
    // berth down --driver aws needs the options an AWS server ran with, which none did here.
    const noAws = await berth(['down', '--driver', 'aws', '--data-dir', shared.dataDir], {});
    expect(noAws.code).toBe(2);
    expect(noAws.stderr).toContain('no AWS server has run on');
    // Both hosts as they were: the local one still runs, the other is still recorded running.
    expect(shared.leftovers().processes).toBeGreaterThan(0);
    const after = await openStore({ dataDir: shared.dataDir });
    try {
      const states = await after.db.selectFrom('hosts').select(['id', 'state']).orderBy('id').execute();
      expect(states).toEqual([{ id: foreignId, state: 'running' }, { id: local.body.id, state: 'running' }].sort((a, b) => a.id.localeCompare(b.id)));
    } finally {
      await after.close();
    }
    await shared.remove(); // the next test's server shares the network
  });

  it('Ctrl-C finishes the hosts under way and stops cleanly (exit 130); the next run removes the rest', async () => {
    const many = await ServerProcess.start('down-interrupt', NET, PORTS);
    others.push(many);
    expect((await many.api.post('/v1/pools', { name: 'many', size: 12, maxLaunching: 6 })).status).toBe(201);
    await waitFor('12 ready hosts', async () => ((await many.api.get<PoolStatusView>('/v1/pools/many')).body.status.ready >= 12 ? true : undefined), { timeoutMs: 60_000 });
    await many.stop();

    const child = spawn(process.execPath, [join(packageRoot(), 'bin', 'berth.js'), 'down', '--data-dir', many.dataDir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      // As a person would, once the removal has begun.
      if (stderr.includes('removing 12 host(s)…') && !stderr.includes('interrupted')) child.kill('SIGINT');
    });
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(code, stderr).toBe(130);
    expect(stderr).toContain('interrupted: finishing the hosts under way');
    expect(stderr).toMatch(/berth: interrupted with \d+ host\(s\) removed; the others, the bridge and cgroups are still there\n {2}hint: Run berth down again to finish\./);
    const partial = JSON.parse(stdout) as DownJson & { interrupted: boolean };
    expect(partial).toMatchObject({ interrupted: true, machine: 'kept', failed: [] });
    expect(partial.removed.length).toBeLessThan(12);
    expect(many.leftovers().processes).toBeGreaterThan(0);

    const rest = await berth(['down', '--data-dir', many.dataDir, '--json'], {}, { timeoutMs: 120_000 });
    expect(rest.code, rest.stderr).toBe(0);
    const finished = JSON.parse(rest.stdout) as DownJson;
    expect(finished).toMatchObject({ machine: 'removed', failed: [] });
    expect([...partial.removed, ...finished.removed].sort()).toHaveLength(12);
    expect(many.leftovers()).toEqual(ZERO);
    expect(machineTraces()).toEqual([]);
  });

  it('a server given another network than its hosts run on refuses to start, changing nothing', async () => {
    const { proc: moved, host } = await stoppedServerWithHost('down-network');
    for (const change of [['--subnet', '10.211.0.0/25'], ['--name', 'berthdwx'], ['--bridge', 'berthdwx0']]) {
      const args = ['server', '--data-dir', moved.dataDir, '--port', String(PORTS.api), '--agent-port', String(PORTS.agent), '--router-port', '0', '--bridge', NET.bridge, '--subnet', NET.subnet, '--name', NET.cgroupName, ...change];
      const refused = await berth(args, {}, { timeoutMs: 30_000 });
      expect(refused.code, refused.stderr).toBe(2);
      expect(refused.stderr).toContain(`1 host(s) of ${moved.dataDir}/hosts run on bridge ${NET.bridge} (${NET.subnet}, name ${NET.cgroupName}), not on`);
      expect(refused.stderr).toContain(`hint: Start it with --bridge ${NET.bridge} --subnet ${NET.subnet} --name ${NET.cgroupName}, or remove those hosts first (berth down)`);
    }
    expect(existsSync('/sys/class/net/berthdwx0')).toBe(false);
    // Nothing was recorded as gone: on its own network the server adopts the host, and it answers.
    await moved.restart();
    await waitFor('its agent back', async () => ((await moved.api.get<HostView>(`/v1/hosts/${host.body.id}`)).body.agent.connected ? true : undefined), { timeoutMs: 30_000 });
    const run = await moved.api.post<{ status: string }>('/v1/commands', { targets: { hostIds: [host.body.id] }, parameters: { commands: ['true'] }, wait: 30 });
    expect(run.body.status).toBe('Success');
    await moved.remove(); // the next test's server shares the network and ports
  });

  it('a host it cannot remove: exit 1, the bridge and the data dir kept for it; the next run finishes', async (ctx) => {
    const { proc: stuck, host } = await stoppedServerWithHost('down-stuck');
    // An immutable file in the host's directory: the driver cannot remove the host, as when a disk fails.
    const pinned = join(stuck.dataDir, 'hosts', host.body.id, 'fstab');
    try {
      execFileSync('chattr', ['+i', pinned], { stdio: 'ignore' });
    } catch {
      return ctx.skip(); // a filesystem without the immutable attribute (the host is removed after all)
    }
    try {
      const down = await berth(['down', '--data-dir', stuck.dataDir, '--purge', '--json'], {}, { timeoutMs: 120_000 });
      expect(down.code, down.stderr).toBe(1);
      expect(down.stderr).toContain(`could not remove ${host.body.id}: `);
      expect(down.stderr).toContain('berth: 1 host(s) could not be removed; the bridge and cgroups stay for them, and so does the data dir');
      expect(JSON.parse(down.stdout)).toMatchObject({ removed: [], failed: [{ id: host.body.id }], machine: 'kept', purged: false });
      expect(existsSync(`/sys/class/net/${NET.bridge}`)).toBe(true);
      expect(existsSync(join(stuck.dataDir, 'db'))).toBe(true);
    } finally {
      execFileSync('chattr', ['-i', pinned]);
    }
    const again = await berth(['down', '--data-dir', stuck.dataDir, '--purge'], {}, { timeoutMs: 120_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(existsSync(stuck.dataDir)).toBe(false);
    expect(stuck.leftovers()).toEqual(ZERO);
    expect(machineTraces()).toEqual([]);
  });

  it('will not purge a directory that is no berth data dir, nor a home', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-not-a-data-dir-'));
    try {
      writeFileSync(join(dir, 'notes.txt'), 'mine\n');
      const refused = await berth(['down', '--data-dir', dir, '--purge'], {});
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('does not look like a berth data dir');
      expect(existsSync(join(dir, 'notes.txt'))).toBe(true);
      // Nor a person's home, even one that holds what a data dir would (a data dir given as ~).
      writeFileSync(join(dir, 'token'), 'x\n');
      const home = await berth(['down', '--data-dir', dir, '--purge'], { HOME: dir });
      expect(home.code).toBe(2);
      expect(home.stderr).toContain(`${dir} is your home directory, so --purge will not remove it`);
      expect(existsSync(join(dir, 'notes.txt'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
