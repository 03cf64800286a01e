/**
 * Hosts of one group reach each other over the network; no host reaches a host of another group or
 * a pool's spare (the driver keeps them apart: see HostDriver.setNetworkGroups). The control plane
 * says who is in which group: when a claim puts a host into one, and the whole picture at start.
 * Leaving needs nothing here: the driver's terminate and reset take a host out themselves.
 */
import { errorMessage } from '../core/errors.js';
import type { HostDriver } from '../drivers/types.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';

export interface NetworkGroupsDeps {
  driver: Pick<HostDriver, 'setNetworkGroups'>;
  hosts: HostsRepo;
  log: (line: string) => void;
}

type Member = { id: string; driverData: Record<string, unknown> };

export class NetworkGroups {
  constructor(private readonly deps: NetworkGroupsDeps) {}

  /** Whether the driver keeps groups apart itself (else its backend's own means do). */
  get enabled(): boolean {
    return typeof this.deps.driver.setNetworkGroups === 'function';
  }

  /**
   * `host` was just claimed into its group: it and the group's other hosts reach each other from
   * now on. A group of one changes nothing on the machine.
   */
  async joined(host: HostRow): Promise<void> {
    if (!this.enabled || !host.group_name) return;
    const members = await this.deps.hosts.groupMembers(host.tenant_id, host.group_name);
    await this.deps.driver.setNetworkGroups?.([members.map(member)]);
  }

  /** At start: every group's running hosts, as the whole truth (whatever changed while no server ran). */
  async syncAll(): Promise<number> {
    if (!this.enabled) return 0;
    const groups = new Map<string, Member[]>();
    for (const host of await this.deps.hosts.listInStates(['running'])) {
      if (!host.group_name || host.slot !== 'claimed') continue;
      const key = `${host.tenant_id}\u0000${host.group_name}`;
      groups.set(key, [...(groups.get(key) ?? []), member(host)]);
    }
    try {
      await this.deps.driver.setNetworkGroups?.([...groups.values()], { all: true });
    } catch (err) {
      this.deps.log(`could not restore which hosts reach each other: ${errorMessage(err)}`);
    }
    return groups.size;
  }
}

function member(host: Pick<HostRow, 'id' | 'driver_data'>): Member {
  return { id: host.id, driverData: host.driver_data };
}
