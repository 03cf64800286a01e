/**
 * The clone-uniqueness check, pure parts. Before an image is published, berth launches two hosts
 * from it, runs IDENTITY_PROBE in each (Run Command, as root) and compares what they print: any
 * identity the two share means something was baked into the image that should have been stripped
 * (see identity.ts) or regenerated at first boot (src/agent/firstboot.ts).
 */

import { FIRST_BOOT_PATH } from '../protocol/messages.js';

/**
 * Probe output is one line per item: `<item> <value>`, or `<item> -` when the host lacks it.
 * `root` is a directory, or `{ shellWord }`: a shell word that expands to the root at run time,
 * empty for `/` (an AMI bake's probe uses `"$R"`, which is empty on an instance and a directory on
 * an emulated machine of the tests).
 */
export function buildIdentityProbe(root: string | { shellWord: string } = '/'): string[] {
  const word = typeof root === 'string' ? undefined : root.shellWord;
  const prefix = typeof root === 'string' ? root.replace(/\/+$/, '') : '';
  const at = (path: string): string => (word !== undefined ? `${word}${path}` : prefix === '' ? path : `${shQuote(prefix)}${path}`);
  const sshDir = at('/etc/ssh');
  const keygen = 'command -v ssh-keygen >/dev/null 2>&1';
  return [
    `if [ -s ${at('/etc/machine-id')} ]; then printf 'machine-id %s\\n' "$(head -n 1 ${at('/etc/machine-id')} | tr -d ' \\t\\r')"; else echo 'machine-id -'; fi`,
    `if [ -s ${at('/var/lib/dbus/machine-id')} ]; then printf 'dbus-machine-id %s\\n' "$(head -n 1 ${at('/var/lib/dbus/machine-id')} | tr -d ' \\t\\r')"; else echo 'dbus-machine-id -'; fi`,
    // The agent generates the host keys the image asks for (first-boot.json) in the background at
    // first boot: give it up to 10 s.
    `if grep -q sshHostKeyTypes ${at(FIRST_BOOT_PATH)} 2>/dev/null; then berth_end=$(( $(date +%s) + 10 )); ` +
      `while ! ls ${sshDir}/ssh_host_*_key.pub >/dev/null 2>&1 && [ "$(date +%s)" -lt "$berth_end" ]; do sleep 0.2 2>/dev/null || sleep 1; done; fi`,
    // Fingerprints only (public anyway). Without ssh-keygen, a hash of the key blob alone, so a
    // key's comment does not make two copies of it look different.
    `for berth_key in ${sshDir}/ssh_host_*_key.pub; do [ -f "$berth_key" ] || continue; ` +
      `berth_type=\${berth_key##*/ssh_host_}; berth_type=\${berth_type%_key.pub}; berth_fp=; ` +
      `if ${keygen}; then berth_fp=$(ssh-keygen -lf "$berth_key" 2>/dev/null | cut -d ' ' -f 2); fi; ` +
      `if [ -z "$berth_fp" ]; then berth_fp=sha256hex:$(cut -d ' ' -f 2 "$berth_key" | sha256sum | cut -d ' ' -f 1); fi; ` +
      `printf 'ssh-host-key %s %s\\n' "$berth_fp" "$berth_type"; done`,
    // Only the hostId field is ever printed: agent.json also holds the host's token.
    `berth_host=$(sed -n 's/.*"hostId"[[:space:]]*:[[:space:]]*"\\([^"]*\\)".*/\\1/p' ${at('/etc/berth/agent.json')} 2>/dev/null | head -n 1); ` +
      `printf 'agent-host-id %s\\n' "\${berth_host:--}"`,
    `berth_name=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null); printf 'hostname %s\\n' "\${berth_name:--}"`,
  ];
}

/** Shell commands (POSIX sh, run as root inside a host; join them with newlines). */
export const IDENTITY_PROBE: string[] = buildIdentityProbe();

export interface HostIdentity {
  machineId?: string;
  dbusMachineId?: string;
  /** `<fingerprint> <type>` per host key, sorted. */
  sshHostKeys: string[];
  agentHostId?: string;
  hostname?: string;
}

export function parseIdentityProbe(stdout: string): HostIdentity {
  const identity: HostIdentity = { sshHostKeys: [] };
  for (const line of stdout.split('\n')) {
    const [item, ...rest] = line.trim().split(/\s+/);
    const value = rest.join(' ');
    if (value === '' || value === '-') continue;
    if (item === 'machine-id') identity.machineId = value;
    else if (item === 'dbus-machine-id') identity.dbusMachineId = value;
    else if (item === 'ssh-host-key') identity.sshHostKeys.push(value);
    else if (item === 'agent-host-id') identity.agentHostId = value;
    else if (item === 'hostname') identity.hostname = value;
  }
  identity.sshHostKeys = [...new Set(identity.sshHostKeys)].sort();
  return identity;
}

export type UniquenessItemName = 'machine-id' | 'dbus-machine-id' | 'ssh-host-keys' | 'agent-identity' | 'hostname';

export interface UniquenessItem {
  item: UniquenessItemName;
  a: string;
  b: string;
  verdict: 'differ' | 'same' | 'absent';
}

export interface UniquenessReport {
  ok: boolean;
  items: UniquenessItem[];
}

/** Every host must have these; the others may be missing on both (an image without D-Bus or SSH). */
const REQUIRED: ReadonlySet<UniquenessItemName> = new Set(['machine-id', 'agent-identity', 'hostname']);

export function compareIdentities(a: HostIdentity, b: HostIdentity): UniquenessReport {
  const items: UniquenessItem[] = [
    compareValue('machine-id', a.machineId, b.machineId),
    compareValue('dbus-machine-id', a.dbusMachineId, b.dbusMachineId),
    compareSshKeys(a.sshHostKeys, b.sshHostKeys),
    compareValue('agent-identity', a.agentHostId, b.agentHostId),
    compareValue('hostname', a.hostname, b.hostname),
  ];
  return { ok: items.every((i) => !fails(i)), items };
}

function compareValue(item: UniquenessItemName, a: string | undefined, b: string | undefined): UniquenessItem {
  const verdict = a === undefined || b === undefined ? (a === b || REQUIRED.has(item) ? 'absent' : 'differ') : a === b ? 'same' : 'differ';
  return { item, a: a ?? '-', b: b ?? '-', verdict };
}

/** One shared host key is enough to impersonate the other host: any overlap is 'same'. */
function compareSshKeys(a: string[], b: string[]): UniquenessItem {
  const fingerprint = (key: string): string => key.split(' ')[0] ?? key;
  const inB = new Set(b.map(fingerprint));
  const shared = a.filter((key) => inB.has(fingerprint(key)));
  const show = (keys: string[]): string => (keys.length === 0 ? '-' : keys.join(', '));
  if (a.length === 0 && b.length === 0) return { item: 'ssh-host-keys', a: '-', b: '-', verdict: 'absent' };
  if (shared.length > 0) return { item: 'ssh-host-keys', a: `shared: ${show(shared)}`, b: `shared: ${show(shared)}`, verdict: 'same' };
  return { item: 'ssh-host-keys', a: show(a), b: show(b), verdict: 'differ' };
}

/** The items that make a report fail: shared by the two hosts, or missing where every host needs them. */
export function failingItems(r: UniquenessReport): UniquenessItem[] {
  return r.items.filter(fails);
}

function fails(item: UniquenessItem): boolean {
  return item.verdict === 'same' || (item.verdict === 'absent' && REQUIRED.has(item.item));
}

const WHY: Record<UniquenessItemName, { same: string; absent: string }> = {
  'machine-id': { same: '/etc/machine-id was baked into the image', absent: 'every host needs /etc/machine-id (the berth agent writes one at first boot)' },
  'dbus-machine-id': { same: '/var/lib/dbus/machine-id was baked into the image', absent: '' },
  'ssh-host-keys': { same: 'SSH host keys were baked into the image', absent: '' },
  'agent-identity': { same: '/etc/berth/agent.json was baked into the image', absent: 'every host needs /etc/berth/agent.json' },
  hostname: { same: 'the hosts have the same hostname', absent: 'every host needs a hostname' },
};

const MAX_CELL = 60;

/** A table of the comparison, then one line per failure saying what went wrong. */
export function formatUniquenessReport(r: UniquenessReport): string {
  const cell = (s: string): string => (s.length > MAX_CELL ? `${s.slice(0, MAX_CELL - 1)}…` : s);
  const rows = [['ITEM', 'HOST A', 'HOST B', 'VERDICT'], ...r.items.map((i) => [i.item, cell(i.a), cell(i.b), fails(i) ? `${i.verdict.toUpperCase()} (fails)` : i.verdict])];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  const lines = rows.map((row) => row.map((c, i) => (i < 3 ? c.padEnd(widths[i] ?? 0) : c)).join('  '));
  const problems = r.items.filter(fails).map((i) => `- ${i.item}: ${i.verdict === 'same' ? WHY[i.item].same : WHY[i.item].absent}`);
  const verdict = r.ok ? 'The two hosts have distinct identities.' : 'Hosts cloned from this image cannot be told apart:';
  return [...lines, '', verdict, ...problems].join('\n') + '\n';
}

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
