/**
 * The steps of an image in berth.yaml (grammar: src/images/spec.ts): each list item is a mapping
 * with one key naming the step's kind, whose value is the step's short form or its options.
 */
import { isScalar, isSeq } from 'yaml';
import { closest, describe, type Reader, type Slot, type SourceLocation } from './spec-reader.js';

export type ImageStep =
  | { kind: 'copy'; src: string; dest: string; mode?: number; at: SourceLocation; srcAt: SourceLocation }
  | { kind: 'run'; commands: string[]; cwd?: string; env: Record<string, string>; timeoutSeconds?: number; at: SourceLocation }
  | {
      kind: 'fetch';
      source: { url: string } | { path: string };
      sha256?: string; // 64 lowercase hex digits, any "sha256:" prefix stripped
      dest: string;
      extract: boolean;
      mode?: number;
      maxBytes: number;
      at: SourceLocation;
      sourceAt: SourceLocation;
      sha256At?: SourceLocation;
    }
  | { kind: 'slug'; source: { url: string } | { path: string }; sha256?: string; dest: string; maxBytes: number; at: SourceLocation; sourceAt: SourceLocation; sha256At?: SourceLocation }
  | { kind: 'env'; env: Record<string, string>; at: SourceLocation }
  | { kind: 'test'; commands: string[]; timeoutSeconds?: number; at: SourceLocation };

export const STEP_KINDS = ['copy', 'run', 'fetch', 'slug', 'env', 'test'] as const;
type StepKind = (typeof STEP_KINDS)[number];

/** Options each kind's long form takes: anything else is a typo and reported. */
const OPTIONS: Record<Exclude<StepKind, 'env'>, readonly string[]> = {
  copy: ['src', 'dest', 'mode'],
  run: ['commands', 'cwd', 'env', 'timeout'],
  fetch: ['url', 'path', 'sha256', 'dest', 'extract', 'mode', 'maxSize'],
  slug: ['url', 'path', 'sha256', 'dest', 'maxSize'],
  test: ['commands', 'timeout'],
};

export const DEFAULT_MAX_BYTES = 2 * 1024 ** 3;
export const DEFAULT_SLUG_DEST = '/app';
const STEP_HINT = `Write each step as its own list item with one key naming its kind (${STEP_KINDS.join(', ')}), e.g. "- run: make".`;

export function readStep(r: Reader, item: Slot): ImageStep | undefined {
  const keys = r.entries(item, null, `a mapping with one key naming the step's kind (${STEP_KINDS.join(', ')})`, STEP_HINT);
  if (!keys) return undefined;
  const [first, second] = [...keys.entries()];
  if (!first) {
    r.report(item.at, item.path, `a step needs one key naming its kind (${STEP_KINDS.join(', ')})`, STEP_HINT);
    return undefined;
  }
  const [kind, body] = first;
  if (!isStepKind(kind)) {
    const guess = closest(kind, STEP_KINDS);
    r.report(body.keyAt, item.path, `unknown step type "${kind}" (expected one of ${STEP_KINDS.join(', ')})`, guess ? `Did you mean "${guess}"?` : STEP_HINT);
    return undefined;
  }
  if (second) {
    const [extra, extraSlot] = second;
    const options = kind === 'env' ? [] : OPTIONS[kind];
    const hint = options.includes(extra)
      ? `Options go inside the step: ${kind}: {${options.join(', ')}}.`
      : `Start a new list item ("- ") for each step.`;
    r.report(extraSlot.keyAt, item.path, `a step has exactly one key naming its kind, found "${kind}" and "${extra}"`, hint);
    return undefined;
  }
  const at = body.keyAt;
  switch (kind) {
    case 'copy':
      return readCopy(r, body, at);
    case 'run':
    case 'test':
      return readCommands(r, kind, body, at);
    case 'fetch':
    case 'slug':
      return readDownload(r, kind, body, at);
    case 'env': {
      const env = r.envVars(body);
      return env && { kind: 'env', env, at };
    }
  }
}

function isStepKind(key: string): key is StepKind {
  return (STEP_KINDS as readonly string[]).includes(key);
}

/** `copy: SRC DEST`, or `copy: {src, dest, mode}`. */
function readCopy(r: Reader, body: Slot, at: SourceLocation): ImageStep | undefined {
  if (isScalar(body.node)) {
    const value = r.text(body, '"SRC DEST" or a mapping {src, dest, mode}', 'Write copy: SRC DEST, e.g. copy: app/ /srv/app.');
    if (value === undefined) return undefined;
    const words = [...value.matchAll(/\S+/g)];
    const [src, dest] = words;
    if (words.length !== 2 || !src || !dest) {
      r.report(body.at, body.path, `"${value}" is not "SRC DEST" (two words, found ${words.length})`, 'For paths with spaces use copy: {src: ..., dest: ...}.');
      return undefined;
    }
    const srcAt = wordAt(body, src.index);
    if (!dest[0].startsWith('/')) {
      r.report(wordAt(body, dest.index), body.path, `dest must be an absolute path (got ${JSON.stringify(dest[0])})`, `Write it from the image's root: "/${dest[0]}"?`);
      return undefined;
    }
    return { kind: 'copy', src: src[0], dest: dest[0], at, srcAt };
  }
  const options = r.entries(body, OPTIONS.copy, '"SRC DEST" or a mapping {src, dest, mode}', 'Write copy: {src: app/, dest: /srv/app}.');
  if (!options) return undefined;
  const srcSlot = required(r, options, 'src', body);
  const destSlot = required(r, options, 'dest', body);
  const modeSlot = options.get('mode');
  const src = srcSlot && r.text(srcSlot, 'a path in the project directory', 'Write the path relative to the project directory.');
  const dest = destSlot && r.absolutePath(destSlot, 'an absolute path');
  const mode = modeSlot && r.mode(modeSlot);
  if (!srcSlot || src === undefined || dest === undefined || (modeSlot && mode === undefined)) return undefined;
  return { kind: 'copy', src, dest, ...(mode !== undefined && { mode }), at, srcAt: srcSlot.at };
}

/** `run`/`test`: a command, a list of them, or a mapping with `commands` and options. */
function readCommands(r: Reader, kind: 'run' | 'test', body: Slot, at: SourceLocation): ImageStep | undefined {
  if (!isScalar(body.node) && !isSeq(body.node)) {
    const options = r.entries(body, OPTIONS[kind], `a command, a list of commands or a mapping {${OPTIONS[kind].join(', ')}}`, `Write ${kind}: COMMAND.`);
    if (!options) return undefined;
    const commandsSlot = required(r, options, 'commands', body);
    const commands = commandsSlot && commandList(r, commandsSlot, kind);
    const timeoutSlot = options.get('timeout');
    const timeoutSeconds = timeoutSlot && r.seconds(timeoutSlot);
    if (!commands || (timeoutSlot && timeoutSeconds === undefined)) return undefined;
    const timeout = timeoutSeconds !== undefined ? { timeoutSeconds } : {};
    if (kind === 'test') return { kind, commands, ...timeout, at };
    const cwdSlot = options.get('cwd');
    const envSlot = options.get('env');
    const cwd = cwdSlot && r.absolutePath(cwdSlot, 'an absolute path');
    const env = envSlot ? r.envVars(envSlot) : {};
    if ((cwdSlot && cwd === undefined) || !env) return undefined;
    return { kind, commands, ...(cwd !== undefined && { cwd }), env, ...timeout, at };
  }
  const commands = commandList(r, body, kind);
  if (!commands) return undefined;
  return kind === 'run' ? { kind, commands, env: {}, at } : { kind, commands, at };
}

function commandList(r: Reader, slot: Slot, kind: 'run' | 'test'): string[] | undefined {
  const hint = `Write ${kind}: COMMAND, or a list of commands.`;
  if (!isSeq(slot.node)) {
    const command = r.text(slot, 'a command or a list of commands', hint);
    return command === undefined ? undefined : [command];
  }
  const items = r.items(slot, 'a list of commands', hint) ?? [];
  if (items.length === 0) {
    r.report(slot.at, slot.path, 'must list at least one command', hint);
    return undefined;
  }
  const commands = items.map((item) => r.text(item, 'a command', hint));
  return commands.every((c) => c !== undefined) ? commands : undefined;
}

/** `fetch`/`slug`: a file from a url (sha256 required) or a path (sha256 optional). */
function readDownload(r: Reader, kind: 'fetch' | 'slug', body: Slot, at: SourceLocation): ImageStep | undefined {
  const options = r.entries(body, OPTIONS[kind], `a mapping {${OPTIONS[kind].join(', ')}}`, `Write ${kind}: {url: ..., sha256: ..., dest: ...}.`);
  if (!options) return undefined;
  const urlSlot = options.get('url');
  const pathSlot = options.get('path');
  const shaSlot = options.get('sha256');
  if (urlSlot && pathSlot) r.report(pathSlot.keyAt, body.path, 'give either url or path, not both', `A ${kind} step takes its file from one place.`);
  if (!urlSlot && !pathSlot) r.report(body.keyAt, body.path, 'missing url or path', `Add url: (with sha256:) or path: (relative to the project directory).`);
  if (urlSlot && !shaSlot) r.report(body.keyAt, body.path, 'missing sha256 (required with url)', 'Add sha256: with the digest of the file (`sha256sum FILE`), so a changed download is caught.');
  const sourceSlot = urlSlot ?? pathSlot;
  const source = urlSlot ? readUrl(r, urlSlot) : pathSlot && r.text(pathSlot, 'a path', 'Write the path relative to the project directory, or absolute.');
  const sha256 = shaSlot && r.sha256(shaSlot);
  const destSlot = kind === 'fetch' ? required(r, options, 'dest', body) : options.get('dest');
  const dest = destSlot ? r.absolutePath(destSlot, 'an absolute path') : DEFAULT_SLUG_DEST;
  const sizeSlot = options.get('maxSize');
  const maxBytes = sizeSlot ? r.size(sizeSlot) : DEFAULT_MAX_BYTES;
  const fail = !sourceSlot || source === undefined || (shaSlot && sha256 === undefined) || dest === undefined || maxBytes === undefined;
  const common = {
    source: urlSlot ? { url: source ?? '' } : { path: source ?? '' },
    ...(sha256 !== undefined && { sha256 }),
    dest: dest ?? '',
    maxBytes: maxBytes ?? 0,
    at,
    sourceAt: sourceSlot?.at ?? at,
    ...(shaSlot && { sha256At: shaSlot.at }),
  };
  if (kind === 'slug') return fail ? undefined : { kind, ...common };
  const extractSlot = options.get('extract');
  const extract = extractSlot ? r.bool(extractSlot) : false;
  const modeSlot = options.get('mode');
  const mode = modeSlot && r.mode(modeSlot);
  if (modeSlot && extract) r.report(modeSlot.keyAt, modeSlot.path, 'mode applies to a single file, not to an extracted archive', 'Remove mode, or set extract: false.');
  if (fail || extract === undefined || (modeSlot && (mode === undefined || extract))) return undefined;
  return { kind, ...common, extract, ...(mode !== undefined && { mode }) };
}

function readUrl(r: Reader, slot: Slot): string | undefined {
  const hint = 'Write the full address, e.g. https://example.com/app.tgz.';
  const value = r.text(slot, 'an http or https url', hint);
  if (value === undefined) return undefined;
  let protocol: string | undefined;
  try {
    protocol = new URL(value).protocol;
  } catch {
    protocol = undefined;
  }
  if (protocol === 'http:' || protocol === 'https:') return value;
  r.report(slot.at, slot.path, `must be an http or https url (got ${describe(slot.node)})`, hint);
  return undefined;
}

function required(r: Reader, options: Map<string, Slot>, key: string, body: Slot): Slot | undefined {
  const slot = options.get(key);
  if (!slot) r.report(body.keyAt, body.path, `missing ${key}`, `Add ${key}: to the step.`);
  return slot;
}

/** Where a word of a one-line plain scalar starts; quoted or folded text is located at its start. */
function wordAt(body: Slot, index: number): SourceLocation {
  const plain = isScalar(body.node) && body.node.type === 'PLAIN' && !(body.node.source ?? '').includes('\n');
  return plain ? { ...body.at, column: body.at.column + index } : body.at;
}
