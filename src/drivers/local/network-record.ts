/**
 * What a local driver set up on the machine, recorded in its state dir before it sets it up: the
 * bridge, its subnet and the instance name (cgroups, network namespaces and nftables tables are
 * named after them). `berth down` and `berth doctor` read it, so that neither needs to be told the
 * options a server ran with, even when its start failed half-way.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError } from '../../core/errors.js';

export interface LocalNetwork {
  bridge: string;
  subnet: string;
  /** The instance name (`--name`, LocalDriverConfig.cgroupName). */
  name: string;
}

const FILE = '.network.json';

export function recordNetwork(stateDir: string, network: LocalNetwork): void {
  writeFileSync(join(stateDir, FILE), `${JSON.stringify(network, null, 2)}\n`, { mode: 0o600 });
}

/** The network a driver on this state dir last set up; undefined if none did. */
export function recordedNetwork(stateDir: string): LocalNetwork | undefined {
  try {
    const parsed = JSON.parse(readFileSync(join(stateDir, FILE), 'utf8')) as Partial<LocalNetwork>;
    return typeof parsed.bridge === 'string' && typeof parsed.subnet === 'string' && typeof parsed.name === 'string' ? { bridge: parsed.bridge, subnet: parsed.subnet, name: parsed.name } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Refuses another network than the one the hosts still in `stateDir` run on: they could not reach
 * the agent channel at the new address, and under another name the driver would not find them at
 * all (their namespaces and cgroups are named after it) while the store counts them live.
 */
export function assertSameNetwork(stateDir: string, network: LocalNetwork): void {
  const previous = recordedNetwork(stateDir);
  if (!previous || (previous.bridge === network.bridge && previous.subnet === network.subnet && previous.name === network.name)) return;
  const hosts = hostDirCount(stateDir);
  if (hosts === 0) return;
  const show = (n: LocalNetwork) => `bridge ${n.bridge} (${n.subnet}, name ${n.name})`;
  throw new BerthError(
    'conflict',
    `${hosts} host(s) of ${stateDir} run on ${show(previous)}, not on ${show(network)} as this server was given`,
    `Start it with --bridge ${previous.bridge} --subnet ${previous.subnet} --name ${previous.name}, or remove those hosts first (berth down), then start it on the new network.`,
  );
}

/** How many hosts have a directory in the state dir (the driver's own entries start with a dot). */
export function hostDirCount(stateDir: string): number {
  try {
    return readdirSync(stateDir, { withFileTypes: true }).filter((e) => e.isDirectory() && !e.name.startsWith('.')).length;
  } catch {
    return 0; // no state dir: no host ever ran from it
  }
}
