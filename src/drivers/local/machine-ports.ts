/**
 * Which of the machine's own ports a host may connect to. A host's packets to the machine arrive on
 * the bridge and are delivered locally (the routing rules of reachability.ts never see them), so
 * without this a host reaches every service that listens on the machine beyond loopback: its sshd,
 * a database, the API when it is served on all addresses. One nftables table per bridge lets a
 * host open connections to the machine only on its agent channel and on the ports it was granted
 * (HostResources.machinePorts, at the gateway address):
 *
 *   table inet berth_<bridge>
 *     set agent_ports  { ipv4_addr . inet_service }   where agents dial (the agent URL's address and port)
 *     set granted      { ipv4_addr . inet_service }   a host's address . a port it was granted
 *     chain input      (hook input)  iifname <bridge> jump from_hosts
 *     chain from_hosts  answers to what the machine opened (conntrack) and ICMP: accept;
 *                       the agent channel, grants, DNS at the gateway (dns-forwarder.ts): accept;
 *                       anything else: reject (admin-prohibited)
 *
 * What the machine opens towards a host (the router, health checks, the server's probes) is
 * untouched: its answers belong to a connection the machine started. Traffic between a group's hosts
 * is forwarded, not delivered to the machine, so it never meets this chain. The table is the whole
 * truth for the bridge: the driver rebuilds it from its hosts' records when it starts, in one
 * transaction. Without nft (or nf_tables in the kernel) hosts reach every port of the machine, as
 * before, and a warning says so.
 */
import { BerthError } from '../../core/errors.js';
import type { HostRecord } from './host-state.js';
import { describeFailure, type CommandRunner } from './proc.js';

export interface PortGrant {
  ip: string;
  ports: readonly number[];
}

export interface AgentEndpoint {
  ip: string;
  port: number;
}

export function tableName(bridge: string): string {
  return `berth_${bridge.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** Where an agent dials, from its URL: an IPv4 address (the gateway if the URL names a host) and a port. */
export function agentEndpoint(serverUrl: string, gateway: string): AgentEndpoint | undefined {
  let url: URL;
  try {
    url = new URL(serverUrl);
  } catch {
    return undefined;
  }
  const port = url.port ? Number(url.port) : url.protocol === 'wss:' ? 443 : 80;
  const ip = /^\d{1,3}(\.\d{1,3}){3}$/.test(url.hostname) ? url.hostname : gateway;
  return { ip, port };
}

function elements(pairs: readonly string[]): string {
  return pairs.length > 0 ? `\n    elements = { ${pairs.join(', ')} }` : '';
}

export function grantPairs(grants: readonly PortGrant[]): string[] {
  return grants.flatMap((g) => [...new Set(g.ports)].map((port) => `${g.ip} . ${port}`));
}

/** The whole table, replacing whatever the bridge had: one `nft -f` transaction. */
export function tableScript(bridge: string, gateway: string, agents: readonly AgentEndpoint[], grants: readonly PortGrant[]): string {
  const table = tableName(bridge);
  const agentPairs = [...new Set(agents.map((a) => `${a.ip} . ${a.port}`))];
  return `table inet ${table} {}
delete table inet ${table}
table inet ${table} {
  set agent_ports {
    type ipv4_addr . inet_service;${elements(agentPairs)}
  }
  set granted {
    type ipv4_addr . inet_service;${elements(grantPairs(grants))}
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname ${JSON.stringify(bridge)} jump from_hosts
  }
  chain from_hosts {
    ct state established,related accept
    meta l4proto { icmp, ipv6-icmp } accept
    ip daddr . tcp dport @agent_ports accept
    ip daddr ${gateway} ip saddr . tcp dport @granted accept
    ip daddr ${gateway} meta l4proto { tcp, udp } th dport 53 accept
    reject with icmpx admin-prohibited
  }
}
`;
}

export class MachinePorts {
  private readonly table: string;
  private readonly agents = new Set<string>();
  /** Why hosts reach every port of the machine, when they do. */
  private unavailable: string | undefined;

  constructor(
    /** Absolute path of nft, or undefined when the machine has none. */
    private readonly nft: string | undefined,
    private readonly bridge: string,
    private readonly gateway: string,
    private readonly run: CommandRunner,
    private readonly warn: (message: string) => void,
  ) {
    this.table = tableName(bridge);
  }

  /** Whether hosts reach only their agent channel and their grants on this machine. */
  get confined(): boolean {
    return this.unavailable === undefined;
  }

  /**
   * Builds the table from what the bridge's hosts have, replacing any earlier one. Only their records
   * count (in the state dir, out of hosts' reach), never a host's own files, which its user can edit.
   */
  async prepare(records: readonly Partial<HostRecord>[], configured?: AgentEndpoint): Promise<void> {
    const agents: AgentEndpoint[] = configured ? [configured] : [];
    const grants: PortGrant[] = [];
    for (const record of records) {
      if (record.agentIp && record.agentPort) agents.push({ ip: record.agentIp, port: record.agentPort });
      if (record.ip && record.machinePorts?.length) grants.push({ ip: record.ip, ports: record.machinePorts });
    }
    if (!this.nft) {
      this.unavailable = 'nft (nftables) is not installed';
    } else {
      const result = await this.run(this.nft, ['-f', '-'], tableScript(this.bridge, this.gateway, agents, grants));
      if (result.code !== 0) this.unavailable = `nftables refused the table: ${describeFailure('nft', result)}`;
    }
    if (this.unavailable) {
      this.warn(`hosts on bridge ${this.bridge} can connect to every port this machine listens on: ${this.unavailable}; install nftables (e.g. apt-get install nftables) and restart berth server to keep them to their agent channel and granted ports`);
      return;
    }
    for (const a of agents) this.agents.add(`${a.ip} . ${a.port}`);
  }

  /** Lets a host about to boot dial its agent channel and connect to `ports`; in place before it runs. */
  async admit(ip: string, agent: AgentEndpoint | undefined, ports: readonly number[]): Promise<void> {
    if (this.unavailable) return;
    const lines: string[] = [];
    const agentPair = agent && `${agent.ip} . ${agent.port}`;
    if (agentPair && !this.agents.has(agentPair)) lines.push(`add element inet ${this.table} agent_ports { ${agentPair} }`);
    const pairs = grantPairs([{ ip, ports }]);
    if (pairs.length > 0) lines.push(`add element inet ${this.table} granted { ${pairs.join(', ')} }`);
    if (lines.length === 0) return;
    await this.apply(lines, `cannot let host ${ip} reach its ports of the machine`);
    if (agentPair) this.agents.add(agentPair);
  }

  /**
   * Takes a host's grants away (before its address can be reused). Each element is added before it is
   * deleted, in one transaction, so taking away what is not there (a launch that failed before its
   * grant) is not an error.
   */
  async revoke(ip: string, ports: readonly number[]): Promise<void> {
    if (this.unavailable) return;
    const pairs = grantPairs([{ ip, ports }]);
    if (pairs.length === 0) return;
    const set = `inet ${this.table} granted { ${pairs.join(', ')} }`;
    await this.apply([`add element ${set}`, `delete element ${set}`], `cannot take host ${ip}'s ports of the machine away`);
  }

  /** Removes the table (the bridge is going). */
  async teardown(): Promise<void> {
    if (this.unavailable || !this.nft) return;
    await this.apply([`table inet ${this.table} {}`, `delete table inet ${this.table}`], 'cannot remove the table that confines hosts');
    this.agents.clear();
  }

  private apply(lines: string[], what: string): Promise<void> {
    return applyNft(this.run, this.nft, this.table, lines, what);
  }
}

/** Runs `lines` as one `nft -f` transaction on `table`; a refusal is an error that says where to look. */
export async function applyNft(run: CommandRunner, nft: string | undefined, table: string, lines: string[], what: string): Promise<void> {
  const result = await run(nft ?? 'nft', ['-f', '-'], `${lines.join('\n')}\n`);
  if (result.code !== 0) {
    throw new BerthError('internal', `${what}: ${describeFailure('nft', result)}`, `Check \`nft list table inet ${table}\` on the machine; restarting berth server rebuilds the table from its hosts.`);
  }
}
