/**
 * Host networking: one bridge per driver (its address is the gateway and where the control plane
 * listens for agents), and per host a named network namespace with a veth pair, one end on the
 * bridge and the other as eth0 inside. Commands are emitted as `ip -batch` text so that one `ip`
 * process does each side's work.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { BerthError } from '../../core/errors.js';
import type { HostNames } from './config.js';
import { describeFailure, runCommand, type CommandRunner } from './proc.js';
import { ipToInt, type Subnet } from './subnet.js';

export const NETNS_DIR = '/run/netns';

/** Commands run in the machine's namespace: create the netns and the veth pair, attach it to the bridge. */
export function outerNetworkBatch(names: HostNames, bridge: string): string {
  return [
    `netns add ${names.netns}`,
    `link add ${names.veth} type veth peer name eth0 netns ${names.netns}`,
    `link set dev ${names.veth} alias ${names.vethAlias} master ${bridge}`,
    // Isolated before it is up: the bridge never forwards between two hosts (see reachability.ts).
    `link set dev ${names.veth} type bridge_slave isolated on`,
    `link set dev ${names.veth} up`,
    '',
  ].join('\n');
}

/** Commands run inside the host's netns: loopback, address, default route via the bridge. */
export function innerNetworkBatch(ip: string, subnet: Subnet): string {
  return [
    'link set lo up',
    `addr add ${ip}/${subnet.prefixLength} dev eth0`,
    'link set eth0 up',
    `route add default via ${subnet.gateway} dev eth0`,
    '',
  ].join('\n');
}

interface IpAddrInfo {
  ifname?: string;
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
}

/** A stable, locally administered unicast MAC derived from the bridge name. */
export function bridgeMac(bridge: string): string {
  const hash = createHash('sha256').update(`berth-bridge:${bridge}`).digest();
  const bytes = [0x02, ...hash.subarray(0, 5)];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export interface IpRoute {
  dst?: string;
  dev?: string;
}

/** Routes of the machine (other than the bridge's own) whose prefix overlaps `subnet`. */
export function overlappingRoutes(subnet: Subnet, bridge: string, routes: readonly IpRoute[]): IpRoute[] {
  const size = (bits: number) => 2 ** (32 - bits);
  const start = ipToInt(subnet.cidr.split('/')[0] ?? '') ?? 0;
  const end = start + size(subnet.prefixLength);
  return routes.filter((r) => {
    if (!r.dst || r.dst === 'default' || r.dev === bridge) return false;
    const [address, bits] = r.dst.includes('/') ? r.dst.split('/') : [r.dst, '32'];
    const from = ipToInt(address ?? '');
    if (from === undefined) return false;
    const to = from + size(Number(bits));
    return from < end && start < to;
  });
}

/** The machine's IPv4 routes (main table) that overlap `subnet` on another device than `bridge`. */
export async function routesOverlapping(ipTool: string, subnet: Subnet, bridge: string): Promise<IpRoute[]> {
  const shown = await runCommand(ipTool, ['-j', '-4', 'route', 'show', 'table', 'main']);
  return overlappingRoutes(subnet, bridge, shown.code === 0 ? (JSON.parse(shown.stdout || '[]') as IpRoute[]) : []);
}

/**
 * Refuses a subnet that another network of the machine routes (another berth's bridge, a VPN,
 * docker0): the more specific route wins, so hosts on one side or the other would silently lose
 * their traffic. Checked before the driver changes anything on the machine. Once the bridge exists
 * the clash came later and is only reported through `warn`: refusing then would leave running hosts
 * without their server, and `berth down` unable to remove them.
 */
export async function assertSubnetFree(ipTool: string, subnet: Subnet, bridge: string, warn: (message: string) => void): Promise<void> {
  const clash = await routesOverlapping(ipTool, subnet, bridge);
  if (clash.length === 0) return;
  const held = clash.map((r) => `${r.dst ?? '?'} on ${r.dev ?? '?'}`).join(', ');
  const message = `the hosts' subnet ${subnet.cidr} overlaps ${held}: traffic to the hosts of one or the other would go astray`;
  const hint = 'Choose a subnet no other network of this machine uses (berth server --subnet), or remove the interface that holds it (another berth data dir: berth down there).';
  if (existsSync(`/sys/class/net/${bridge}`)) {
    warn(`${message}. ${hint}`);
    return;
  }
  throw new BerthError('conflict', message, hint, { subnet: subnet.cidr, overlaps: held });
}

/** Creates the bridge with the gateway address if missing and brings it up. Idempotent. */
export async function ensureBridge(ipTool: string, bridge: string, subnet: Subnet): Promise<void> {
  const sysDir = `/sys/class/net/${bridge}`;
  const commands: string[] = [];
  if (!existsSync(sysDir)) {
    commands.push(`link add ${bridge} type bridge`, `addr add ${subnet.gateway}/${subnet.prefixLength} dev ${bridge}`);
  } else {
    if (!existsSync(`${sysDir}/bridge`)) {
      throw new BerthError(
        'driver_unavailable',
        `network interface ${bridge} exists but is not a bridge`,
        `Configure another bridge name for the local driver, or remove the interface ${bridge}.`,
      );
    }
    const shown = await runCommand(ipTool, ['-j', '-4', 'addr', 'show', 'dev', bridge]);
    const parsed = (shown.code === 0 ? JSON.parse(shown.stdout || '[]') : []) as IpAddrInfo[];
    const hasGateway = parsed.some((link) => link.addr_info?.some((a) => a.local === subnet.gateway && a.prefixlen === subnet.prefixLength));
    if (!hasGateway) commands.push(`addr add ${subnet.gateway}/${subnet.prefixLength} dev ${bridge}`);
  }
  // A bridge without an address of its own takes the lowest MAC among its ports, so it changes when
  // a host's veth comes or goes; hosts then hold a stale ARP entry for the gateway and their agents
  // cannot reach the control plane for up to a minute. A fixed address keeps the gateway stable.
  commands.push(`link set dev ${bridge} address ${bridgeMac(bridge)}`, `link set dev ${bridge} up`);
  // The first `netns add` on a machine makes /run/netns a shared mount; doing it once here keeps
  // concurrent first launches from racing to set that up (and checks that netns creation works).
  const probe = `.berth-probe-${process.pid}`;
  commands.push(`netns add ${probe}`, `netns del ${probe}`);
  const result = await runCommand(ipTool, ['-batch', '-'], `${commands.join('\n')}\n`);
  if (result.code !== 0) {
    throw new BerthError(
      'driver_unavailable',
      `cannot set up bridge ${bridge} with gateway ${subnet.gateway}/${subnet.prefixLength}: ${describeFailure('ip', result)}`,
      'Run berth server as root (inside a container add --privileged) and make sure the subnet is not used by another interface, or configure a different bridge/subnet.',
    );
  }
}

/**
 * Removes the host's veth and netns if present. The veth is deleted explicitly (both ends go) rather
 * than left to the kernel's asynchronous netns teardown, so nothing lingers once we return.
 */
export async function removeHostNetwork(ipTool: string, names: HostNames, run: CommandRunner = runCommand): Promise<void> {
  const commands: string[] = [];
  if (existsSync(`/sys/class/net/${names.veth}`)) commands.push(`link del ${names.veth}`);
  if (existsSync(`${NETNS_DIR}/${names.netns}`)) commands.push(`netns del ${names.netns}`);
  if (commands.length === 0) return;
  const result = await run(ipTool, ['-force', '-batch', '-'], `${commands.join('\n')}\n`);
  // -force carries on past a failed line; only complain if something is really still there.
  if (existsSync(`/sys/class/net/${names.veth}`) || existsSync(`${NETNS_DIR}/${names.netns}`)) {
    throw new BerthError(
      'internal',
      `cannot remove network namespace ${names.netns} / veth ${names.veth}: ${describeFailure('ip', result)}`,
      `Remove them by hand with "ip link del ${names.veth}; ip netns del ${names.netns}", then terminate the host again.`,
    );
  }
}

/** Host ids that have a named netns with our prefix. */
export function listNetnsHostIds(prefix: string): string[] {
  try {
    return readdirSync(NETNS_DIR).filter((name) => name.startsWith(prefix)).map((name) => name.slice(prefix.length));
  } catch {
    return [];
  }
}

/** Machine-side veths of this driver instance: attached to its bridge or carrying its alias prefix. */
export function listOurVeths(bridge: string, aliasPrefix: string): string[] {
  let names: string[];
  try {
    names = readdirSync('/sys/class/net');
  } catch {
    return [];
  }
  return names.filter((name) => {
    let master = '';
    try {
      master = basename(readlinkSync(`/sys/class/net/${name}/master`));
    } catch {
      // Not enslaved to any bridge.
    }
    let alias = '';
    try {
      alias = readFileSync(`/sys/class/net/${name}/ifalias`, 'utf8').trim();
    } catch {
      // No alias.
    }
    return name !== bridge && (master === bridge || alias.startsWith(aliasPrefix));
  });
}
