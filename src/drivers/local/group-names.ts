/**
 * Who may look whom up by name: the hosts of a group find each other by their names (hostname,
 * service; see HostDriver.setNetworkGroups) through the DNS relay at the gateway (dns-forwarder.ts),
 * as containers on one compose network do. A host finds only its group mates: the names of other
 * groups' hosts are not answered, as their addresses are not reachable (reachability.ts). In memory:
 * the control plane gives the whole picture at start (NetworkGroups.syncAll) and each join since.
 */
export interface NamedAddress {
  ip: string;
  names: readonly string[];
}

export class GroupNames {
  private readonly namesOf = new Map<string, readonly string[]>();
  private readonly peersOf = new Map<string, Set<string>>();

  /** Each group is the whole truth for its members; with `all`, the groups are the whole truth. */
  set(groups: readonly (readonly NamedAddress[])[], all: boolean): void {
    if (all) {
      this.namesOf.clear();
      this.peersOf.clear();
    }
    for (const group of groups) {
      const members = new Set(group.map((m) => m.ip));
      // A member's former peers outside the group lose it, as it loses them.
      for (const [ip, peers] of this.peersOf) if (!members.has(ip)) for (const m of members) peers.delete(m);
      for (const member of group) {
        this.namesOf.set(member.ip, member.names.map((n) => n.toLowerCase()));
        this.peersOf.set(member.ip, new Set([...members].filter((ip) => ip !== member.ip)));
      }
    }
  }

  /** The host at `ip` left its group (terminated, reset): nobody finds it by name any more. */
  remove(ip: string): void {
    this.namesOf.delete(ip);
    this.peersOf.delete(ip);
    for (const peers of this.peersOf.values()) peers.delete(ip);
  }

  /** Addresses of `from`'s group mates named `name` (any case, trailing dot or not); undefined when none is. */
  lookup(from: string, name: string): string[] | undefined {
    const wanted = name.toLowerCase().replace(/\.$/, '');
    const found = [...(this.peersOf.get(from) ?? [])].filter((ip) => this.namesOf.get(ip)?.includes(wanted)).sort();
    return found.length > 0 ? found : undefined;
  }
}
