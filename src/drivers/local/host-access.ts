/**
 * What a host may reach beyond the hosts of its group (reachability.ts): its agent channel and the
 * machine's ports it was granted (machine-ports.ts), and, with egress, what lies past the machine
 * (egress.ts). Both are rebuilt from the hosts' records when the driver starts, put in place before
 * a host boots, and taken away before its address can serve another host.
 */
import type { HostResources } from '../types.js';
import { HostEgress } from './egress.js';
import type { HostRecord } from './host-state.js';
import { agentEndpoint, MachinePorts } from './machine-ports.js';
import type { CommandRunner } from './proc.js';
import type { Subnet } from './subnet.js';

/** The part of a host's record that says what it may reach. */
export type AccessRecord = Pick<HostRecord, 'agentIp' | 'agentPort' | 'machinePorts' | 'egress'>;

export function accessRecord(serverUrl: string, resources: HostResources, gateway: string): AccessRecord {
  const agent = agentEndpoint(serverUrl, gateway);
  const ports = resources.machinePorts ?? [];
  return {
    ...(agent ? { agentIp: agent.ip, agentPort: agent.port } : {}),
    ...(ports.length > 0 ? { machinePorts: [...ports] } : {}),
    ...(resources.egress ? { egress: true } : {}),
  };
}

export interface HostAccessSetup {
  tools: { ip: string; nft: string | undefined };
  bridge: string;
  subnet: Subnet;
  egressDeny: readonly string[];
  /** The agent channel's port at the gateway, when the configuration names it (LocalDriverConfig.agentPort). */
  agentPort: number | undefined;
  run: CommandRunner;
  logger: { info(obj: Record<string, unknown>, msg: string): void; warn(obj: Record<string, unknown>, msg: string): void };
}

export class HostAccess {
  private readonly machinePorts: MachinePorts;
  private readonly egress: HostEgress;
  private readonly configuredAgent: { ip: string; port: number } | undefined;

  constructor(setup: HostAccessSetup) {
    this.configuredAgent = setup.agentPort ? { ip: setup.subnet.gateway, port: setup.agentPort } : undefined;
    const { tools, bridge, subnet, run, logger } = setup;
    this.machinePorts = new MachinePorts(tools.nft, bridge, subnet.gateway, run, (message) => logger.warn({ bridge }, message));
    this.egress = new HostEgress(tools, bridge, subnet, setup.egressDeny, run, { info: (message) => logger.info({ bridge }, message), warn: (message) => logger.warn({ bridge }, message) });
  }

  /** From the records of the hosts on the machine (hosts cannot edit them; their own files do not count). */
  async prepare(records: readonly Partial<HostRecord>[]): Promise<void> {
    await Promise.all([this.machinePorts.prepare(records, this.configuredAgent), this.egress.prepare(records)]);
  }

  async admit(ip: string, access: AccessRecord): Promise<void> {
    const agent = access.agentIp && access.agentPort ? { ip: access.agentIp, port: access.agentPort } : undefined;
    await Promise.all([this.machinePorts.admit(ip, agent, access.machinePorts ?? []), access.egress ? this.egress.admit(ip) : undefined]);
  }

  /** Takes away what the record says the host at `ip` had; what it did not get is no error. */
  async revoke(ip: string, access: Partial<AccessRecord>): Promise<void> {
    await Promise.all([this.machinePorts.revoke(ip, access.machinePorts ?? []), access.egress ? this.egress.revoke(ip) : undefined]);
  }

  async teardown(): Promise<void> {
    await this.machinePorts.teardown();
    await this.egress.teardown();
  }
}
