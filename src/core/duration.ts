import { BerthError } from './errors.js';

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `90s`, `30m`, `2h`, `7d` (or plain seconds) in milliseconds; `what` names it in the error. */
export function parseDurationMs(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd]?)$/.exec(text.trim());
  const value = m ? Number(m[1]) * (UNITS[m[2] || 's'] ?? 1) : NaN;
  if (!m || !(value > 0) || value > 365 * 86_400) {
    throw new BerthError('validation_failed', `${what} ${JSON.stringify(text)} is not a duration`, 'Write it as 90s, 30m, 2h or 7d (at most a year).');
  }
  return value * 1000;
}

/** A span for people: `45s`, `15m 3s`, `2h 5m`, `3d 4h` (the two largest units; whole seconds). */
export function formatDurationMs(ms: number): string {
  let left = Math.max(0, Math.round(ms / 1000));
  const parts: string[] = [];
  for (const [unit, seconds] of [['d', 86_400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(left / seconds);
    left -= n * seconds;
    if (n > 0 || (unit === 's' && parts.length === 0)) parts.push(`${n}${unit}`);
  }
  return parts.slice(0, 2).join(' ');
}
