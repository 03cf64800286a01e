/**
 * Which environment a request is for, read from its Host header: `NAME.<domain>[:port]` names the
 * environment NAME. Everything else (the bare domain, an IP address, another domain) names none.
 */

/** One DNS label, lower case: what an environment name must be to appear in a host name. */
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export function isDnsLabel(name: string): boolean {
  return DNS_LABEL.test(name);
}

export type HostTarget =
  /** `NAME.<domain>`: the environment NAME (lower case). */
  | { kind: 'environment'; name: string }
  /** No environment in the host: the bare domain, an IP, another domain or no Host header at all. */
  | { kind: 'none' };

const NO_ENVIRONMENT: HostTarget = { kind: 'none' };

/** The host name without its port, lower case, without a trailing dot; undefined for an IPv6 literal. */
export function hostWithoutPort(hostHeader: string): string | undefined {
  if (hostHeader.startsWith('[')) return undefined;
  const colon = hostHeader.lastIndexOf(':');
  const host = colon === -1 ? hostHeader : hostHeader.slice(0, colon);
  const lower = host.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/** The port written in a Host header, '' when there is none (so a page can repeat it to the user). */
export function portOfHost(hostHeader: string | undefined): string {
  if (!hostHeader) return '';
  const match = /:(\d+)$/.exec(hostHeader);
  return match?.[1] ?? '';
}

/**
 * @param domain lower case, no leading dot (normalise it once with {@link normaliseDomain}).
 */
export function environmentFromHost(hostHeader: string | undefined, domain: string): HostTarget {
  if (!hostHeader) return NO_ENVIRONMENT;
  const host = hostWithoutPort(hostHeader);
  if (host === undefined || host.length <= domain.length + 1) return NO_ENVIRONMENT;
  if (!host.endsWith(domain) || host.charCodeAt(host.length - domain.length - 1) !== 0x2e /* '.' */) return NO_ENVIRONMENT;
  const name = host.slice(0, host.length - domain.length - 1);
  // `a.b.<domain>` is not an environment: names are one label, so nothing deeper can be one.
  return isDnsLabel(name) ? { kind: 'environment', name } : NO_ENVIRONMENT;
}

/** `Localhost.` → `localhost`; throws nothing, the router validates the result. */
export function normaliseDomain(domain: string): string {
  let lower = domain.trim().toLowerCase();
  while (lower.startsWith('.')) lower = lower.slice(1);
  while (lower.endsWith('.')) lower = lower.slice(0, -1);
  return lower;
}

/** A domain is one or more DNS labels joined by dots. */
export function isDomain(domain: string): boolean {
  return domain.length > 0 && domain.length <= 253 && domain.split('.').every(isDnsLabel);
}
