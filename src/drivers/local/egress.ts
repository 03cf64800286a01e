/**
 * Egress: a host launched with `egress` (HostResources.egress) may open connections beyond the
 * machine, to wherever the machine itself routes, under the machine's own address (NAT). Every
 * other host sends nothing past the bridge (reachability.ts). What an egress host still cannot
 * reach: the bridge's other hosts outside its group, and the ranges of `egressDeny` (by default the
 * private, shared and link-local ones, so neither a cloud's metadata service nor the machine's own
 * network is in reach). Nothing from outside can open a connection to a host: only answers come in.
 *
 *   routing (ip rule, after the group rules of reachability.ts at 31000):
 *     pref 31400  iif <bridge> to <subnet> prohibit          a non-peer on the bridge stays out of reach
 *     pref 31500  iif <bridge> from <host> lookup main         one per egress host: the machine's routes
 *   nftables, table inet berth_<bridge>_egress:
 *     forward     into the bridge: answers only; out of it: egress hosts, minus egressDeny
 *     narrowed    hosts whose egress is narrowed (HostResources.egressAllow): their connections
 *                 already open, their allowed ranges (set allowed: host . range), and the addresses
 *                 their names resolved to through the machine (set resolved: host . address, each
 *                 for its answer's TTL, at least MIN_RESOLVED_S); nothing else
 *     postrouting masquerade what egress hosts send out
 *
 * Answers coming back are forwarded by the machine only where forwarding is on for the interface
 * they arrive on, so the first egress host turns IPv4 forwarding on (as any container runtime
 * does); the forward chain keeps the bridge closed to anything but answers.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { BerthError } from '../../core/errors.js';
import type { EgressAllowList } from '../../core/egress-allow.js';
import type { HostRecord } from './host-state.js';
import { describeFailure, type CommandRunner } from './proc.js';
import { applyNft, tableName } from './machine-ports.js';
import type { Subnet } from './subnet.js';

/** Private (RFC 1918), shared (RFC 6598), link-local and multicast ranges: closed to hosts' egress unless configured otherwise (egress.ts). */
export const DEFAULT_EGRESS_DENY = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '224.0.0.0/4'];

/** Shortest time a resolved address stays open to a narrowed host: clients cache answers past a short TTL. */
export const MIN_RESOLVED_S = 300;
/** Longest: an answer that says more is taken as this. */
export const MAX_RESOLVED_S = 86_400;

/** A host whose egress is narrowed, with the ranges it may reach (its names come through the DNS relay). */
export interface NarrowedHost {
  ip: string;
  cidrs: readonly string[];
}

export const SUBNET_DENY_PREF = 31400;
export const EGRESS_PREF = 31500;

export function egressTableName(bridge: string): string {
  return `${tableName(bridge)}_egress`;
}

/** The whole egress table, replacing any earlier one: one `nft -f` transaction. */
export function egressTableScript(bridge: string, deny: readonly string[], hosts: readonly string[], narrowed: readonly NarrowedHost[] = []): string {
  const table = egressTableName(bridge);
  const br = JSON.stringify(bridge);
  const elements = (items: readonly string[]) => (items.length > 0 ? `\n    elements = { ${items.join(', ')} }` : '');
  return `table inet ${table} {}
delete table inet ${table}
table inet ${table} {
  set egress_hosts {
    type ipv4_addr;${elements([...new Set(hosts)])}
  }
  set egress_deny {
    type ipv4_addr; flags interval;${elements(deny)}
  }
  set restricted {
    type ipv4_addr;${elements([...new Set(narrowed.map((n) => n.ip))])}
  }
  set allowed {
    type ipv4_addr . ipv4_addr; flags interval;${elements(narrowed.flatMap((n) => n.cidrs.map((c) => `${n.ip} . ${c}`)))}
  }
  set resolved {
    type ipv4_addr . ipv4_addr; flags timeout;
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    oifname ${br} iifname != ${br} ct state established,related accept
    oifname ${br} iifname != ${br} reject with icmpx admin-prohibited
    iifname ${br} oifname != ${br} ip daddr @egress_deny reject with icmpx admin-prohibited
    iifname ${br} oifname != ${br} ip saddr @restricted jump narrowed
    iifname ${br} oifname != ${br} ip saddr @egress_hosts accept
    iifname ${br} oifname != ${br} reject with icmpx admin-prohibited
  }
  chain narrowed {
    ct state established,related accept
    ip saddr . ip daddr @allowed accept
    ip saddr . ip daddr @resolved accept
    reject with icmpx admin-prohibited
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname ${br} oifname != ${br} ip saddr @egress_hosts masquerade
  }
}
`;
}

const FORWARDING = '/proc/sys/net/ipv4/ip_forward';

export class HostEgress {
  private readonly table: string;
  /** Why hosts cannot have egress on this machine, when they cannot. */
  private unavailable: string | undefined;
  /** Per narrowed host, the addresses learnt for it and when they close (to take them away with the host). */
  private readonly learnt = new Map<string, Map<string, number>>();
  /** Per address, how many times a host was admitted at it: a lookup answered across a revoke must not outlive it. */
  private readonly generation = new Map<string, number>();

  constructor(
    private readonly tools: { ip: string; nft: string | undefined },
    private readonly bridge: string,
    private readonly subnet: Subnet,
    private readonly deny: readonly string[],
    private readonly run: CommandRunner,
    private readonly log: { info(message: string): void; warn(message: string): void },
  ) {
    this.table = egressTableName(bridge);
  }

  /** Builds the table and the subnet's rule from the bridge's hosts' records (only those count: hosts cannot edit them). */
  async prepare(records: readonly Partial<HostRecord>[], narrowed: readonly NarrowedHost[] = []): Promise<void> {
    const hosts = records.filter((r) => r.egress && r.ip).map((r) => r.ip ?? '');
    if (!this.tools.nft) {
      this.unavailable = 'nft (nftables) is not installed; install it (e.g. apt-get install nftables) and restart berth server';
      return;
    }
    const result = await this.run(this.tools.nft, ['-f', '-'], egressTableScript(this.bridge, this.deny, hosts, narrowed));
    if (result.code !== 0) {
      this.unavailable = `nftables refused the egress table: ${describeFailure('nft', result)}`;
      return;
    }
    // The rules are made to match the records: a host's rule without its record goes, a missing one comes.
    const shown = await this.run(this.tools.ip, ['-j', '-4', 'rule', 'show', 'pref', String(EGRESS_PREF)]);
    const present = shown.code === 0 ? (JSON.parse(shown.stdout || '[]') as { iif?: string; src?: string }[]).filter((r) => r.iif === this.bridge && r.src) : [];
    const subnetRule = await this.run(this.tools.ip, ['-j', '-4', 'rule', 'show', 'pref', String(SUBNET_DENY_PREF)]);
    const hasSubnetRule = subnetRule.code === 0 && (JSON.parse(subnetRule.stdout || '[]') as { iif?: string }[]).some((r) => r.iif === this.bridge);
    const lines = [
      ...(hasSubnetRule ? [] : [`rule add iif ${this.bridge} to ${this.subnet.cidr} prohibit pref ${SUBNET_DENY_PREF}`]),
      ...present.filter((r) => !hosts.includes(r.src ?? '')).map((r) => `rule del ${this.rule(r.src ?? '')}`),
      ...hosts.filter((ip) => !present.some((r) => r.src === ip)).map((ip) => `rule add ${this.rule(ip)}`),
    ];
    if (lines.length > 0) await this.run(this.tools.ip, ['-force', '-batch', '-'], `${lines.join('\n')}\n`);
    if (hosts.length === 0) return;
    try {
      this.turnOnForwarding();
    } catch (err) {
      // The hosts keep running; their answers from beyond the machine are not forwarded back to them.
      this.log.warn(`hosts ${hosts.join(', ')} lost their egress: ${(err as Error).message}`);
    }
  }

  private rule(ip: string): string {
    return `iif ${this.bridge} from ${ip} lookup main pref ${EGRESS_PREF}`;
  }

  /** Lets a host about to boot send beyond the machine (only to `allow`, when given); in place before it runs. */
  async admit(ip: string, allow?: EgressAllowList): Promise<void> {
    if (this.unavailable) {
      throw new BerthError('driver_unavailable', `hosts cannot have egress on this machine: ${this.unavailable}`, 'Launch the host without egress, or fix the machine as the message says.');
    }
    this.turnOnForwarding();
    this.generation.set(ip, (this.generation.get(ip) ?? 0) + 1);
    await this.nft(
      [
        ...(allow ? [`add element inet ${this.table} restricted { ${ip} }`] : []),
        ...(allow?.cidrs.length ? [`add element inet ${this.table} allowed { ${allow.cidrs.map((c) => `${ip} . ${c}`).join(', ')} }`] : []),
        `add element inet ${this.table} egress_hosts { ${ip} }`,
      ],
      `cannot give host ${ip} egress`,
    );
    // One rule per host: one left by a crash between its add and its record goes first.
    await this.run(this.tools.ip, ['rule', 'del', ...this.rule(ip).split(' ')]);
    const added = await this.run(this.tools.ip, ['rule', 'add', ...this.rule(ip).split(' ')]);
    if (added.code !== 0) throw new BerthError('internal', `cannot give host ${ip} egress: ${describeFailure('ip', added)}`, 'Check `ip rule show` on the machine; restarting berth server sets the rules again.');
  }

  /** Takes a host's egress away (before its address can be reused). Taking away what is not there is fine. */
  async revoke(ip: string, allow?: EgressAllowList): Promise<void> {
    if (this.unavailable) return;
    // Until none is left (a rule added twice by a race is deleted twice).
    for (let i = 0; i < 4 && (await this.run(this.tools.ip, ['rule', 'del', ...this.rule(ip).split(' ')])).code === 0; i++);
    this.generation.set(ip, (this.generation.get(ip) ?? 0) + 1);
    const learnt = [...(this.learnt.get(ip)?.keys() ?? [])];
    this.learnt.delete(ip);
    // Each element added before it is deleted, in one transaction: one already gone is no error.
    const sets = [
      `inet ${this.table} egress_hosts { ${ip} }`,
      `inet ${this.table} restricted { ${ip} }`,
      ...(allow?.cidrs.length ? [`inet ${this.table} allowed { ${allow.cidrs.map((c) => `${ip} . ${c}`).join(', ')} }`] : []),
      ...(learnt.length ? [`inet ${this.table} resolved { ${learnt.map((a) => `${ip} . ${a}`).join(', ')} }`] : []),
    ];
    await this.nft(sets.flatMap((set) => [`add element ${set}`, `delete element ${set}`]), `cannot take host ${ip}'s egress away`);
  }

  /**
   * Opens `addresses` to the narrowed host at `ip` for `ttlSeconds` (within MIN_RESOLVED_S and
   * MAX_RESOLVED_S): the addresses a name it may reach resolved to. An address learnt before gets
   * the new time.
   */
  async learn(ip: string, addresses: readonly string[], ttlSeconds: number): Promise<void> {
    if (this.unavailable || addresses.length === 0) return;
    const seconds = Math.min(MAX_RESOLVED_S, Math.max(MIN_RESOLVED_S, Math.floor(ttlSeconds)));
    const now = Date.now();
    const known = this.learnt.get(ip) ?? new Map<string, number>();
    // An address open for more than half the new time yet needs no nft call: repeated lookups cost nothing.
    const due = addresses.filter((a) => (known.get(a) ?? 0) - now < (seconds * 1000) / 2);
    if (due.length === 0) return;
    const pairs = due.map((a) => `${ip} . ${a}`).join(', ');
    const set = `inet ${this.table} resolved`;
    const generation = this.generation.get(ip);
    // A new element is only added; one to refresh is deleted first (an add keeps the old time). Deleting
    // costs the kernel a grace period (~30 ms here), so only refreshes pay it.
    const refresh = due.filter((a) => known.has(a)).map((a) => `${ip} . ${a}`);
    await this.nft(
      [...(refresh.length ? [`add element ${set} { ${refresh.join(', ')} }`, `delete element ${set} { ${refresh.join(', ')} }`] : []), `add element ${set} { ${due.map((a) => `${ip} . ${a} timeout ${seconds}s`).join(', ')} }`],
      `cannot open what host ${ip} resolved`,
    );
    if (this.generation.get(ip) !== generation) {
      // The host was revoked (or its address given anew) while nft ran: what it learnt goes with it.
      await this.nft([`add element ${set} { ${pairs} }`, `delete element ${set} { ${pairs} }`], `cannot take back what host ${ip} resolved`);
      throw new BerthError('invalid_state', `host ${ip} left while its lookup was answered`, 'Nothing to do: the host is gone or was reset.');
    }
    for (const a of due) known.set(a, now + seconds * 1000);
    this.learnt.set(ip, known);
  }

  /** Removes the table and the subnet's rule (the bridge is going). */
  async teardown(): Promise<void> {
    if (this.unavailable) return;
    await this.run(this.tools.ip, ['rule', 'del', 'iif', this.bridge, 'to', this.subnet.cidr, 'prohibit', 'pref', String(SUBNET_DENY_PREF)]);
    await this.nft([`table inet ${this.table} {}`, `delete table inet ${this.table}`], 'cannot remove the egress table');
  }

  private turnOnForwarding(): void {
    try {
      if (readFileSync(FORWARDING, 'utf8').trim() === '1') return;
      writeFileSync(FORWARDING, '1');
      this.log.info('turned IPv4 forwarding on (net.ipv4.ip_forward=1) for hosts with egress; the bridge takes in answers only');
    } catch (err) {
      throw new BerthError('driver_unavailable', `hosts cannot have egress: cannot turn IPv4 forwarding on (${(err as Error).message})`, 'Run berth server with /proc/sys writable (inside a container: --privileged), or set net.ipv4.ip_forward=1 on the machine.');
    }
  }

  private nft(lines: string[], what: string): Promise<void> {
    return applyNft(this.run, this.tools.nft, this.table, lines, what);
  }
}
