/** Printing for humans and for machines (`--json`). */
export interface Printer {
  json: boolean;
  out: (text: string) => void;
  err: (text: string) => void;
}

export function consolePrinter(json: boolean): Printer {
  return { json, out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
}

/** A plain aligned table: columns as wide as their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

export function age(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function formatTags(tags: Record<string, string>): string {
  return Object.entries(tags)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export function parseKeyValues(values: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`${what} "${item}" is not of the form key=value`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * Replica counts as `--replicas` (repeatable, or comma-separated) and `env scale` take them: `N`
 * for every service, `SERVICE=N` for one (service mode); the body fields the API takes.
 */
export function parseReplicas(values: readonly string[], what = '--replicas'): { replicas?: number; serviceReplicas?: Record<string, number> } {
  const out: { replicas?: number; serviceReplicas?: Record<string, number> } = {};
  for (const value of splitList(values)) {
    const match = /^(?:([a-z0-9][a-z0-9_-]*)=)?(\d+)$/.exec(value);
    if (!match?.[2]) throw new UsageError(`${what} ${value}: give a whole number (every service) or SERVICE=N (one service)`);
    const n = Number(match[2]);
    if (match[1] === undefined) out.replicas = n;
    else out.serviceReplicas = { ...out.serviceReplicas, [match[1]]: n };
  }
  return out;
}

/** Bad usage detected by the CLI itself: exit code 2, nothing sent. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A `--wait <s>` option: undefined when not given; a positive number of seconds, or exit 2. */
export function waitSeconds(value: string | undefined, flag = '--wait'): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (!(Number.isFinite(seconds) && seconds > 0)) throw new UsageError(`${flag} takes seconds (a positive number), not ${JSON.stringify(value)}`);
  return seconds;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Values of a repeatable option that may each hold a comma-separated list. */
export function splitList(values: readonly string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

/** `k=v` sets, `k-` removes (as kubectl label does); `what` names a key in the error ("a tag"). */
export function parseChanges(changes: string[], what: string): { set: Record<string, string>; remove: string[] } {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const change of changes) {
    const eq = change.indexOf('=');
    if (eq > 0) set[change.slice(0, eq)] = change.slice(eq + 1);
    else if (eq < 0 && change.length > 1 && change.endsWith('-')) remove.push(change.slice(0, -1));
    else throw new UsageError(`"${change}" is neither KEY=VALUE (set ${what}) nor KEY- (remove one)`);
  }
  return { set, remove };
}
