/**
 * What a host may reach beyond the hosts of its group (reachability.ts): its agent channel and the
 * machine's ports it was granted (machine-ports.ts), and, with egress, what lies past the machine
 * (egress.ts) and the names of it (dns-forwarder.ts). All are rebuilt from the hosts' records when
 * the driver starts, put in place before a host boots, and taken away before its address can serve
 * another host.
 */
import { nameAllowed, parseEgressAllow, type EgressAllowList } from '../../core/egress-allow.js';
import { errorMessage } from '../../core/errors.js';
import type { HostResources } from '../types.js';
import { DnsForwarder, type ClientPolicy, type DnsCounts, type NameServer } from './dns-forwarder.js';
import { HostEgress } from './egress.js';
import { GroupNames, type NamedAddress } from './group-names.js';
import type { HostRecord } from './host-state.js';
import { agentEndpoint, MachinePorts } from './machine-ports.js';
import type { CommandRunner } from './proc.js';
import type { Subnet } from './subnet.js';

/** Names refused to one narrowed host that are logged a minute. */
const REFUSALS_LOGGED = 5;

/** The part of a host's record that says what it may reach. */
export type AccessRecord = Pick<HostRecord, 'agentIp' | 'agentPort' | 'machinePorts' | 'egress' | 'egressAllow'>;

export function accessRecord(serverUrl: string, resources: HostResources, gateway: string): AccessRecord {
  const agent = agentEndpoint(serverUrl, gateway);
  const ports = resources.machinePorts ?? [];
  return {
    ...(agent ? { agentIp: agent.ip, agentPort: agent.port } : {}),
    ...(ports.length > 0 ? { machinePorts: [...ports] } : {}),
    ...(resources.egress ? { egress: true } : {}),
    ...(resources.egress && resources.egressAllow?.length ? { egressAllow: [...resources.egressAllow] } : {}),
  };
}

/** What a record narrows its host's egress to; an unreadable list narrows it to nothing. */
function allowListOf(record: Partial<AccessRecord>): EgressAllowList | undefined {
  if (!record.egress || !record.egressAllow) return undefined;
  try {
    return parseEgressAllow(record.egressAllow);
  } catch {
    return { cidrs: [], names: [] };
  }
}

export interface HostAccessSetup {
  tools: { ip: string; nft: string | undefined };
  bridge: string;
  subnet: Subnet;
  egressDeny: readonly string[];
  /** The agent channel's port at the gateway, when the configuration names it (LocalDriverConfig.agentPort). */
  agentPort: number | undefined;
  /** Where hosts with egress get their names resolved (relayed at the gateway); none: no name service. */
  nameServers: readonly NameServer[];
  run: CommandRunner;
  logger: { info(obj: Record<string, unknown>, msg: string): void; warn(obj: Record<string, unknown>, msg: string): void };
}

export class HostAccess {
  private readonly machinePorts: MachinePorts;
  private readonly egress: HostEgress;
  private readonly configuredAgent: { ip: string; port: number } | undefined;
  /** Addresses of the hosts with egress: the only ones the DNS forwarder answers. */
  private readonly egressHosts = new Set<string>();
  /** Those of them whose egress is narrowed, with what to. */
  private readonly narrowed = new Map<string, EgressAllowList>();
  /** Who finds whom by name (group mates). */
  private readonly names = new GroupNames();
  /** Per narrowed host, the names it was refused in the current minute (see noteRefused). */
  private readonly refusals = new Map<string, { since: number; logged: number }>();
  /** The forwarder, started with the first host that needs it; resolves to undefined when it cannot run. */
  private dns: Promise<DnsForwarder | undefined> | undefined;
  private forwarder: DnsForwarder | undefined;

  constructor(private readonly setup: HostAccessSetup) {
    this.configuredAgent = setup.agentPort ? { ip: setup.subnet.gateway, port: setup.agentPort } : undefined;
    const { tools, bridge, subnet, run, logger } = setup;
    this.machinePorts = new MachinePorts(tools.nft, bridge, subnet.gateway, run, (message) => logger.warn({ bridge }, message));
    this.egress = new HostEgress(tools, bridge, subnet, setup.egressDeny, run, { info: (message) => logger.info({ bridge }, message), warn: (message) => logger.warn({ bridge }, message) });
  }

  /** From the records of the hosts on the machine (hosts cannot edit them; their own files do not count). */
  async prepare(records: readonly Partial<HostRecord>[]): Promise<void> {
    for (const record of records) {
      if (!record.egress || !record.ip) continue;
      this.egressHosts.add(record.ip);
      const allow = allowListOf(record);
      if (allow) this.narrowed.set(record.ip, allow);
    }
    const narrowed = [...this.narrowed].map(([ip, allow]) => ({ ip, cidrs: allow.cidrs }));
    await Promise.all([this.machinePorts.prepare(records, this.configuredAgent), this.egress.prepare(records, narrowed), records.some((r) => r.ip) ? this.nameService() : undefined]);
  }

  async admit(ip: string, access: AccessRecord): Promise<void> {
    const agent = access.agentIp && access.agentPort ? { ip: access.agentIp, port: access.agentPort } : undefined;
    const egress = access.egress === true;
    const allow = allowListOf(access);
    if (egress) this.egressHosts.add(ip);
    if (allow) this.narrowed.set(ip, allow);
    await Promise.all([this.machinePorts.admit(ip, agent, access.machinePorts ?? []), egress ? this.egress.admit(ip, allow) : undefined]);
  }

  /** Takes away what the record says the host at `ip` had; what it did not get is no error. */
  async revoke(ip: string, access: Partial<AccessRecord>): Promise<void> {
    this.egressHosts.delete(ip);
    this.narrowed.delete(ip);
    this.refusals.delete(ip);
    this.names.remove(ip);
    const egress = access.egress === true;
    await Promise.all([this.machinePorts.revoke(ip, access.machinePorts ?? []), egress ? this.egress.revoke(ip, allowListOf(access)) : undefined]);
  }

  /** How the DNS forwarder answers the host at `ip`: not at all without egress; narrowed hosts only their names. */
  private dnsPolicy(ip: string): ClientPolicy | undefined {
    const local = (name: string) => this.names.lookup(ip, name);
    if (!this.egressHosts.has(ip)) return { local };
    const allow = this.narrowed.get(ip);
    if (!allow) return { local, forward: true };
    return { local, forward: true, mayAsk: (name) => nameAllowed(allow.names, name), learn: (addresses, ttl) => this.egress.learn(ip, addresses, ttl), refused: (name) => this.noteRefused(ip, name) };
  }

  /** Logs names a narrowed host was refused: at most REFUSALS_LOGGED a minute per host, then a count. */
  private noteRefused(ip: string, name: string): void {
    const now = Date.now();
    const seen = this.refusals.get(ip);
    const window = seen && now - seen.since < 60_000 ? seen : { since: now, logged: 0 };
    this.refusals.set(ip, window);
    if (window.logged >= REFUSALS_LOGGED) return;
    window.logged++;
    const more = window.logged === REFUSALS_LOGGED ? ` (further refusals of this host within the minute are not logged)` : '';
    this.setup.logger.warn({ bridge: this.setup.bridge, host: ip, name }, `host ${ip} asked for ${name}, which its egress allow list does not name: refused${more}`);
  }

  /**
   * The name server a host with egress is given (the gateway), starting the forwarder the first time;
   * undefined when there is no name service (none configured, or it cannot listen: logged once).
   */
  async nameService(): Promise<string | undefined> {
    const { nameServers, subnet, logger, bridge } = this.setup;
    this.dns ??= (async () => {
      const forwarder = new DnsForwarder({ address: subnet.gateway, upstreams: nameServers, policy: (ip) => this.dnsPolicy(ip) });
      try {
        await forwarder.start();
        this.forwarder = forwarder;
        logger.info({ bridge, nameServers: nameServers.map((s) => `${s.address}:${s.port}`) }, `hosts resolve their group mates' names at ${subnet.gateway}, and hosts with egress ${nameServers.length > 0 ? 'every name' : 'no other name (no name server given)'}`);
        return forwarder;
      } catch (err) {
        logger.warn({ bridge }, `hosts get no name service: ${errorMessage(err)}`);
        return undefined;
      }
    })();
    return (await this.dns) ? subnet.gateway : undefined;
  }

  /** What the name service answered so far (undefined: it has not started). */
  nameServiceCounts(): DnsCounts | undefined {
    return this.forwarder?.counts;
  }

  /** Whether names other than group mates' are answered (a name server was given). */
  get forwardsNames(): boolean {
    return this.setup.nameServers.length > 0;
  }

  /** See GroupNames.set (and HostDriver.setNetworkGroups). */
  setGroupNames(groups: readonly (readonly NamedAddress[])[], all: boolean): void {
    this.names.set(groups, all);
  }

  /** Stops answering DNS (this process is letting go of the driver; hosts keep running). */
  async close(): Promise<void> {
    const dns = this.dns;
    this.dns = undefined;
    await (await dns)?.close();
  }

  async teardown(): Promise<void> {
    await this.close();
    await this.machinePorts.teardown();
    await this.egress.teardown();
  }
}
