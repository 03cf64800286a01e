/**
 * Counts what a local driver instance has left on the machine, so tests can assert that a run leaves
 * nothing behind ("before == after"). Mounts are looked for in EVERY mount namespace on the machine,
 * since host mounts live in private namespaces that a leaked process would keep alive.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { cgroupPids, detectCgroupLayout, parentDirs, readMountinfo } from './cgroups.js';
import { netnsPrefix, resolveLocalConfig, type LocalDriverConfig } from './config.js';
import { listNetnsHostIds, listOurVeths, NETNS_DIR } from './network.js';
import { ALLOW_PREF } from './reachability.js';
import { loopDevicesUnder } from './disk.js';
import { tableName } from './machine-ports.js';
import { EGRESS_PREF, egressTableName } from './egress.js';

export interface LocalLeftovers {
  /** Named network namespaces `<cgroupName>-*`. */
  netns: string[];
  /** Mount entries (any namespace) under stateDir, overlays with a layer in stateDir, or our netns bind mounts. */
  mounts: string[];
  /** Interfaces attached to the bridge or carrying our alias. */
  veths: string[];
  /** cgroup directories below our parents in every hierarchy. */
  cgroups: string[];
  /** Processes in those cgroups. */
  processes: number[];
  /** Host directories in stateDir. */
  hostDirs: string[];
  /** Routing rules that let one of our hosts reach others (reachability.ts), as `ip rule` prints them. */
  peerRules: string[];
  /** Loop devices backed by a host's disk (disk.ts). */
  loopDevices: string[];
  /** Grants of the machine's ports to a host address (machine-ports.ts), as `address . port`. */
  machinePortGrants: string[];
  /** Egress of a host address (egress.ts): its routing rule and its entry in the egress table. */
  egressGrants: string[];
}

export type LeftoverCounts = Record<keyof LocalLeftovers, number>;

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .flatMap((e) => [join(dir, e.name), ...subdirs(join(dir, e.name))]);
  } catch {
    return [];
  }
}

/** One mountinfo text per distinct mount namespace on the machine. */
function mountinfoOfEveryNamespace(): string[] {
  const seen = new Set<string>();
  const texts: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ns = readlinkSync(`/proc/${entry}/ns/mnt`);
      if (seen.has(ns)) continue;
      texts.push(readFileSync(`/proc/${entry}/mountinfo`, 'utf8'));
      seen.add(ns);
    } catch {
      // Process exited or is a kernel thread.
    }
  }
  return texts;
}

export function findLocalLeftovers(config: LocalDriverConfig): LocalLeftovers {
  const cfg = resolveLocalConfig(config);
  const layout = detectCgroupLayout(readMountinfo());
  const prefix = netnsPrefix(cfg);
  const cgroups = parentDirs(layout, cfg.cgroupName).flatMap(subdirs);
  const mounts = new Set<string>();
  for (const text of mountinfoOfEveryNamespace()) {
    for (const line of text.split('\n')) {
      const mountPoint = line.split(' ')[4] ?? '';
      const mentionsState = line.includes(`${cfg.stateDir}/`);
      const isOurNetns = mountPoint.startsWith(`${NETNS_DIR}/${prefix}`);
      if (mentionsState || isOurNetns) mounts.add(line);
    }
  }
  let hostDirs: string[];
  try {
    hostDirs = readdirSync(cfg.stateDir, { withFileTypes: true })
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => join(cfg.stateDir, e.name));
  } catch {
    hostDirs = [];
  }
  return {
    netns: listNetnsHostIds(prefix).map((id) => `${prefix}${id}`),
    mounts: [...mounts],
    veths: listOurVeths(cfg.bridge, `${cfg.cgroupName}:`),
    cgroups,
    processes: cgroupPids(cgroups),
    hostDirs,
    peerRules: ipRules(ALLOW_PREF, cfg.bridge),
    loopDevices: loopDevicesUnder(cfg.stateDir),
    machinePortGrants: machinePortGrants(cfg.bridge),
    egressGrants: egressGrants(cfg.bridge),
  };
}

/** Egress rules, and the elements of the egress table's per-host sets (egress.ts). */
function egressGrants(bridge: string): string[] {
  const rules = ipRules(EGRESS_PREF, bridge).map((line) => `rule: ${line}`);
  const elements = ['egress_hosts', 'restricted', 'allowed', 'resolved'].flatMap((set) => {
    try {
      const text = execFileSync('nft', ['-j', 'list', 'set', 'inet', egressTableName(bridge), set], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
      const parsed = JSON.parse(text) as { nftables?: { set?: { elem?: unknown[] } }[] };
      return (parsed.nftables ?? []).flatMap((entry) => entry.set?.elem ?? []).map((e) => `${set}: ${JSON.stringify(e)}`);
    } catch {
      return []; // no nft, no table, or a table of an older berth without this set
    }
  });
  return [...rules, ...elements];
}

function machinePortGrants(bridge: string): string[] {
  try {
    const text = execFileSync('nft', ['-j', 'list', 'set', 'inet', tableName(bridge), 'granted'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
    const parsed = JSON.parse(text) as { nftables?: { set?: { elem?: { concat?: unknown[] }[] } }[] };
    return (parsed.nftables ?? []).flatMap((entry) => entry.set?.elem ?? []).map((e) => (e.concat ?? []).join(' . '));
  } catch {
    return []; // no nft, or no table: nothing granted
  }
}

function ipRules(pref: number, bridge: string): string[] {
  try {
    const text = execFileSync('ip', ['-4', 'rule', 'show', 'pref', String(pref)], { encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
    return text.split('\n').filter((line) => new RegExp(`\\biif ${bridge}\\b`).test(line));
  } catch {
    return [];
  }
}

/** Number of each kind of leftover; compare before and after a test. */
export function countLocalLeftovers(config: LocalDriverConfig): LeftoverCounts {
  const found = findLocalLeftovers(config);
  return {
    netns: found.netns.length,
    mounts: found.mounts.length,
    veths: found.veths.length,
    cgroups: found.cgroups.length,
    processes: found.processes.length,
    hostDirs: found.hostDirs.length,
    peerRules: found.peerRules.length,
    loopDevices: found.loopDevices.length,
    machinePortGrants: found.machinePortGrants.length,
    egressGrants: found.egressGrants.length,
  };
}
