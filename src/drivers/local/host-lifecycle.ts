/**
 * What a local host's spec must be before a launch, how its processes are stopped, and how a host
 * that is not running is described. The last two go by its record's pids, each checked against its
 * start time (a pid may belong to another process by now), falling back on its cgroups when the
 * launch was never recorded. And which hosts have any trace on the machine.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { parseEgressAllow } from '../../core/egress-allow.js';
import { BerthError } from '../../core/errors.js';
import type { DescribedHost, HostSpec } from '../types.js';
import { cgroupPids, listHostCgroupIds, type CgroupLayout } from './cgroups.js';
import { checkSafePath, isValidHostId, netnsPrefix, type HostNames, type ResolvedLocalConfig } from './config.js';
import type { HostRecord } from './host-state.js';
import { listNetnsHostIds, NETNS_DIR } from './network.js';
import { checkStack } from './overlay.js';
import { findInitPid, isSameLiveProcess, pollUntil, readProcessStat, sendSignal } from './proc.js';

const TERM_REPEAT_MS = 500;
const HOSTNAME_RE = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** Refuses what the local driver cannot launch: a bad hostname, an image or layer that is not a safe directory here. */
export function checkHostSpec(spec: HostSpec): void {
  if (!HOSTNAME_RE.test(spec.hostname)) {
    throw new BerthError('validation_failed', `hostname ${JSON.stringify(spec.hostname)} is not a valid host name`, 'Use 1-64 characters: dot-separated labels of letters, digits and inner hyphens.');
  }
  checkSafePath('image', spec.image);
  if (!isDirectory(spec.image)) {
    throw new BerthError('validation_failed', `image ${spec.image} is not a directory on this machine`, "For the local driver an image is a root filesystem directory; use '/' for this machine's own root filesystem.");
  }
  const { egress, egressAllow } = spec.resources;
  if (egressAllow?.length) {
    if (!egress) throw new BerthError('validation_failed', 'egressAllow narrows egress, and this host has none', 'Give the host egress with its allow list, or drop the list.');
    parseEgressAllow(egressAllow);
  }
  const layers = spec.layers ?? [];
  checkStack({ base: spec.image, layers });
  for (const layer of layers) {
    checkSafePath('image layer', layer);
    if (!isDirectory(layer)) throw new BerthError('validation_failed', `image layer ${layer} is missing on this machine`, 'Rebuild the image with `berth image build`.');
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** TERM to the host's PID 1 (the kernel then kills the rest), repeated until it is gone; KILL after `graceMs`. */
export async function stopHostProcesses(record: Partial<HostRecord>, cgroupDirs: string[], graceMs: number): Promise<void> {
  const initPid = record.initPid ?? findInitPid(cgroupPids(cgroupDirs));
  const initStartTime = record.initPid ? record.initStartTime : initPid && readProcessStat(initPid)?.startTime;
  if (initPid && isSameLiveProcess(initPid, initStartTime)) {
    // PID 1 forwards TERM to the agent and exits; the kernel then kills everything else in the host.
    // TERM is repeated because one forwarded while the agent is between fork and exec is swallowed
    // by the shell's inherited handler, and the agent would then never hear of it.
    const deadline = Date.now() + graceMs;
    let stopped = false;
    while (!stopped && Date.now() < deadline) {
      sendSignal(initPid, 'SIGTERM');
      stopped = await pollUntil(() => !isSameLiveProcess(initPid, initStartTime), Math.min(TERM_REPEAT_MS, deadline - Date.now()), 10);
    }
    if (!stopped) sendSignal(initPid, 'SIGKILL');
  }
  if (isSameLiveProcess(record.outerPid, record.outerStartTime) && record.outerPid) sendSignal(record.outerPid, 'SIGKILL');
}

/** Running, stopped (with why) or gone, from the record and whatever of the host is left on the machine. */
export function describeHost(names: HostNames, record: Partial<HostRecord>, cgroupDirs: string[]): DescribedHost {
  const { id } = names;
  const ip = record.ip;
  if (isSameLiveProcess(record.initPid, record.initStartTime)) return { id, state: 'running', ...(ip ? { ip } : {}) };
  const traces = [
    existsSync(names.hostDir) && `state dir ${names.hostDir}`,
    existsSync(`${NETNS_DIR}/${names.netns}`) && `network namespace ${names.netns}`,
    cgroupDirs.some((dir) => existsSync(dir)) && 'cgroups',
  ].filter((t): t is string => typeof t === 'string');
  if (traces.length === 0) return { id, state: 'gone', reason: 'nothing of the host is left on this machine' };
  if (!record.initPid) {
    const initPid = findInitPid(cgroupPids(cgroupDirs));
    if (initPid) return { id, state: 'running', ...(ip ? { ip } : {}), reason: `init process ${initPid} found in the host's cgroup (its launch was not recorded)` };
    return { id, state: 'stopped', ...(ip ? { ip } : {}), reason: `the host's launch never completed; leftovers: ${traces.join(', ')}` };
  }
  const stat = readProcessStat(record.initPid);
  const reused = stat !== undefined && stat.startTime !== record.initStartTime;
  const why = reused ? `init process ${record.initPid} is gone (its pid now belongs to another process)` : `init process ${record.initPid} exited`;
  return { id, state: 'stopped', ...(ip ? { ip } : {}), reason: `${why}; see ${names.consoleLog}` };
}

/** Ids of every host with any trace on the machine: a state dir, a named netns or a cgroup. */
export function foundHostIds(cfg: ResolvedLocalConfig, layout: CgroupLayout): string[] {
  const ids = new Set<string>();
  try {
    for (const entry of readdirSync(cfg.stateDir, { withFileTypes: true })) {
      if (entry.isDirectory() && !entry.name.startsWith('.')) ids.add(entry.name);
    }
  } catch {
    // No state dir yet.
  }
  for (const id of listNetnsHostIds(netnsPrefix(cfg))) ids.add(id);
  for (const id of listHostCgroupIds(layout, cfg.cgroupName)) ids.add(id);
  return [...ids].filter(isValidHostId).sort();
}
