/**
 * A Procfile, the simple form of a stack: each `name: command` line is a service that runs the
 * command (by /bin/sh -c) and is always restarted. Blank lines and lines starting with `#` are
 * skipped; the name must be a service name (lowercase: `web`, not `Web`); the command is the rest of
 * the line, as written.
 */
import type { SourceLocation } from '../images/spec-reader.js';
import { SERVICE_NAME_PATTERN } from '../protocol/messages.js';
import { SERVICE_NAME_RULE } from './spec-service.js';

export interface ProcfileEntry {
  name: string;
  cmd: string;
  at: SourceLocation;
}

export type ReportIssue = (at: SourceLocation, message: string, hint: string) => void;

const LINE_HINT = 'Write one service per line as "name: command", e.g. "web: bin/web --port $PORT".';

/** Every well-formed line; each bad one is reported (located in `file`) and left out. */
export function parseProcfile(text: string, file: string, report: ReportIssue): ProcfileEntry[] {
  const entries: ProcfileEntry[] = [];
  const seen = new Map<string, SourceLocation>();
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.replace(/\r$/, '');
    const indent = line.length - line.trimStart().length;
    const at = (offset: number): SourceLocation => ({ file, line: index + 1, column: offset + 1 });
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) {
      report(at(indent), 'expected "name: command"', LINE_HINT);
      continue;
    }
    const name = line.slice(indent, colon).trim();
    const afterColon = line.slice(colon + 1);
    const cmd = afterColon.trim();
    if (!SERVICE_NAME_PATTERN.test(name)) {
      report(at(indent), `bad service name ${JSON.stringify(name)}`, SERVICE_NAME_RULE);
      continue;
    }
    if (cmd === '') {
      report(at(colon + 1), `service "${name}" has no command`, LINE_HINT);
      continue;
    }
    const earlier = seen.get(name);
    if (earlier) {
      report(at(indent), `service "${name}" is listed twice (first at line ${earlier.line})`, 'Give each service its own name.');
      continue;
    }
    seen.set(name, at(indent));
    entries.push({ name, cmd, at: at(indent) });
  }
  return entries;
}
