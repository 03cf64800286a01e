/**
 * IPv4 subnet arithmetic and the per-driver address allocator. The bridge (gateway) takes the first
 * address of the subnet; hosts get the rest, handed out round-robin so a just-freed address is not
 * immediately reused (stale ARP entries and connections then point nowhere rather than at a new host).
 */
import { BerthError } from '../../core/errors.js';

export interface Subnet {
  /** Canonical text, e.g. `10.213.0.0/16`. */
  cidr: string;
  network: number;
  prefixLength: number;
  gateway: string;
  /** First and last address a host may get (inclusive). */
  firstHost: number;
  lastHost: number;
}

export function ipToInt(ip: string): number | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

export function intToIp(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

export function parseSubnet(cidr: string): Subnet {
  const [address, prefixText, ...rest] = cidr.split('/');
  const prefixLength = Number(prefixText);
  const base = address === undefined ? undefined : ipToInt(address);
  if (base === undefined || rest.length > 0 || !/^\d{1,2}$/.test(prefixText ?? '') || prefixLength < 8 || prefixLength > 29) {
    throw new BerthError(
      'validation_failed',
      `subnet ${JSON.stringify(cidr)} is not an IPv4 CIDR with a prefix between /8 and /29`,
      'Pass a private IPv4 subnet that is unused on this machine, e.g. 10.213.0.0/16.',
    );
  }
  const size = 2 ** (32 - prefixLength);
  const network = base - (base % size);
  return {
    cidr: `${intToIp(network)}/${prefixLength}`,
    network,
    prefixLength,
    gateway: intToIp(network + 1),
    firstHost: network + 2,
    lastHost: network + size - 2,
  };
}

export function subnetContains(subnet: Subnet, ip: string): boolean {
  const value = ipToInt(ip);
  return value !== undefined && value >= subnet.firstHost && value <= subnet.lastHost;
}

export class IpAllocator {
  private readonly used = new Set<number>();
  private cursor: number;

  constructor(private readonly subnet: Subnet) {
    this.cursor = subnet.firstHost;
  }

  /** Marks an address as taken (seeding from hosts found on the machine); ignores foreign addresses. */
  reserve(ip: string): void {
    if (subnetContains(this.subnet, ip)) this.used.add(ipToInt(ip) as number);
  }

  release(ip: string): void {
    const value = ipToInt(ip);
    if (value !== undefined) this.used.delete(value);
  }

  allocate(): string {
    const { firstHost, lastHost } = this.subnet;
    const count = lastHost - firstHost + 1;
    for (let tried = 0; tried < count; tried++) {
      const candidate = this.cursor;
      this.cursor = candidate >= lastHost ? firstHost : candidate + 1;
      if (!this.used.has(candidate)) {
        this.used.add(candidate);
        return intToIp(candidate);
      }
    }
    throw new BerthError(
      'launch_failed',
      `no free address left in subnet ${this.subnet.cidr} (${count} hosts running)`,
      'Terminate some hosts, or configure a larger subnet for the local driver.',
    );
  }

  get inUse(): number {
    return this.used.size;
  }
}
