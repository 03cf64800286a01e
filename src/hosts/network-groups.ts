/**
 * Hosts of one group reach each other over the network; no host reaches a host of another group or
 * a pool's spare (the driver keeps them apart: see HostDriver.setNetworkGroups). The control plane
 * says who is in which group: when a claim puts a host into one, and the whole picture at start.
 * Leaving asks nothing of the driver: its terminate and reset take a host out themselves (`left`
 * only forgets the host here).
 */
import { errorMessage } from '../core/errors.js';
import type { GroupMember, HostDriver } from '../drivers/types.js';
import { SERVICE_TAG } from '../stacks/modes.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';

export interface NetworkGroupsDeps {
  driver: Pick<HostDriver, 'setNetworkGroups'>;
  hosts: HostsRepo;
  log: (line: string) => void;
}

type Member = GroupMember;

/** How long a join is remembered beyond the store's view (far longer than a claim's last statement takes). */
const RECENT_MS = 60_000;

export class NetworkGroups {
  /** This process's joins of the last RECENT_MS, by tenant and group (see joined). */
  private readonly recent = new Map<string, { member: Member; at: number }[]>();
  private readonly recentGroupOf = new Map<string, string>();
  private prunedAt = 0;

  constructor(private readonly deps: NetworkGroupsDeps) {}

  /** Whether the driver keeps groups apart itself (else its backend's own means do). */
  get enabled(): boolean {
    return typeof this.deps.driver.setNetworkGroups === 'function';
  }

  /**
   * `host` is in its group (just claimed, or reset by its user): it and the group's other hosts
   * reach each other from now on. `mates`, when the caller has them (a claim's last statement
   * returns them), spares a query; a host alone in its group costs nothing.
   */
  async joined(host: HostRow, mates?: Pick<HostRow, 'id' | 'driver_data' | 'hostname' | 'tags'>[]): Promise<void> {
    if (!this.enabled || !host.group_name) return;
    const fromStore = mates ?? (await this.deps.hosts.groupMembers(host.tenant_id, host.group_name));
    const others = new Map(fromStore.filter((m) => m.id !== host.id).map((m) => [m.id, member(m)]));
    // Two claims into one group whose last statements ran at once (PostgreSQL) did not see each
    // other; the one that joins second here sees the first in this list. A host that left since is
    // stale by its driverData, and the driver leaves it out.
    const key = groupKey(host.tenant_id, host.group_name);
    const now = Date.now();
    const recent = (this.recent.get(key) ?? []).filter((r) => now - r.at < RECENT_MS && r.member.id !== host.id);
    for (const r of recent) if (!others.has(r.member.id)) others.set(r.member.id, r.member);
    this.recent.set(key, [...recent, { member: member(host), at: now }]);
    this.recentGroupOf.set(host.id, key);
    this.prune(now);
    if (others.size === 0) return;
    await this.deps.driver.setNetworkGroups?.([[member(host), ...others.values()]]);
  }

  /** The host is terminated or being reset: it leaves the recent joins (the driver cut it off already). */
  left(hostId: string): void {
    const key = this.recentGroupOf.get(hostId);
    if (key === undefined) return;
    this.recentGroupOf.delete(hostId);
    const kept = (this.recent.get(key) ?? []).filter((r) => r.member.id !== hostId);
    if (kept.length === 0) this.recent.delete(key);
    else this.recent.set(key, kept);
  }

  private prune(now: number): void {
    if (now - this.prunedAt < RECENT_MS) return;
    this.prunedAt = now;
    for (const [key, list] of this.recent) {
      const kept = list.filter((r) => now - r.at < RECENT_MS);
      for (const r of list) if (!kept.includes(r) && this.recentGroupOf.get(r.member.id) === key) this.recentGroupOf.delete(r.member.id);
      if (kept.length === 0) this.recent.delete(key);
      else this.recent.set(key, kept);
    }
  }

  /**
   * Every group's running hosts, as the whole truth: at start (whatever changed while no server
   * ran), and every few minutes (a change the driver failed to make, a throttled cloud API, is made
   * then). This process's recent joins are added: one whose claim committed after the store was
   * read here is in them (it is recorded before its own call to the driver, which then runs after
   * this one), so the whole truth never cuts off a host that just joined.
   */
  async syncAll(): Promise<void> {
    if (!this.enabled) return;
    const groups = new Map<string, Map<string, Member>>();
    const add = (key: string, m: Member): void => void groups.set(key, (groups.get(key) ?? new Map<string, Member>()).set(m.id, m));
    for (const host of await this.deps.hosts.listInStates(['running'])) {
      if (host.group_name && host.slot === 'claimed') add(groupKey(host.tenant_id, host.group_name), member(host));
    }
    const now = Date.now();
    for (const [key, list] of this.recent) for (const r of list) if (now - r.at < RECENT_MS && !groups.get(key)?.has(r.member.id)) add(key, r.member);
    try {
      await this.deps.driver.setNetworkGroups?.([...groups.values()].map((g) => [...g.values()]), { all: true });
    } catch (err) {
      this.deps.log(`could not set which hosts reach each other: ${errorMessage(err)}`);
    }
  }
}

function groupKey(tenantId: string, group: string): string {
  return `${tenantId}\u0000${group}`;
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * A host as the driver takes it, with the names its group mates may look it up by: its hostname and,
 * on a service-mode host, its service (so an environment's web finds `api`, as in a compose file).
 */
function member(host: Pick<HostRow, 'id' | 'driver_data' | 'hostname' | 'tags'>): Member {
  const names = [host.hostname, host.tags?.[SERVICE_TAG]].map((n) => n?.toLowerCase()).filter((n): n is string => n !== undefined && LABEL.test(n));
  return { id: host.id, driverData: host.driver_data, ...(names.length > 0 ? { names: [...new Set(names)] } : {}) };
}
