/** Helpers for the supervisor's tests (real processes, temp dirs). Not part of the agent bundle. */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { serviceSpec, type ServiceSpec, type ServiceSpecInput, type ServiceStatus } from '../../protocol/messages.js';
import { Supervisor, type SupervisorOptions } from './supervisor.js';

export function makeSpec(name: string, cmd: string, overrides: Partial<ServiceSpecInput> = {}): ServiceSpec {
  return serviceSpec.parse({
    name,
    cmd,
    env: {},
    ports: [],
    dependsOn: [],
    restart: { policy: 'always', initialDelayMs: 50 },
    stopTimeoutSeconds: 2,
    configHash: `${name}-1`,
    ...overrides,
  });
}

/** A temp dir per test file, and every supervisor made through it stopped at the end. */
export class Sandbox {
  readonly root = mkdtempSync(join(tmpdir(), 'berth-supervisor-test-'));
  readonly stateDir = join(this.root, 'state');
  readonly logDir = join(this.root, 'logs');
  readonly events: ServiceStatus[] = [];
  readonly logLines: string[] = [];
  private readonly supervisors: Supervisor[] = [];

  supervisor(opts: Partial<SupervisorOptions> = {}): Supervisor {
    const sup = new Supervisor({
      stateDir: this.stateDir,
      logDir: this.logDir,
      log: (line) => this.logLines.push(line),
      onStatus: (s) => this.events.push(s),
      ...opts,
    });
    this.supervisors.push(sup);
    return sup;
  }

  /**
   * Live processes of this sandbox's services: their BERTH_SERVICE_ID ends with a hash of the state dir
   * (computed here independently of the supervisor's code).
   */
  processes(services?: string[]): number[] {
    const instance = createHash('sha256').update(resolve(this.stateDir)).digest('hex').slice(0, 12);
    const names = services ? `(${services.join('|')})` : '[a-z0-9_-]+';
    const marker = new RegExp(`(^|\\0)BERTH_SERVICE_ID=${names}\\.${instance}\\0`);
    const found: number[] = [];
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
      try {
        if (marker.test(readFileSync(`/proc/${name}/environ`, 'latin1')) && isAlive(Number(name))) found.push(Number(name));
      } catch {
        // gone
      }
    }
    return found;
  }

  path(name: string): string {
    return join(this.root, name);
  }

  /** Stops what the supervisors left running (a detached one's services through a fresh supervisor). */
  async cleanup(): Promise<void> {
    for (const sup of this.supervisors) {
      try {
        await sup.stopAll();
      } catch {
        // detached
      }
    }
    const last = new Supervisor({ stateDir: this.stateDir, logDir: this.logDir, log: () => undefined, adoptedPollMs: 50 });
    await last.stopAll();
    last.detach();
    rmSync(this.root, { recursive: true, force: true });
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export function statusOf(sup: Supervisor, name: string): ServiceStatus {
  const s = sup.status().find((x) => x.name === name);
  if (!s) throw new Error(`no service ${name}`);
  return s;
}

/** Alive and not a zombie; read independently of the supervisor's own /proc code. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
