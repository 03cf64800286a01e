/**
 * HostResources.egressAllow: what a host with egress may reach when it may not reach everything.
 * Entries are IPv4 ranges (`203.0.113.0/24`, or one address) and names (`packages.example.com`, or
 * `*.mirror.example.org` for every name under it). A name's addresses open to the host when it resolves the
 * name through the machine (the local driver's DNS relay), for as long as the answer holds; names
 * not listed are not answered at all, so what a host asks cannot carry data out either.
 * No I/O, no zod: the CLI checks its flags with it too.
 */
import { BerthError } from './errors.js';

export const EGRESS_ALLOW_MAX = 64;

export interface EgressAllowList {
  /** IPv4 ranges, as network address / prefix length. */
  cidrs: string[];
  /** Lower case, no trailing dot; `*.` prefixed for a suffix. */
  names: string[];
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function parseCidr(entry: string): string | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(entry);
  if (!match) return undefined;
  const octets = match.slice(1, 5).map(Number);
  const bits = match[5] === undefined ? 32 : Number(match[5]);
  if (octets.some((o) => o > 255) || bits > 32) return undefined;
  const value = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - bits);
  const network = value - (value % size);
  return `${[24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.')}/${bits}`;
}

function parseName(entry: string): string | undefined {
  const lower = entry.toLowerCase().replace(/\.$/, '');
  const bare = lower.startsWith('*.') ? lower.slice(2) : lower;
  if (bare.length === 0 || bare.length > 253) return undefined;
  const labels = bare.split('.');
  // A name has a letter somewhere: "1.2.3" is a mistyped address, not a name.
  if (!labels.every((l) => LABEL.test(l)) || !/[a-z]/.test(bare)) return undefined;
  return lower;
}

/** Checks and normalises a list; a bad entry is a validation error that names it. */
export function parseEgressAllow(entries: readonly string[]): EgressAllowList {
  if (entries.length > EGRESS_ALLOW_MAX) {
    throw new BerthError('validation_failed', `egressAllow has ${entries.length} entries; at most ${EGRESS_ALLOW_MAX}`, 'Allow a range or a name suffix (*.example.org) in place of many entries.');
  }
  const list: EgressAllowList = { cidrs: [], names: [] };
  for (const entry of entries) {
    const cidr = parseCidr(entry.trim());
    const name = cidr ? undefined : parseName(entry.trim());
    if (cidr) list.cidrs.push(cidr);
    else if (name) list.names.push(name);
    else {
      throw new BerthError('validation_failed', `egressAllow entry ${JSON.stringify(entry)} is neither an IPv4 range nor a DNS name`, 'Give ranges as 203.0.113.0/24 (or one address), names as packages.example.com, and every name under one as *.mirror.example.org.');
    }
  }
  return { cidrs: [...new Set(list.cidrs)], names: [...new Set(list.names)] };
}

/** Whether `name` (as asked, any case, trailing dot or not) is one of `names` or under a `*.` one. */
export function nameAllowed(names: readonly string[], name: string): boolean {
  const asked = name.toLowerCase().replace(/\.$/, '');
  return names.some((allowed) => (allowed.startsWith('*.') ? asked.endsWith(allowed.slice(1)) && asked.length > allowed.length - 1 : asked === allowed));
}
