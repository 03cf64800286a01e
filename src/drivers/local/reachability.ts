/**
 * Which hosts reach each other over the network. Every host's port on the bridge is isolated (the
 * bridge forwards nothing between two hosts, IPv4, IPv6 or ARP), so a host reaches the machine (the
 * gateway: its control plane, its router) and no other host. Hosts of one group are let through
 * again at layer 3, the way a private VLAN's router does (RFC 3069): the bridge answers a host's ARP
 * for a peer with its own address (proxy_arp_pvlan) and forwards the packet back out, and policy
 * routing decides which pairs may pass:
 *
 *   pref 31000  iif <bridge> from <host> lookup <table of host>   (one per host that has peers)
 *   pref 31999  iif <bridge> prohibit                             (everything else a host sends on)
 *
 * A host's table holds one route per peer. Its number is the host's IPv4 address as a 32-bit number:
 * unique on the machine, since two bridges never share a subnet. The machine's own addresses are
 * answered by the local table before any of these rules, so reaching the machine is unchanged, and
 * the bridge forwards nothing else for hosts (no route out to other networks, as before). The rules
 * trust a packet's source address: a host cannot forge one, since it has neither NET_RAW nor
 * NET_ADMIN (confinement.ts), so it sends only from the address its eth0 was given.
 */
import { writeFileSync } from 'node:fs';
import { BerthError } from '../../core/errors.js';
import { describeFailure, type CommandRunner } from './proc.js';
import { ipToInt, subnetContains, type Subnet } from './subnet.js';

export const ALLOW_PREF = 31000;
export const DENY_PREF = 31999;

/** Who may reach whom: a host's address -> its peers' addresses (hosts without peers are absent). */
export type PeerMap = Map<string, Set<string>>;

export function tableFor(ip: string): number {
  const value = ipToInt(ip);
  if (value === undefined) throw new Error(`not an IPv4 address: ${ip}`);
  return value;
}

/** The peers each member of each group has: every other member. */
export function peersOfGroups(groups: readonly (readonly string[])[]): PeerMap {
  const peers: PeerMap = new Map();
  for (const group of groups) {
    const members = [...new Set(group)];
    if (members.length < 2) continue;
    for (const ip of members) {
      const set = peers.get(ip) ?? new Set<string>();
      for (const other of members) if (other !== ip) set.add(other);
      peers.set(ip, set);
    }
  }
  return peers;
}

/**
 * `ip -batch` lines that take the kernel from `before` to `after`. Routes are added before the rule
 * that uses them, and the rule goes before its routes do, so no lookup finds a half-made table
 * (an empty one falls through to the prohibit rule anyway: the failure is closed).
 */
export function peerChanges(bridge: string, before: PeerMap, after: PeerMap): string[] {
  const lines: string[] = [];
  for (const ip of new Set([...before.keys(), ...after.keys()])) {
    const was = before.get(ip) ?? new Set<string>();
    const now = after.get(ip) ?? new Set<string>();
    const table = tableFor(ip);
    const rule = `iif ${bridge} from ${ip} lookup ${table} pref ${ALLOW_PREF}`;
    if (now.size === 0 && was.size > 0) lines.push(`rule del ${rule}`);
    for (const peer of was) if (!now.has(peer)) lines.push(`route del ${peer}/32 dev ${bridge} table ${table}`);
    for (const peer of now) if (!was.has(peer)) lines.push(`route replace ${peer}/32 dev ${bridge} table ${table}`);
    if (was.size === 0 && now.size > 0) lines.push(`rule add ${rule}`);
  }
  return lines;
}

interface IpRule {
  priority?: number;
  src?: string;
  iif?: string;
  table?: string;
  action?: string;
}

interface IpRoute {
  dst?: string;
  dev?: string;
  table?: string;
}

export class HostReachability {
  private peers: PeerMap = new Map();
  /** Changes run one at a time, in the order they were asked for. */
  private queue: Promise<unknown> = Promise.resolve();

  /** Why groups cannot meet on this machine, when they cannot. */
  private unavailable: string | undefined;

  constructor(
    private readonly ipTool: string,
    private readonly bridge: string,
    private readonly subnet: Subnet,
    private readonly run: CommandRunner,
    private readonly warn: (message: string) => void,
  ) {}

  /**
   * Sets the bridge up for it (once per bridge, idempotent): forwarding and private-VLAN proxy ARP
   * on the bridge alone (the machine's other interfaces keep their settings), the prohibit rule, and
   * what a previous server left (its allow rules), so a restart changes nothing on the wire.
   */
  async prepare(): Promise<void> {
    // The prohibit rule is in place before the bridge forwards anything, so nothing ever slips through.
    const deny = await this.rules(DENY_PREF);
    if (!deny.some((r) => r.iif === this.bridge && r.action === 'prohibit')) {
      await this.batch([`rule add iif ${this.bridge} prohibit pref ${DENY_PREF}`], 'cannot install the rule that keeps hosts apart');
    }
    for (const [name, value] of [['proxy_arp_pvlan', '1'], ['forwarding', '1']] as const) {
      try {
        writeFileSync(`/proc/sys/net/ipv4/conf/${this.bridge}/${name}`, value);
      } catch (err) {
        // Hosts stay apart all the same (their ports are isolated); only groups cannot meet.
        this.unavailable = `cannot set net.ipv4.conf.${this.bridge}.${name} (${(err as Error).message}), so the hosts of a group cannot reach each other; run berth server with /proc/sys writable (inside a container: --privileged)`;
        this.warn(this.unavailable);
        return;
      }
    }
    this.peers = await this.current();
  }

  /** The groups given are the whole truth for their members: each reaches the others in its group. */
  setGroups(groups: readonly (readonly string[])[], opts: { all: boolean }): Promise<void> {
    if (this.unavailable) {
      if (groups.some((g) => g.length > 1)) this.warn(`hosts ${groups.filter((g) => g.length > 1).flat().join(', ')} stay apart: ${this.unavailable}`);
      return Promise.resolve();
    }
    return this.enqueue(() => {
      const wanted = peersOfGroups(groups);
      const next: PeerMap = new Map();
      if (!opts.all) {
        // Members of the groups given leave whatever they were in; everyone else stays as is.
        const moving = new Set(groups.flat());
        for (const [ip, set] of this.peers) {
          if (moving.has(ip)) continue;
          const kept = new Set([...set].filter((peer) => !moving.has(peer)));
          if (kept.size > 0) next.set(ip, kept);
        }
      }
      for (const [ip, set] of wanted) next.set(ip, new Set([...(next.get(ip) ?? []), ...set]));
      return next;
    });
  }

  /** The host at `ip` leaves its group: nobody reaches it and it reaches nobody (before its address is reused). */
  remove(ip: string): Promise<void> {
    return this.setGroups([[ip]], { all: false });
  }

  /** Everything this bridge's hosts were allowed goes, and the prohibit rule too (the bridge is going). */
  async teardown(): Promise<void> {
    if (!this.unavailable) await this.enqueue(() => new Map());
    const deny = await this.rules(DENY_PREF);
    if (deny.some((r) => r.iif === this.bridge)) await this.batch([`rule del iif ${this.bridge} prohibit pref ${DENY_PREF}`], 'cannot remove the rule that kept hosts apart');
  }

  private enqueue(next: () => PeerMap): Promise<void> {
    const step = this.queue.then(async () => {
      const after = next();
      const lines = peerChanges(this.bridge, this.peers, after);
      if (lines.length === 0) return;
      try {
        await this.batch(lines, 'cannot change which hosts reach each other', true);
        this.peers = after;
      } catch (err) {
        // Whatever the kernel took is the state now; the next change starts from it.
        this.peers = await this.current().catch(() => this.peers);
        throw err;
      }
    });
    this.queue = step.catch(() => undefined);
    return step;
  }

  /** The allow rules and their tables the kernel holds for this bridge's subnet. */
  private async current(): Promise<PeerMap> {
    const peers: PeerMap = new Map();
    const rules = (await this.rules(ALLOW_PREF)).filter((r) => r.iif === this.bridge && r.src !== undefined && subnetContains(this.subnet, r.src));
    if (rules.length === 0) return peers;
    const shown = await this.run(this.ipTool, ['-j', '-4', 'route', 'show', 'table', 'all']);
    const routes = shown.code === 0 ? (JSON.parse(shown.stdout || '[]') as IpRoute[]) : [];
    for (const rule of rules) {
      const ip = rule.src ?? '';
      const table = String(tableFor(ip));
      const set = new Set(routes.filter((r) => r.table === table && r.dst !== undefined && subnetContains(this.subnet, r.dst)).map((r) => r.dst ?? ''));
      peers.set(ip, set);
    }
    return peers;
  }

  private async rules(pref: number): Promise<IpRule[]> {
    const shown = await this.run(this.ipTool, ['-j', '-4', 'rule', 'show', 'pref', String(pref)]);
    if (shown.code !== 0) throw new BerthError('driver_unavailable', `cannot list routing rules: ${describeFailure('ip', shown)}`, 'Check that ip (iproute2) works as root on this machine.');
    return JSON.parse(shown.stdout || '[]') as IpRule[];
  }

  private async batch(lines: string[], what: string, force = false): Promise<void> {
    const result = await this.run(this.ipTool, [...(force ? ['-force'] : []), '-batch', '-'], `${lines.join('\n')}\n`);
    if (result.code !== 0) throw new BerthError('internal', `${what}: ${describeFailure('ip', result)}`, 'Check `ip rule` and `ip route show table all` on the machine; restarting berth server sets them again.');
  }
}
