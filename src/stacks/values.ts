/**
 * Readers for the values a stack's services use that images: does not: durations, ports, counts,
 * names and lists of names. Each reports a located issue on the Reader and returns undefined on a
 * bad value, as the Reader's own methods do, so one pass over the file finds every problem.
 */
import { isScalar, isSeq } from 'yaml';
import { describe, type Reader, type Slot } from '../images/spec-reader.js';

const DURATION_HINT = 'Write a number of seconds (30, 0.5) or a number with a unit: "100ms", "30s", "5m", "1h".';
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration in milliseconds: a yaml number is seconds (`timeout: 30`), text is a number with an
 * optional unit ms, s, m or h (`"100ms"`, `"1.5s"`, `"5m"`; no unit means seconds). Never negative;
 * with `positive`, never 0 either.
 */
export function readDurationMs(r: Reader, slot: Slot, positive: boolean): number | undefined {
  const ms = durationMs(slot.node);
  if (ms !== undefined && (positive ? ms > 0 : ms >= 0)) return ms;
  const bound = positive ? 'above 0' : '0 or more';
  r.report(slot.at, slot.path, `must be a duration ${bound} such as 30, "100ms", "30s" or "5m" (got ${describe(slot.node)})`, DURATION_HINT);
  return undefined;
}

function durationMs(node: unknown): number | undefined {
  if (!isScalar(node)) return undefined;
  if (typeof node.value === 'number') return Number.isFinite(node.value) ? node.value * 1000 : undefined;
  if (typeof node.value !== 'string') return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(node.value.trim());
  if (!match) return undefined;
  const [, amount = '', unit = 's'] = match;
  return Number(amount) * (UNIT_MS[unit] ?? 1000);
}

/** A whole number within [min, max], written as a yaml number. */
export function readInteger(r: Reader, slot: Slot, min: number, max: number, what: string): number | undefined {
  const value = isScalar(slot.node) ? slot.node.value : undefined;
  if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value;
  r.report(slot.at, slot.path, `must be ${what}: a whole number from ${min} to ${max} (got ${describe(slot.node)})`, `Write a number such as ${Math.min(Math.max(min, 1), max)}, unquoted.`);
  return undefined;
}

/** A number (fractions allowed) of at least `min`. */
export function readNumber(r: Reader, slot: Slot, min: number, what: string): number | undefined {
  const value = isScalar(slot.node) ? slot.node.value : undefined;
  if (typeof value === 'number' && Number.isFinite(value) && value >= min) return value;
  r.report(slot.at, slot.path, `must be ${what}: a number of at least ${min} (got ${describe(slot.node)})`, `Write a number such as ${Math.max(min, 2)}, unquoted.`);
  return undefined;
}

export function readPort(r: Reader, slot: Slot): number | undefined {
  return readInteger(r, slot, 1, 65535, 'a TCP port');
}

/**
 * A list of names (`what` is one of them, e.g. "service name") matching `pattern`; `rule` says what
 * the pattern allows. A one-item list may also be written as the item alone (`dependsOn: db`).
 */
export function readNames(r: Reader, slot: Slot, pattern: RegExp, what: string, rule: string): Array<{ name: string; slot: Slot }> {
  const items = isSeq(slot.node) ? (r.items(slot, `a list of ${what}s`, 'Write [a, b].') ?? []) : [slot];
  const names: Array<{ name: string; slot: Slot }> = [];
  for (const item of items) {
    const name = r.text(item, `a ${what}`, rule);
    if (name === undefined) continue;
    if (!pattern.test(name)) r.report(item.at, item.path, `bad ${what} ${JSON.stringify(name)}`, rule);
    else names.push({ name, slot: item });
  }
  return names;
}
