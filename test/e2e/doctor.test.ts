/**
 * `berth doctor` on this machine, as root: every check runs for real (the driver's own namespace
 * and overlay probe in the data dir's state dir), nothing fails here, and a bridge subnet that
 * another network of the machine uses fails, naming it, with exit code 1.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MachineCheck } from '../../src/drivers/local/doctor.js';
import { openStore } from '../../src/store/store.js';
import { berth } from '../helpers/server.js';

const url = process.env['BERTH_TEST_DATABASE_URL'];

const canRun = process.platform === 'linux' && process.getuid?.() === 0;
// A network of the machine's own that is not berth's: an interface (a bridge: this kernel has no dummy) with a /24.
const OTHER = { dev: 'berthdoc0', address: '10.251.0.1/24' };

describe.skipIf(!canRun)('berth doctor', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'berth-doctor-'));
    execFileSync('ip', ['link', 'add', OTHER.dev, 'type', 'bridge']);
    execFileSync('ip', ['addr', 'add', OTHER.address, 'dev', OTHER.dev]);
    execFileSync('ip', ['link', 'set', OTHER.dev, 'up']);
  });
  afterAll(async () => {
    execFileSync('ip', ['link', 'del', OTHER.dev]);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('runs every check; none fails on this machine, and it says so', async () => {
    const res = await berth(['--data-dir', dataDir, 'doctor', '--json', '--subnet', '10.252.0.0/16', '--bridge', 'berthdoc1'], {});
    expect(res.code, res.stderr).toBe(0);
    const checks = JSON.parse(res.stdout) as MachineCheck[];
    expect(checks.map((c) => c.name)).toEqual(expect.arrayContaining(['root on Linux', 'system tools', 'setpriv', 'cgroups', 'namespaces and overlayfs', 'agent bundle', 'bridge subnet', '/proc/sys writable', 'nftables', 'name service', 'disks of their own']));
    expect(checks.filter((c) => c.status === 'fail')).toEqual([]);
    // What is not ok says what to do.
    for (const c of checks.filter((x) => x.status !== 'ok')) expect(c.hint).toBeTruthy();
    const text = await berth(['--data-dir', dataDir, 'doctor', '--subnet', '10.252.0.0/16', '--bridge', 'berthdoc1'], {});
    expect(text.stdout).toMatch(/^ +CHECK +RESULT\nok +root on Linux/);
    expect(text.stdout).toMatch(/this machine can run local hosts/);
  });

  it("fails a bridge subnet another network of the machine uses, naming it, with exit code 1", async () => {
    const res = await berth(['--data-dir', dataDir, 'doctor', '--json', '--subnet', '10.251.0.0/16', '--bridge', 'berthdoc1'], {});
    expect(res.code).toBe(1);
    const subnet = (JSON.parse(res.stdout) as MachineCheck[]).find((c) => c.name === 'bridge subnet');
    expect(subnet).toMatchObject({ status: 'fail', detail: '10.251.0.0/16 overlaps 10.251.0.0/24 on berthdoc0' });
    expect(subnet?.hint).toContain('--subnet');
    const text = await berth(['--data-dir', dataDir, 'doctor', '--subnet', '10.251.0.0/16', '--bridge', 'berthdoc1'], {});
    expect(text.stdout).toContain('1 check(s) failed: this machine cannot run local hosts until they are fixed');
  });

  it('a server refuses that subnet too, before it changes anything on the machine: exit 2, no bridge, no record', async () => {
    const serverDir = join(dataDir, 'server');
    const res = await berth(['server', '--data-dir', serverDir, '--port', '0', '--agent-port', '0', '--router-port', '0', '--subnet', '10.251.0.0/16', '--bridge', 'berthdoc1', '--name', 'berthdoc'], {}, { timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(2);
    expect(res.stderr).toContain("berth: the hosts' subnet 10.251.0.0/16 overlaps 10.251.0.0/24 on berthdoc0");
    expect(res.stderr).toMatch(/hint: Choose a subnet no other network of this machine uses \(berth server --subnet\)/);
    expect(existsSync('/sys/class/net/berthdoc1')).toBe(false);
    expect(existsSync(join(serverDir, 'hosts', '.network.json'))).toBe(false);
  });

  it('with BERTH_DATABASE_URL, says which server holds that database, or that it cannot be reached', async () => {
    const args = ['--data-dir', dataDir, 'doctor', '--json', '--subnet', '10.252.0.0/16', '--bridge', 'berthdoc1'];
    const unreachable = await berth(args, { BERTH_DATABASE_URL: 'postgres://berth@127.0.0.1:1/none' });
    expect(unreachable.code).toBe(1);
    const failed = (JSON.parse(unreachable.stdout) as MachineCheck[]).find((c) => c.name === 'database');
    expect(failed?.status).toBe('fail');
    expect(failed?.detail).toMatch(/^PostgreSQL at 127\.0\.0\.1:1\/none cannot be reached: .*ECONNREFUSED/);
    expect(failed?.hint).toContain('BERTH_DATABASE_URL');
    const text = await berth(args.filter((a) => a !== '--json'), { BERTH_DATABASE_URL: 'postgres://berth@127.0.0.1:1/none' });
    expect(text.stdout).toContain('1 check(s) failed\n');
    if (!url) return;
    const free = await berth(args, { BERTH_DATABASE_URL: url });
    expect((JSON.parse(free.stdout) as MachineCheck[]).find((c) => c.name === 'database')?.detail).toMatch(/, no server holds it$/);
    const held = await openStore({ databaseUrl: url, poolSize: 1, exclusive: { holder: 'berth server pid 42 on doctor-test', log: () => {} } });
    try {
      const res = await berth(args, { BERTH_DATABASE_URL: url });
      expect(res.code, res.stderr).toBe(0);
      const database = (JSON.parse(res.stdout) as MachineCheck[]).find((c) => c.name === 'database');
      expect(database?.status).toBe('ok');
      expect(database?.detail).toMatch(/, held by berth server pid 42 on doctor-test( from [^,]+)?, connected since /);
    } finally {
      await held.close();
    }
  });
});
