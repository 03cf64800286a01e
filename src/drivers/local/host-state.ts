/**
 * The record that lets us find a host again: written to <hostDir>/state.json and returned verbatim
 * as driverData. Paths and names are re-derived from the host id and the driver config rather than
 * trusted from the record, so a tampered or stale record can never point terminate at other files.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isSameLiveProcess } from './proc.js';

export const STATE_VERSION = 1;

export interface HostRecord {
  version: number;
  id: string;
  hostname: string;
  ip: string;
  prefixLength: number;
  gateway: string;
  image: string;
  netns: string;
  veth: string;
  hostDir: string;
  consoleLog: string;
  cgroupDirs: string[];
  /** The launcher (later nsenter, then unshare): parent of the host's PID 1, in the machine's pid namespace. */
  outerPid?: number;
  outerStartTime?: number;
  /** The host's PID 1 as seen from the machine. */
  initPid?: number;
  initStartTime?: number;
  /** Where its agent dials and the machine's ports it was granted (see machine-ports.ts). */
  agentIp?: string;
  agentPort?: number;
  machinePorts?: number[];
  /** Whether it may send beyond the machine (see egress.ts). */
  egress?: boolean;
  /** With egress: the ranges and names it is narrowed to (core/egress-allow.ts); absent: everything. */
  egressAllow?: string[];
  launchedAt: string;
}

function optionalNumber(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** Reads whatever of a record is present in untrusted JSON (driverData or a state file). */
export function parseHostRecord(data: unknown): Partial<HostRecord> {
  if (typeof data !== 'object' || data === null) return {};
  const d = data as Record<string, unknown>;
  const record: Partial<HostRecord> = {};
  if (typeof d['version'] === 'number') record.version = d['version'];
  for (const key of ['id', 'hostname', 'ip', 'gateway', 'image', 'netns', 'veth', 'hostDir', 'consoleLog', 'launchedAt', 'agentIp'] as const) {
    if (typeof d[key] === 'string') record[key] = text(d[key]);
  }
  if (typeof d['prefixLength'] === 'number') record.prefixLength = d['prefixLength'];
  if (Array.isArray(d['cgroupDirs'])) record.cgroupDirs = d['cgroupDirs'].filter((x): x is string => typeof x === 'string');
  if (d['egress'] === true) record.egress = true;
  if (Array.isArray(d['egressAllow'])) record.egressAllow = d['egressAllow'].filter((x): x is string => typeof x === 'string');
  const agentPort = optionalNumber(d['agentPort']);
  if (agentPort !== undefined) record.agentPort = agentPort;
  if (Array.isArray(d['machinePorts'])) record.machinePorts = d['machinePorts'].filter((p): p is number => optionalNumber(p) !== undefined && p <= 65535);
  const outerPid = optionalNumber(d['outerPid']);
  const outerStartTime = optionalNumber(d['outerStartTime']);
  const initPid = optionalNumber(d['initPid']);
  const initStartTime = optionalNumber(d['initStartTime']);
  if (outerPid !== undefined && outerStartTime !== undefined) Object.assign(record, { outerPid, outerStartTime });
  if (initPid !== undefined && initStartTime !== undefined) Object.assign(record, { initPid, initStartTime });
  return record;
}

export function readStateFile(path: string): Partial<HostRecord> | undefined {
  try {
    return parseHostRecord(JSON.parse(readFileSync(path, 'utf8')));
  } catch {
    return undefined;
  }
}

/**
 * The host's address while the init that `driverData` names still runs; undefined once the host was
 * reset or terminated since (a stale view of it), or when it is not fully present.
 */
export function liveAddress(stateFile: string, driverData: Record<string, unknown>): string | undefined {
  const given = parseHostRecord(driverData);
  const live = readStateFile(stateFile);
  if (!live?.ip || live.initPid === undefined || live.initPid !== given.initPid || live.initStartTime !== given.initStartTime) return undefined;
  return isSameLiveProcess(live.initPid, live.initStartTime) ? live.ip : undefined;
}

/** Atomic replace, so a crash mid-write never leaves a truncated record behind. */
/** Synchronous, as the boot files are (see writeHostFiles): one small file, twice per launch. */
export function writeStateFile(path: string, record: HostRecord): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

export function recordToDriverData(record: HostRecord): Record<string, unknown> {
  return { ...record, cgroupDirs: [...record.cgroupDirs], ...(record.machinePorts ? { machinePorts: [...record.machinePorts] } : {}), ...(record.egressAllow ? { egressAllow: [...record.egressAllow] } : {}) };
}

/** driverData from the control plane, completed by the state file (either may be missing after a crash). */
export function knownRecord(stateFile: string, driverData: Record<string, unknown>): Partial<HostRecord> {
  const fromStore = parseHostRecord(driverData);
  const fromDisk = readStateFile(stateFile) ?? {};
  return { ...fromDisk, ...fromStore };
}
