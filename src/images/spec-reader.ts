/**
 * Reading values out of a parsed berth.yaml while remembering where each came from, for
 * src/images/spec.ts. Every problem is collected as an issue located at the node it is about (an
 * empty value at its key, a missing key at the key whose mapping lacks it), so one run over the
 * file reports all of them; the caller throws them as one ImageSpecError.
 */
import { isAlias, isMap, isNode, isScalar, isSeq, type Document, type LineCounter, type Pair } from 'yaml';
import { BerthError } from '../core/errors.js';

export interface SourceLocation {
  file: string;
  line: number; // 1-based
  column: number; // 1-based
}

export interface SpecIssue extends SourceLocation {
  path: string; // where in the yaml, as `images.web.steps[2].copy.dest`; '' for a YAML syntax error or another file
  message: string;
  hint: string;
}
export type ImageSpecIssue = SpecIssue;

const LISTED_ISSUES = 20; // more than this is noise: the first ones are what to fix

/**
 * Problems in a file someone wrote (berth.yaml and the files it names), each located at file:line:column.
 * Each section throws its own subclass (ImageSpecError, StackSpecError); catch this for any of them.
 */
export class SpecFileError extends BerthError {
  readonly issues: readonly SpecIssue[];

  constructor(issues: readonly [SpecIssue, ...SpecIssue[]]) {
    const [first] = issues;
    const lines = issues.slice(0, LISTED_ISSUES).map(formatIssue);
    if (issues.length > LISTED_ISSUES) lines.push(`(and ${issues.length - LISTED_ISSUES} more)`);
    const details: Record<string, unknown> = { file: first.file, line: first.line, column: first.column, path: first.path };
    if (issues.length > 1) details['errors'] = issues.map(({ hint: _hint, ...issue }) => issue);
    super('validation_failed', lines.join('\n'), first.hint, details);
    this.name = 'SpecFileError';
    this.issues = issues;
  }
}

/** The images: section's problems (a SpecFileError, so callers may catch either). */
export class ImageSpecError extends SpecFileError {
  constructor(issues: readonly [ImageSpecIssue, ...ImageSpecIssue[]]) {
    super(issues);
    this.name = 'ImageSpecError';
  }
}

function formatIssue(issue: SpecIssue): string {
  return `${issue.file}:${issue.line}:${issue.column}: ${issue.path ? `${issue.path}: ` : ''}${issue.message}`;
}

/** A value in the file: its node (aliases resolved), where it is, where its key is, and its yaml path. */
export interface Slot {
  node: unknown;
  at: SourceLocation;
  keyAt: SourceLocation;
  path: string;
}

/** `images.web` for plain keys, `images["two words"]` for the rest, so a path reads unambiguously. */
export function childPath(path: string, key: string): string {
  const plain = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(key);
  if (!plain) return `${path}[${JSON.stringify(key)}]`;
  return path ? `${path}.${key}` : key;
}

export class Reader {
  readonly issues: ImageSpecIssue[] = [];

  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
    readonly file: string,
    /** What throwIfAny throws: an ImageSpecError unless the section says otherwise. */
    private readonly toError: (issues: readonly [SpecIssue, ...SpecIssue[]]) => SpecFileError = (issues) => new ImageSpecError(issues),
  ) {}

  locAt(offset: number): SourceLocation {
    const pos = this.lines.linePos(offset);
    return { file: this.file, line: pos.line, column: pos.col };
  }

  report(at: SourceLocation, path: string, message: string, hint: string): void {
    this.issues.push({ ...at, path, message, hint });
  }

  throwIfAny(): void {
    if (this.issues.length === 0) return;
    // Document order, so the first reported (and the error's own location) is the first in the file.
    const sorted = [...this.issues].sort((a, b) => a.line - b.line || a.column - b.column);
    throw this.toError(sorted as [SpecIssue, ...SpecIssue[]]);
  }

  /** A slot for `node`; a node with no text of its own (an empty value) is located at `fallback`. */
  slot(raw: unknown, path: string, fallback: SourceLocation, keyAt: SourceLocation = fallback): Slot {
    const node = isAlias(raw) ? raw.resolve(this.doc) : raw;
    const range = isNode(raw) ? raw.range : undefined;
    const at = range && range[1] > range[0] ? this.locAt(range[0]) : fallback;
    return { node, at, keyAt, path };
  }

  pairSlot(pair: Pair, path: string, fallback: SourceLocation): Slot {
    const keyAt = isNode(pair.key) && pair.key.range ? this.locAt(pair.key.range[0]) : fallback;
    return this.slot(pair.value, path, keyAt, keyAt);
  }

  /**
   * The entries of a mapping by key. With `allowed`, any other key is reported (a typo must not be
   * dropped silently) and left out.
   */
  entries(slot: Slot, allowed: readonly string[] | null, what: string, hint: string): Map<string, Slot> | undefined {
    if (!isMap(slot.node)) {
      this.report(slot.at, slot.path, `must be ${what} (got ${describe(slot.node)})`, hint);
      return undefined;
    }
    const entries = new Map<string, Slot>();
    for (const pair of slot.node.items) {
      const keyAt = isNode(pair.key) && pair.key.range ? this.locAt(pair.key.range[0]) : slot.at;
      const key = scalarText(pair.key);
      if (key === undefined) {
        this.report(keyAt, slot.path, `a key must be plain text (got ${describe(pair.key)})`, hint);
        continue;
      }
      if (allowed && !allowed.includes(key)) {
        const guess = closest(key, allowed);
        this.report(keyAt, slot.path, `unknown key "${key}" (expected one of ${allowed.join(', ')})`, guess ? `Did you mean "${guess}"?` : hint);
        continue;
      }
      entries.set(key, this.pairSlot(pair, childPath(slot.path, key), keyAt));
    }
    return entries;
  }

  items(slot: Slot, what: string, hint: string): Slot[] | undefined {
    if (!isSeq(slot.node)) {
      this.report(slot.at, slot.path, `must be ${what} (got ${describe(slot.node)})`, hint);
      return undefined;
    }
    return slot.node.items.map((item, i) => {
      const itemSlot = this.slot(item, `${slot.path}[${i}]`, slot.at);
      return { ...itemSlot, keyAt: itemSlot.at };
    });
  }

  /** Non-blank text. A number counts, as written (`src: 2024` names the file "2024"). */
  text(slot: Slot, what: string, hint: string): string | undefined {
    const value = scalarText(slot.node);
    if (value === undefined || value.trim() === '') {
      this.report(slot.at, slot.path, `must be ${what} (got ${describe(slot.node)})`, hint);
      return undefined;
    }
    return value;
  }

  absolutePath(slot: Slot, what: string): string | undefined {
    const value = this.text(slot, what, 'Write the path from the root, starting with "/".');
    if (value === undefined) return undefined;
    if (!value.startsWith('/')) {
      this.report(slot.at, slot.path, `must be ${what} (got ${JSON.stringify(value)})`, `Write it from the root: "/${value}"?`);
      return undefined;
    }
    return value;
  }

  bool(slot: Slot): boolean | undefined {
    if (isScalar(slot.node) && typeof slot.node.value === 'boolean') return slot.node.value;
    this.report(slot.at, slot.path, `must be true or false (got ${describe(slot.node)})`, 'Write true or false, unquoted.');
    return undefined;
  }

  /** A step's time limit in seconds. */
  seconds(slot: Slot): number | undefined {
    const value = isScalar(slot.node) ? slot.node.value : undefined;
    if (typeof value === 'number' && Number.isFinite(value) && value > 0) return value;
    this.report(slot.at, slot.path, `must be a number of seconds above 0 (got ${describe(slot.node)})`, 'Write the limit in seconds, e.g. 600.');
    return undefined;
  }

  /** Octal permission bits, as chmod takes them: `0755`, `755`, `"0755"` and `0o755` all mean rwxr-xr-x. */
  mode(slot: Slot): number | undefined {
    // A yaml number is read from its text: `0755` is the number 755 to yaml, but 0o755 to whoever wrote it.
    const match = /^(?:0o)?0*([0-7]{1,4})$/.exec(scalarText(slot.node)?.trim() ?? '');
    if (match?.[1] !== undefined) return parseInt(match[1], 8);
    this.report(slot.at, slot.path, `must be octal permission bits such as "0755" (got ${describe(slot.node)})`, 'Write the mode in octal, as chmod takes it: "0644", "0755".');
    return undefined;
  }

  /** 64 hex digits, optionally prefixed `sha256:`; returned lowercase without the prefix. */
  sha256(slot: Slot): string | undefined {
    const value = scalarText(slot.node)?.trim() ?? '';
    const hex = value.toLowerCase().replace(/^sha256:/, '');
    if (/^[0-9a-f]{64}$/.test(hex)) return hex;
    this.report(slot.at, slot.path, `must be a SHA-256 digest: 64 hex digits, optionally prefixed "sha256:" (got ${describe(slot.node)})`, 'Compute it with `sha256sum FILE` and paste the 64-character digest.');
    return undefined;
  }

  /** A byte count: a number of bytes, or text as parseByteSize reads it. */
  size(slot: Slot): number | undefined {
    const bytes = parseByteSize(scalarText(slot.node) ?? '');
    if (bytes !== undefined) return bytes;
    this.report(slot.at, slot.path, `must be a size such as 512MiB, 2GiB, 10MB or a number of bytes (got ${describe(slot.node)})`, 'Units: B, K/KiB, M/MiB, G/GiB, T/TiB (1024-based) or KB, MB, GB, TB (1000-based).');
    return undefined;
  }

  /** Environment variables: names as the shell takes them; numbers and booleans become their text. */
  envVars(slot: Slot): Record<string, string> | undefined {
    const entries = this.entries(slot, null, 'a mapping of variable names to values', 'Write variables as NAME: value, e.g. {PORT: "8080"}.');
    if (!entries) return undefined;
    const env: Record<string, string> = {};
    for (const [name, value] of entries) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        this.report(value.keyAt, value.path, `bad variable name "${name}"`, 'A variable name is letters, digits and underscores, not starting with a digit.');
      }
      const node = value.node;
      // Booleans and numbers as written: `VERSION: 1.10` is "1.10", not "1.1".
      const text = isScalar(node) && typeof node.value === 'boolean' ? (node.source ?? String(node.value)) : scalarText(node);
      if (text === undefined) this.report(value.at, value.path, `must be text, a number or a boolean (got ${describe(node)})`, `For an empty value write ${name}: "".`);
      else env[name] = text;
    }
    return env;
  }
}

/**
 * Sizes: a bare number is bytes; B is bytes; K, M, G, T and KiB, MiB, GiB, TiB are 1024-based;
 * KB, MB, GB, TB are 1000-based (the way dd and coreutils read them). Units ignore case, a fraction
 * is allowed (1.5GiB) and rounds down to whole bytes; the result is at least 1.
 */
export function parseByteSize(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)$/i.exec(text.trim());
  if (!match) return undefined;
  const [, amount = '', prefix = '', binary = '', byteSign = ''] = match;
  if (binary && !byteSign) return undefined; // "Ki" alone is not a unit
  if (binary && !prefix) return undefined; // nor is "iB"
  const power = ' kmgt'.indexOf(prefix.toLowerCase() || ' ');
  const base = prefix && byteSign && !binary ? 1000 : 1024;
  const bytes = Math.floor(Number(amount) * base ** power);
  return bytes >= 1 && Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** A scalar's text: strings as they are, numbers as written; undefined for anything else. */
function scalarText(node: unknown): string | undefined {
  if (!isScalar(node)) return undefined;
  if (typeof node.value === 'string') return node.value;
  if (typeof node.value === 'number' || typeof node.value === 'bigint') return node.source ?? String(node.value);
  return undefined;
}

export function describe(node: unknown): string {
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (!isScalar(node) || node.value === null || node.value === undefined) return 'nothing';
  if (typeof node.value === 'string') return node.value.length > 60 ? `${JSON.stringify(node.value.slice(0, 57))}…` : JSON.stringify(node.value);
  if (typeof node.value === 'boolean') return String(node.value);
  return scalarText(node) ?? 'an unusual value';
}

/** The candidate within two edits of `word`, for "did you mean". */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: { candidate: string; distance: number } | undefined;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance <= 2 && (!best || distance < best.distance)) best = { candidate, distance };
  }
  return best?.candidate;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
