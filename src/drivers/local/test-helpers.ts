/** Helpers for the local driver's tests on this machine (real hosts, temp dirs). Not used by berth itself. */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import type { HostResources, HostSpec, LaunchedHost } from '../types.js';
import type { LocalDriverConfig } from './config.js';
import { LocalDriver } from './local-driver.js';
import { countLocalLeftovers, type LeftoverCounts } from './leftovers.js';

/** A driver of its own under `root`, whose hosts run `sleep infinity` as their agent (no control plane needed). */
export function sleeperDriverConfig(root: string, net: { bridge: string; subnet: string; cgroupName: string }): LocalDriverConfig {
  return { stateDir: `${root}/hosts`, agentDir: `${root}/agent`, agentCommand: ['sleep', 'infinity'], stopGraceMs: 2000, ...net };
}

export interface ToolOutput {
  code: number;
  stdout: string;
  stderr: string;
}

export function runTool(file: string, args: string[]): Promise<ToolOutput> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export const initPidOf = (host: LaunchedHost): number => host.driverData['initPid'] as number;

/** Runs a script inside the host, like `docker exec`: every namespace, the host's root. */
export function inHost(host: LaunchedHost, script: string): Promise<ToolOutput> {
  return runTool('nsenter', ['-t', String(initPidOf(host)), '-a', '/bin/sh', '-c', script]);
}

/** A test driver, initialised, and what the machine held of its kind before it (to compare with after). */
export async function startTestDriver(config: LocalDriverConfig): Promise<{ driver: LocalDriver; baseline: LeftoverCounts }> {
  mkdirSync(config.agentDir, { recursive: true });
  writeFileSync(`${config.agentDir}/berth-agent.txt`, 'agent bundle\n');
  const baseline = countLocalLeftovers(config);
  const driver = new LocalDriver(config);
  await driver.init();
  return { driver, baseline };
}

/** A host spec of the machine's root as image: id `h-<run>-<name>`, its agent dialing `serverUrl`. */
export function testSpec(run: string, name: string, serverUrl: string, resources: HostResources = {}): HostSpec {
  const id = `h-${run}-${name}`;
  return { id, hostname: `${name}-${run}`, image: '/', tags: {}, resources, agent: { hostId: id, token: `token-${name}`, serverUrl } };
}
