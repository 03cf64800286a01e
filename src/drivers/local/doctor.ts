/**
 * `berth doctor`: whether this machine can run local hosts, and which of their optional features
 * it has, each with what to do about it. It runs the driver's own preflight probes (namespaces and
 * an overlay in the state dir, in a throw-away mount namespace) and looks at everything else
 * without changing it: nothing is created on the machine but the state dir, if missing.
 */
import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { errorMessage } from '../../core/errors.js';
import type { DoctorCheck } from '../types.js';
import { detectCgroupLayout, readMountinfo } from './cgroups.js';
import { machineNameServers, wildcardDnsListeners } from './dns-forwarder.js';
import { findTool, probeNamespacesAndOverlay, resolveTools } from './preflight.js';
import { runCommand } from './proc.js';
import { routesOverlapping } from './network.js';
import { parseSubnet, type Subnet } from './subnet.js';

export type MachineCheck = DoctorCheck;

export interface DoctorInput {
  stateDir: string;
  agentDir: string;
  bridge: string;
  subnet: string;
}

const ok = (name: string, detail: string): MachineCheck => ({ name, status: 'ok', detail });
const warn = (name: string, detail: string, hint: string): MachineCheck => ({ name, status: 'warn', detail, hint });
const fail = (name: string, detail: string, hint: string): MachineCheck => ({ name, status: 'fail', detail, hint });

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export async function checkMachine(input: DoctorInput): Promise<MachineCheck[]> {
  const checks: MachineCheck[] = [];
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    checks.push(fail('root on Linux', `this is ${process.platform}${process.getuid ? ` as uid ${process.getuid()}` : ''}`, 'Run berth (server and doctor) as root on Linux, e.g. with sudo.'));
    return checks;
  }
  checks.push(ok('root on Linux', `kernel ${(await runCommand('uname', ['-r'])).stdout.trim()}`));

  let tools: ReturnType<typeof resolveTools> | undefined;
  try {
    tools = resolveTools();
    checks.push(ok('system tools', 'ip, nsenter, unshare, mount, pivot_root, cp, umount'));
  } catch (err) {
    checks.push(fail('system tools', errorMessage(err), 'Install util-linux, iproute2 and coreutils (e.g. apt-get install util-linux iproute2 coreutils).'));
  }
  checks.push(findTool('setpriv') ? ok('setpriv', "limits what root in a host can do") : fail('setpriv', 'not found', 'Install util-linux (e.g. apt-get install util-linux).'));

  const layout = detectCgroupLayout(readMountinfo());
  if (layout.hierarchies.length === 0) checks.push(fail('cgroups', 'no cgroup filesystem is mounted', 'Mount cgroup2 at /sys/fs/cgroup and run berth as root.'));
  else if (layout.missing.length > 0) checks.push(warn('cgroups', `no ${layout.missing.join(', ')} controller`, `Hosts asking for a ${layout.missing.join('/')} limit cannot be launched; enable the controller (cgroup v2: in the root's cgroup.subtree_control).`));
  else checks.push(ok('cgroups', layout.hierarchies.map((h) => `${h.mountPoint} (v${h.version}: ${h.controllers.join(', ')})`).join('; ')));
  if (layout.slowJoin) checks.push(warn('cgroup v2 favordynmods', 'not set: every launch waits ~10 ms for the kernel', 'mount -o remount,favordynmods /sys/fs/cgroup'));

  if (tools) {
    try {
      mkdirSync(input.stateDir, { recursive: true, mode: 0o700 });
      await probeNamespacesAndOverlay(tools, input.stateDir);
      checks.push(ok('namespaces and overlayfs', `pid, mount, net, uts, ipc and cgroup namespaces; an overlay with its upper dir in ${input.stateDir}`));
    } catch (err) {
      checks.push(fail('namespaces and overlayfs', errorMessage(err), (err as { hint?: string }).hint ?? 'Run berth as root (inside a container: --privileged).'));
    }
  }

  checks.push(existsSync(input.agentDir) && statSync(input.agentDir).isDirectory() ? ok('agent bundle', input.agentDir) : fail('agent bundle', `${input.agentDir} is missing`, 'Build it: npm run build.'));

  let subnet: Subnet | undefined;
  try {
    subnet = parseSubnet(input.subnet);
  } catch (err) {
    checks.push(fail('bridge subnet', errorMessage(err), 'Choose another subnet (--subnet), e.g. 10.213.0.0/16.'));
  }
  if (subnet) {
    const clash = await routesOverlapping('ip', subnet, input.bridge);
    checks.push(
      clash.length > 0
        ? fail('bridge subnet', `${subnet.cidr} overlaps ${clash.map((r) => `${r.dst ?? '?'} on ${r.dev ?? '?'}`).join(', ')}`, 'Choose a subnet no other network of this machine uses (berth server --subnet).')
        : ok('bridge subnet', `${subnet.cidr} on bridge ${input.bridge}: no other route of this machine overlaps it`),
    );
  }

  checks.push(
    writable('/proc/sys/net/ipv4/ip_forward')
      ? ok('/proc/sys writable', "the hosts of a group can reach each other; hosts can be given egress")
      : warn('/proc/sys writable', 'read-only: hosts stay apart, but the hosts of a group cannot reach each other, and no host can have egress', 'Run berth with /proc/sys writable (inside a container: --privileged).'),
  );
  checks.push(
    findTool('nft')
      ? ok('nftables', "hosts reach only their agent channel and granted ports of the machine; egress can be given")
      : warn('nftables', 'not installed: hosts can connect to every port this machine listens on, and none can have egress', 'Install it (e.g. apt-get install nftables) and restart berth server.'),
  );
  const nameServers = machineNameServers();
  const taken = wildcardDnsListeners();
  checks.push(
    taken.length > 0
      ? warn('name service', `another DNS server listens on port 53 of every address (${taken.join(', ')}): berth cannot answer hosts' lookups at the bridge address, so hosts resolve no names (not even their group mates')`, 'Bind that server to its own addresses only (dnsmasq: bind-interfaces), or run berth server with --dns none.')
      : nameServers.length > 0
      ? ok('name service', `hosts with egress resolve names through ${nameServers.join(', ')} (this machine's /etc/resolv.conf), relayed at the bridge address`)
      : warn('name service', "no name server in this machine's /etc/resolv.conf: hosts with egress reach addresses but resolve no names", 'Give berth server the name servers to use: --dns IP[,IP...].'),
  );
  checks.push(
    findTool('mkfs.ext4') && existsSync('/dev/loop-control')
      ? ok('disks of their own', 'mkfs.ext4 and loop devices: hosts can have a disk of their own (--disk)')
      : warn('disks of their own', `${findTool('mkfs.ext4') ? '' : 'mkfs.ext4 is not installed; '}${existsSync('/dev/loop-control') ? '' : 'no loop devices (/dev/loop-control); '}hosts asking for --disk cannot be launched`, 'Install e2fsprogs (apt-get install e2fsprogs) and make loop devices available (inside a container: --privileged).'),
  );
  return checks;
}
