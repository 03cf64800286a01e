/**
 * The main job as the README runs it: `berth up` on a fresh data dir starts the server, bakes the
 * bundled demo (its npm dependencies installed during the bake), applies its stack and pool and
 * fills the pool; `berth env create alice --stack demo` then prints a URL that answers 200 with the
 * demo's own page, through the router. Then Ctrl-C and `berth down --purge` leave nothing behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { EnvironmentView } from '../../src/environments/views.js';
import { packageRoot } from '../../src/cli/paths.js';
import { berth, ServerProcess } from '../helpers/server.js';

const NET = { bridge: 'berthup0', subnet: '10.235.0.0/22', cgroupName: 'berthup' };
const PORTS = { api: 17470, agent: 17471, router: 17480 };

function get(url: string): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    // As a browser resolves NAME.localhost: to this machine, with the name in the Host header.
    const req = http.get({ host: '127.0.0.1', port: u.port, path: u.pathname, headers: { host: u.host }, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

describe('berth up', () => {
  let up: ChildProcess | undefined;
  let cleanup: ServerProcess | undefined;
  // What a failed test left: the server stopped, then whatever is still there removed.
  afterAll(async () => {
    if (up && up.exitCode === null) {
      const exited = new Promise((r) => up?.once('exit', r));
      up.kill('SIGINT');
      await exited;
    }
    await cleanup?.remove();
  });

  it('starts berth with the demo baked and its pool filled; the URL of `env create` answers with the app', async () => {
    cleanup = await ServerProcess.prepare('up', NET, PORTS);
    let stderr = '';
    up = spawn(
      process.execPath,
      [join(packageRoot(), 'bin', 'berth.js'), 'up', '--data-dir', cleanup.dataDir, '--port', String(PORTS.api), '--agent-port', String(PORTS.agent), '--router-port', String(PORTS.router), '--bridge', NET.bridge, '--subnet', NET.subnet, '--name', NET.cgroupName],
      { cwd: packageRoot(), env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const upNow = up;
    await new Promise<void>((resolve, reject) => {
      upNow.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('berth is up')) resolve();
      });
      upNow.once('exit', (code) => reject(new Error(`berth up exited ${code ?? '?'}:\n${stderr}`)));
    });
    // Progress was shown: the bake's steps, the pool filling.
    expect(stderr).toMatch(/\[demo \d+\/\d+\] run cd \/srv\/berth-demo && npm ci/);
    expect(stderr).toMatch(/pool demo: 2\/2 ready/);
    expect(stderr).toContain('npx berth env create alice --stack demo');
    cleanup.useToken();

    const created = await berth(['env', 'create', 'alice', '--stack', 'demo', '--json'], { BERTH_URL: `http://127.0.0.1:${PORTS.api}`, BERTH_TOKEN: cleanup.api.token ?? '' }, { timeoutMs: 120_000 });
    expect(created.code, created.stderr).toBe(0);
    const view = JSON.parse(created.stdout) as EnvironmentView;
    expect(view.url).toBe(`http://alice.localhost:${PORTS.router}/`);
    const page = await get(view.url ?? '');
    expect(page.status).toBe(200);
    expect(page.body).toContain('<title>berth demo</title>');
    expect(page.body).toContain('"environment":"alice"');

    // Service mode: web, api and worker each on a host of their own; web reaches the api on its host
    // (the environment's hosts are one group), so /api answers through the router.
    const split = await berth(['env', 'create', 'bob', '--stack', 'demo', '--mode', 'service', '--json'], { BERTH_URL: `http://127.0.0.1:${PORTS.api}`, BERTH_TOKEN: cleanup.api.token ?? '' }, { timeoutMs: 120_000 });
    expect(split.code, split.stderr).toBe(0);
    const splitView = JSON.parse(split.stdout) as EnvironmentView;
    expect(splitView.hosts.map((h) => h.service).sort()).toEqual(['api', 'web', 'worker']);
    const config = await get(`http://bob.localhost:${PORTS.router}/api/config`);
    expect(config.status, config.body).toBe(200);
    expect(config.body).toContain('"environment":"bob"');

    // The README's way out: Ctrl-C, then `berth down --purge` leaves nothing of berth on the machine.
    const upNowExited = new Promise((r) => upNow.once('exit', r));
    upNow.kill('SIGINT');
    await upNowExited;
    expect(cleanup.leftovers().processes).toBeGreaterThan(0); // the hosts outlive the server
    const down = await berth(['down', '--data-dir', cleanup.dataDir, '--purge'], {}, { timeoutMs: 120_000 });
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toMatch(/^berth is down: \d+ host\(s\) removed, and bridge berthup0 with its firewall tables and cgroups; data dir .* removed\n$/);
    expect(cleanup.leftovers()).toEqual({ netns: 0, mounts: 0, veths: 0, cgroups: 0, processes: 0, hostDirs: 0, peerRules: 0, loopDevices: 0, machinePortGrants: 0, egressGrants: 0 });
    expect(existsSync(`/sys/class/net/${NET.bridge}`)).toBe(false);
    expect(existsSync(cleanup.dataDir)).toBe(false);
  }, 300_000);
});
