/**
 * Test harness: a real berth server with the real local driver (namespaces, overlay, bridge, cgroups)
 * on a bridge and subnet of the test's own, talking to real agents; or the same as a separate
 * `berth server` process, for tests that kill it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { LocalDriver, countLocalLeftovers, type LocalDriverConfig, type LeftoverCounts } from '../../src/drivers/local/index.js';
import { BerthServer } from '../../src/server/berth-server.js';
import { mountPoints } from '../../src/drivers/local/overlay.js';
import { agentBundleDir, agentCommand, packageRoot } from '../../src/cli/paths.js';

export interface TestNetwork {
  bridge: string;
  subnet: string;
  cgroupName: string;
  /** Where hosts with egress resolve names (LocalDriverConfig.nameServers); default none. */
  nameServers?: string[];
}

export function driverConfig(dataDir: string, net: TestNetwork): LocalDriverConfig {
  return {
    stateDir: join(dataDir, 'hosts'),
    agentDir: agentBundleDir(),
    agentCommand: agentCommand(),
    bridge: net.bridge,
    subnet: net.subnet,
    cgroupName: net.cgroupName,
    ...(net.nameServers ? { nameServers: net.nameServers } : {}),
    stopGraceMs: 1000,
    hiddenPaths: [dataDir],
  };
}

export async function tempDataDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `berth-${prefix}-`));
}

export interface InProcessServer {
  server: BerthServer;
  dataDir: string;
  api: Api;
  leftovers(): LeftoverCounts;
  stop(opts?: { removeHosts?: boolean }): Promise<void>;
}

export interface StartOptions {
  dataDir?: string;
  agentPort?: number;
  databaseUrl?: string;
  routerPort?: number;
  /** The router's domain, HTTPS files and plain-HTTP redirect port (ServerConfig.router). */
  router?: { domain?: string; tls?: { certFile: string; keyFile: string }; redirectPort?: number };
  /** The API over HTTPS (ServerConfig.tls). */
  tls?: { certFile: string; keyFile: string };
  /** The agent channel over TLS (ServerConfig.agentTls). */
  agentTls?: { certFile: string; keyFile: string; caFile?: string };
  recordShells?: boolean;
  /** The time pools' schedules are read at (ServerConfig.scheduleClock). */
  scheduleClock?: () => Date;
  /** Another driver on the test's network (a LocalDriver subclass that fails on cue). */
  driver?: (config: LocalDriverConfig) => LocalDriver;
}

export async function startServer(net: TestNetwork, opts: StartOptions = {}): Promise<InProcessServer> {
  const dataDir = opts.dataDir ?? (await tempDataDir('srv'));
  const config = driverConfig(dataDir, net);
  const driver = opts.driver ? opts.driver(config) : new LocalDriver(config);
  const server = await BerthServer.start({
    dataDir,
    port: 0,
    agentPort: opts.agentPort ?? 0,
    driver,
    agentDir: config.agentDir,
    toolRunner: driver.run,
    databaseUrl: opts.databaseUrl,
    log: process.env['BERTH_TEST_LOG'] ? (line: string) => process.stderr.write(`berth: ${line}\n`) : () => {},
    sweepIntervalMs: 200,
    monitorIntervalMs: 500,
    router: { port: opts.routerPort ?? 0, healthIntervalMs: 200, ...opts.router },
    envSweepIntervalMs: 200,
    ...(opts.recordShells ? { recordShells: true } : {}),
    ...(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.agentTls ? { agentTls: opts.agentTls } : {}),
    ...(opts.scheduleClock ? { scheduleClock: opts.scheduleClock } : {}),
  });
  const ca = opts.tls?.certFile;
  const api = new Api(server.url, server.token, ca);
  return {
    server,
    dataDir,
    api,
    leftovers: () => countLocalLeftovers(config),
    async stop({ removeHosts = true } = {}) {
      // With the server's token as it is now: a test may have rotated it.
      const api = new Api(server.url, server.token, ca);
      if (removeHosts) {
        // Pools first, or they would refill as their hosts go.
        const pools = await api.get<{ pools: { name: string }[] }>('/v1/pools');
        for (const pool of pools.body.pools) await api.delete(`/v1/pools/${pool.name}`);
        await server.pools.reconciler.settled();
        const { body } = await api.get<{ hosts: { id: string }[] }>('/v1/hosts');
        for (const host of body.hosts) await api.delete(`/v1/hosts/${host.id}`);
      }
      await server.stop();
      if (removeHosts) {
        await driver.teardown(); // the test's bridge and cgroup parents
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  };
}

/** A thin JSON client that returns status and body, so tests can assert on both. */
export class Api {
  /** `caFile`: the certificate an API over HTTPS is trusted by, read at each call (fetch trusts the well-known CAs only). */
  constructor(
    readonly url: string,
    readonly token: string | undefined,
    private readonly caFile?: string,
  ) {}

  get<T>(path: string) {
    return this.call<T>('GET', path);
  }
  post<T>(path: string, body: unknown) {
    return this.call<T>('POST', path, JSON.stringify(body));
  }
  put<T>(path: string, body: unknown) {
    return this.call<T>('PUT', path, JSON.stringify(body));
  }
  patch<T>(path: string, body: unknown) {
    return this.call<T>('PATCH', path, JSON.stringify(body));
  }
  delete<T>(path: string) {
    return this.call<T>('DELETE', path);
  }

  async call<T>(method: string, path: string, rawBody?: string, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
    const allHeaders = {
      ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      ...(rawBody !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    };
    if (this.caFile) return this.callTrusting<T>(readFileSync(this.caFile), method, path, rawBody, allHeaders);
    const res = await fetch(`${this.url}${path}`, { method, headers: allHeaders, ...(rawBody !== undefined ? { body: rawBody } : {}) });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  private callTrusting<T>(ca: Buffer, method: string, path: string, rawBody: string | undefined, headers: Record<string, string>): Promise<{ status: number; body: T }> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(`${this.url}${path}`, { method, headers, ca, agent: false }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : undefined) as T }));
      });
      req.on('error', reject);
      req.end(rawBody);
    });
  }
}

/** Runs the built CLI (`bin/berth.js`) as a user would. */
export function berth(
  args: string[],
  env: Record<string, string>,
  opts: { timeoutMs?: number; onStdout?: (chunk: string) => void; interrupt?: AbortSignal; input?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(packageRoot(), 'bin', 'berth.js'), ...args], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root', ...env },
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'] as ['pipe', 'pipe', 'pipe'],
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      opts.onStdout?.(d.toString());
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    // As a user's Ctrl-C would.
    opts.interrupt?.addEventListener('abort', () => child.kill('SIGINT'), { once: true });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** `berth server` as its own process, so a test can kill -9 it. */
export async function spawnServer(dataDir: string, net: TestNetwork, ports: { api: number; agent: number; router?: number }): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [join(packageRoot(), 'bin', 'berth.js'), 'server', '--data-dir', dataDir, '--port', String(ports.api), '--agent-port', String(ports.agent), '--router-port', String(ports.router ?? 0), '--bridge', net.bridge, '--subnet', net.subnet, '--name', net.cgroupName],
    { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root' }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (process.env['BERTH_TEST_SERVER_LOG']) process.stderr.write(d);
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`berth server exited with ${child.exitCode}: ${stderr}`);
    try {
      const info = JSON.parse(readFileSync(join(dataDir, 'server.json'), 'utf8')) as { pid: number };
      if (info.pid === child.pid) {
        const res = await fetch(`http://127.0.0.1:${ports.api}/v1/health`).catch(() => undefined);
        if (res?.ok) return child;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`berth server did not come up: ${stderr}`);
}

export function tokenOf(dataDir: string): string {
  return readFileSync(join(dataDir, 'token'), 'utf8').trim();
}

/** The machine-side pid of a host's agent (the child of the host's init), from the driver's state file. */
export function agentPidOf(dataDir: string, hostId: string): number {
  const state = JSON.parse(readFileSync(join(dataDir, 'hosts', hostId, 'state.json'), 'utf8')) as { initPid: number };
  const children = readFileSync(`/proc/${state.initPid}/task/${state.initPid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  const agent = children.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('berth-agent'));
  if (!agent) throw new Error(`no agent process under the init of ${hostId} (${state.initPid})`);
  return agent;
}

/**
 * A server in a process of its own, so a test can kill -9 it and start it again on the same data
 * dir and ports. `remove()` kills it and removes its hosts, network, cgroup parents and data dir.
 */
export class ServerProcess {
  /** A client with the data dir's token (created by the first start). */
  api = new Api('', undefined);
  private child: ChildProcess | undefined;

  private constructor(
    readonly dataDir: string,
    readonly net: TestNetwork,
    readonly ports: { api: number; agent: number },
  ) {}

  static async start(prefix: string, net: TestNetwork, ports: { api: number; agent: number }): Promise<ServerProcess> {
    const proc = new ServerProcess(await tempDataDir(prefix), net, ports);
    await proc.restart();
    return proc;
  }

  /** A data dir and network for a server some other command starts (`berth up`); remove() cleans up. */
  static async prepare(prefix: string, net: TestNetwork, ports: { api: number; agent: number }): Promise<ServerProcess> {
    return new ServerProcess(await tempDataDir(prefix), net, ports);
  }

  /** Once the server has created its token. */
  useToken(): void {
    this.api = new Api(`http://127.0.0.1:${this.ports.api}`, tokenOf(this.dataDir));
  }

  /** (Re)starts the server; it recovers what the previous one left. */
  async restart(): Promise<void> {
    this.child = await spawnServer(this.dataDir, this.net, this.ports);
    this.api = new Api(`http://127.0.0.1:${this.ports.api}`, tokenOf(this.dataDir));
  }

  /** As a person's Ctrl-C: SIGINT, and waits until it has stopped (its hosts keep running). */
  stop(): Promise<void> {
    return this.signal('SIGINT');
  }

  /** kill -9, and waits until it is gone. */
  kill(): Promise<void> {
    return this.signal('SIGKILL');
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
  }

  leftovers(): LeftoverCounts {
    return countLocalLeftovers(driverConfig(this.dataDir, this.net));
  }

  async remove(): Promise<void> {
    await this.kill();
    const driver = new LocalDriver(driverConfig(this.dataDir, this.net));
    // Hosts outlive a killed server: removed here, or their namespaces and processes stay on the machine.
    for (const found of await driver.list()) await driver.terminate(found.id, found.driverData).catch(() => undefined);
    await driver.teardown();
    // A killed server leaves its bake views (under images/) mounted; its next start would reuse them.
    const ours = [...mountPoints()].filter((p) => p.startsWith(`${this.dataDir}/`)).sort((a, b) => b.length - a.length);
    for (const point of ours) execFileSync('umount', ['-l', point]);
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * For a test file: an in-process server on `net` started before its tests and stopped after them,
 * with every host removed — and a check that nothing was left on the machine. Call inside describe.
 */
export function useServer(net: TestNetwork, opts: Pick<StartOptions, 'scheduleClock'> = {}): { readonly srv: InProcessServer } {
  let srv: InProcessServer | undefined;
  let baseline: LeftoverCounts | undefined;
  beforeAll(async () => {
    srv = await startServer(net, opts);
    baseline = srv.leftovers();
  });
  afterAll(async () => {
    if (!srv) return;
    await srv.stop();
    expect(srv.leftovers()).toEqual(baseline);
  });
  return {
    get srv(): InProcessServer {
      if (!srv) throw new Error('the server has not started');
      return srv;
    },
  };
}
