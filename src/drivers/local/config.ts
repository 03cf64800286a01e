/**
 * Configuration of the local driver and every name it derives from it. All names of a host's
 * resources (state dir, netns, veth, cgroup) are pure functions of (config, host id), so a host can
 * be found and destroyed after a control-plane restart even when its state file is lost.
 */
import { createHash } from 'node:crypto';
import { isAbsolute, join, resolve } from 'node:path';
import { BerthError } from '../../core/errors.js';
import { parseSubnet, type Subnet } from './subnet.js';
import { DEFAULT_EGRESS_DENY } from './egress.js';
import { parseNameServer, type NameServer } from './dns-forwarder.js';

/** Structured logger; pino's Logger satisfies it. */
export interface LocalDriverLogger {
  debug(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface LocalDriverConfig {
  /** Directory holding one sub-directory per host (overlay upper/work dirs, console log, state file). */
  stateDir: string;
  /** Linux bridge every host's veth is attached to. Default `berth0`. */
  bridge?: string;
  /** IPv4 subnet of the bridge; the gateway (bridge address) is its first address. Default `10.213.0.0/16`. */
  subnet?: string;
  /** Host directory bind-mounted read-only at /.berth/agent inside every host. */
  agentDir: string;
  /** What the host's init runs and keeps running, e.g. `['node', '/.berth/agent/berth-agent.cjs']`. */
  agentCommand: string[];
  /**
   * Name of the cgroup parent under each hierarchy. It also prefixes network namespaces
   * (`<cgroupName>-<id>`), so two drivers with different names never touch each other's hosts.
   * Default `berth`.
   */
  cgroupName?: string;
  /** Time between TERM and KILL when terminating a host. Default 3000 ms. */
  stopGraceMs?: number;
  /** How long launch waits for the host's init to come up before giving up. Default 10000 ms. */
  launchTimeoutMs?: number;
  /**
   * Machine paths to hide (behind an empty read-only tmpfs) inside hosts whose image contains them,
   * e.g. the control plane's data dir when the image is '/'. stateDir is always hidden, so hosts
   * cannot read each other's files through the image.
   */
  hiddenPaths?: string[];
  /**
   * IPv4 ranges (CIDR) that hosts with egress may not reach. Default: the private, shared,
   * link-local and multicast ranges (egress.ts, DEFAULT_EGRESS_DENY); `[]` denies nothing.
   */
  egressDeny?: string[];
  /**
   * The port the control plane's agent channel listens on at the gateway, when known before it
   * listens (`berth server --agent-port`): hosts may dial it from the start, adopted ones included,
   * whatever their records say. Hosts launched since also carry the port their agent dials.
   */
  agentPort?: number;
  /**
   * Name servers (`IP` or `IP:port`) that hosts with egress resolve names through: the driver answers
   * DNS at the gateway and relays there (dns-forwarder.ts). Default none: such hosts keep their
   * image's /etc/resolv.conf. `berth server` passes this machine's name servers.
   */
  nameServers?: string[];
  logger?: LocalDriverLogger;
}

export interface ResolvedLocalConfig {
  stateDir: string;
  bridge: string;
  subnet: Subnet;
  agentDir: string;
  agentCommand: string[];
  cgroupName: string;
  stopGraceMs: number;
  launchTimeoutMs: number;
  hiddenPaths: string[];
  egressDeny: string[];
  agentPort: number | undefined;
  nameServers: NameServer[];
  logger: LocalDriverLogger;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/**
 * Paths end up in overlayfs options and an fstab file, where ',', ':', whitespace and quotes are
 * separators; refusing them is simpler and safer than escaping for three different parsers.
 */
const SAFE_PATH_RE = /^\/[^\s,:'"\\]*$/;

const silentLogger: LocalDriverLogger = { debug: () => undefined, info: () => undefined, warn: () => undefined };

function badConfig(message: string, hint: string): BerthError {
  return new BerthError('validation_failed', message, hint);
}

export function checkSafePath(what: string, path: string): string {
  if (!SAFE_PATH_RE.test(path)) {
    throw badConfig(
      `${what} ${JSON.stringify(path)} is not an absolute path without spaces, commas, colons, quotes or backslashes`,
      `Choose a ${what} such as /var/lib/berth/hosts; overlayfs and fstab cannot carry those characters.`,
    );
  }
  return path;
}

export function resolveLocalConfig(config: LocalDriverConfig): ResolvedLocalConfig {
  const bridge = config.bridge ?? 'berth0';
  const cgroupName = config.cgroupName ?? 'berth';
  if (!NAME_RE.test(bridge) || bridge.length > 15) {
    throw badConfig(`bridge name ${JSON.stringify(bridge)} is not a valid interface name`, 'Use at most 15 letters, digits, "-", "_" or ".", e.g. berth0.');
  }
  if (!NAME_RE.test(cgroupName) || cgroupName.length > 32) {
    throw badConfig(`cgroupName ${JSON.stringify(cgroupName)} is not a valid name`, 'Use at most 32 letters, digits, "-", "_" or ".", e.g. berth.');
  }
  if (config.agentCommand.length === 0) {
    throw badConfig('agentCommand is empty', "Pass the command the host's init keeps running, e.g. ['node', '/.berth/agent/berth-agent.cjs'].");
  }
  for (const [what, path] of [['stateDir', config.stateDir], ['agentDir', config.agentDir]] as const) {
    if (!isAbsolute(path)) throw badConfig(`${what} ${JSON.stringify(path)} is not absolute`, `Pass an absolute ${what}.`);
  }
  const stateDir = checkSafePath('stateDir', resolve(config.stateDir));
  const hiddenPaths = (config.hiddenPaths ?? []).map((p) => checkSafePath('hidden path', resolve(p)));
  return {
    stateDir,
    bridge,
    subnet: parseSubnet(config.subnet ?? '10.213.0.0/16'),
    agentDir: checkSafePath('agentDir', resolve(config.agentDir)),
    agentCommand: [...config.agentCommand],
    cgroupName,
    stopGraceMs: config.stopGraceMs ?? 3000,
    launchTimeoutMs: config.launchTimeoutMs ?? 10_000,
    hiddenPaths: [...new Set([stateDir, ...hiddenPaths])],
    egressDeny: (config.egressDeny ?? DEFAULT_EGRESS_DENY).map(checkCidr),
    nameServers: (config.nameServers ?? []).map(parseNameServer),
    agentPort: config.agentPort !== undefined && Number.isInteger(config.agentPort) && config.agentPort > 0 && config.agentPort < 65536 ? config.agentPort : undefined,
    logger: config.logger ?? silentLogger,
  };
}

const CIDR_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(3[0-2]|[12]?\d)$/;

function checkCidr(cidr: string): string {
  if (!CIDR_RE.test(cidr)) throw badConfig(`egress deny range ${JSON.stringify(cidr)} is not an IPv4 CIDR`, 'Write ranges as address/prefix, e.g. 10.0.0.0/8.');
  return cidr;
}

export function isValidHostId(id: string): boolean {
  return HOST_ID_RE.test(id);
}

export function checkHostId(id: string): string {
  if (!isValidHostId(id)) {
    throw new BerthError(
      'validation_failed',
      `host id ${JSON.stringify(id)} is not usable by the local driver`,
      'Host ids must be 1-64 letters, digits, "-", "_" or "." and start with a letter or digit.',
    );
  }
  return id;
}

/** Everything on the machine that belongs to one host, derived from its id alone. */
export interface HostNames {
  id: string;
  hostDir: string;
  upperDir: string;
  workDir: string;
  /** Mount point of the overlay inside the host's mount namespace; empty in the machine's. */
  rootDir: string;
  fstabFile: string;
  consoleLog: string;
  stateFile: string;
  netns: string;
  /** Machine-side end of the veth pair (at most 15 characters, so hashed). */
  veth: string;
  /** ifalias set on the veth, so leftovers can be attributed to a driver instance and host. */
  vethAlias: string;
}

export function hostNames(cfg: ResolvedLocalConfig, id: string): HostNames {
  const hostDir = join(cfg.stateDir, checkHostId(id));
  const digest = createHash('sha256').update(`${cfg.cgroupName}/${id}`).digest('hex');
  return {
    id,
    hostDir,
    upperDir: join(hostDir, 'upper'),
    workDir: join(hostDir, 'work'),
    rootDir: join(hostDir, 'root'),
    fstabFile: join(hostDir, 'fstab'),
    consoleLog: join(hostDir, 'console.log'),
    stateFile: join(hostDir, 'state.json'),
    netns: `${netnsPrefix(cfg)}${id}`,
    veth: `brt${digest.slice(0, 11)}`,
    vethAlias: vethAlias(cfg, id),
  };
}

export function netnsPrefix(cfg: ResolvedLocalConfig): string {
  return `${cfg.cgroupName}-`;
}

export function vethAlias(cfg: ResolvedLocalConfig, id: string): string {
  return `${cfg.cgroupName}:${id}`;
}

/** Directory under stateDir (hidden from list()) holding the device nodes copied into every host's /dev. */
export function devTemplateDir(cfg: ResolvedLocalConfig): string {
  return join(cfg.stateDir, '.dev-template');
}

/** setpriv and its libraries, bind-mounted into every host (see confinement.ts). */
export function hostToolsDir(cfg: ResolvedLocalConfig): string {
  return join(cfg.stateDir, '.host-tools');
}
