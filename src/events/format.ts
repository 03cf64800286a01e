/**
 * Events as people and machines read them: one JSON object a line, or a short line such as
 * `12:01:02 claim cl-… ready host=h-… pool=web group=alice` for a terminal.
 */
import type { BerthEvent } from './types.js';

/** Correlating fields as a line shows them, in this order. */
const FIELDS: readonly [keyof BerthEvent, string][] = [
  ['hostId', 'host'],
  ['claimId', 'claim'],
  ['commandId', 'command'],
  ['pool', 'pool'],
  ['group', 'group'],
  ['environment', 'env'],
  ['service', 'service'],
];

/** `HH:MM:SS kind id state key=value… reason="…"` (local time); ids the event's own id names are left out. */
export function formatEvent(event: BerthEvent): string {
  const parts = [new Date(event.at).toTimeString().slice(0, 8), event.kind, event.id, event.state];
  const own = new Set(event.id.split('/'));
  for (const [key, label] of FIELDS) {
    const value = event[key];
    if (typeof value === 'string' && !own.has(value)) parts.push(`${label}=${value}`);
  }
  if (event.reason) parts.push(`reason=${JSON.stringify(event.reason)}`);
  if (event.actor) parts.push(`by=${/^[\w.@-]+$/.test(event.actor) ? event.actor : JSON.stringify(event.actor)}`);
  return parts.join(' ');
}

export const LOG_FORMATS = ['auto', 'json', 'text'] as const;
export type LogFormat = 'json' | 'text';

/** `auto`: readable lines on a terminal, JSON lines otherwise (a file, a pipe, a log collector). */
export function resolveLogFormat(option: string, isTTY: boolean): LogFormat | undefined {
  if (option === 'json' || option === 'text') return option;
  if (option === 'auto') return isTTY ? 'text' : 'json';
  return undefined;
}

/** The server's log: its events, and its other messages, in one format. */
export interface EventLog {
  event(event: BerthEvent): void;
  /** A message that is not a state change (start-up, a failure in the background). */
  line(message: string, fields?: Record<string, unknown>): void;
}

export function eventLog(format: LogFormat, write: (text: string) => void, now: () => Date = () => new Date()): EventLog {
  if (format === 'json') {
    return {
      event: (event) => write(`${JSON.stringify(event)}\n`),
      line: (message, fields = {}) => write(`${JSON.stringify({ at: now().toISOString(), kind: 'log', message, ...fields })}\n`),
    };
  }
  return {
    event: (event) => write(`${formatEvent(event)}\n`),
    line: (message) => write(`berth: ${message}\n`),
  };
}
