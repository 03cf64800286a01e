/**
 * The `images:` section of a berth.yaml: which images to bake, from what parent, with which steps.
 * Other top-level sections (`pools:`, …) are someone else's and ignored; a file without `images:`
 * declares no images. Every problem is reported with file, line and column, all of them at once.
 *
 * Grammar:
 *
 *   images:
 *     web:                  # image name: ^[a-z0-9][a-z0-9._-]{0,62}$
 *       parent: /           # another berth image's name, or the absolute path of a root filesystem
 *                           # directory ('/' = this machine's root). Default '/'. Not the image itself.
 *       egress: true        # optional: its run steps may reach beyond the machine (local driver: the
 *                           # hosts' egress; default false: a run step sees the machine's agent channel only);
 *                           # or a list, to reach only those ranges and names: [packages.example.com, 203.0.113.0/24]
 *       identity:           # optional: adjust the built-in identity-stripping list
 *         strip: [/etc/myapp/instance-id, /var/lib/foo/*.state]  # absolute paths; '*' matches within one component
 *         keep: [/etc/machine-id]                                 # absolute paths of built-in items (the caller checks which)
 *       steps:              # required; a list; each item is a mapping with exactly ONE key, the step's kind
 *         - copy: app/ /srv/app                                   # short form: "SRC DEST", exactly two words
 *         - copy: {src: app/, dest: /srv/app, mode: "0755"}       # mode optional
 *         - run: apt-get install -y nginx                         # a command, or a list of commands
 *         - run: {commands: [make, make install], cwd: /src, env: {K: V}, timeout: 600}
 *         - fetch: {url: https://example.com/x.tgz, sha256: <hex>, dest: /opt/x, extract: true, maxSize: 512MiB}
 *         - fetch: {path: vendor/tool, dest: /usr/local/bin/tool, mode: "0755"}
 *         - slug: {path: build/app.tgz, dest: /app, maxSize: 1GiB}
 *         - env: {PORT: "8080", MODE: production}
 *         - test: curl -sf http://127.0.0.1:8080/health          # a command, or a list of commands
 *         - test: {commands: [...], timeout: 60}
 *
 * Values:
 * - SRC and fetch/slug `path`: relative to the project directory, or absolute (checkStepInputs
 *   checks they exist). Every dest and cwd is an absolute path inside the image.
 * - fetch/slug: exactly one of `url` (http/https; sha256 then required) or `path` (sha256 optional).
 *   sha256 is 64 hex digits, optionally prefixed "sha256:". fetch: `dest` required; `extract`
 *   (default false) unpacks the archive into dest, otherwise dest is the file's own path; `mode` only
 *   without extract. slug: `dest` defaults to /app. `maxSize` defaults to 2GiB for both.
 * - mode: octal permission bits as chmod takes them, written as text or a number: "0755", 0755,
 *   755 and 0o755 are all rwxr-xr-x.
 * - sizes: a number of bytes, or text: a number (fraction allowed, rounded down to bytes) and a
 *   unit, case ignored: B; K, M, G, T, KiB, MiB, GiB, TiB = 1024-based; KB, MB, GB, TB = 1000-based.
 *   So 100k = 102400 bytes, 10MB = 10000000, 512MiB = 536870912.
 * - timeout: seconds, above 0.
 * - env: names ^[A-Za-z_][A-Za-z0-9_]*$; values text, or numbers/booleans taken as written
 *   (`VERSION: 1.10` is "1.10").
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { EGRESS_ALLOW_MAX, parseEgressAllow } from '../core/egress-allow.js';
import { errorMessage } from '../core/errors.js';
import { ImageSpecError, Reader, childPath, type ImageSpecIssue, type Slot, type SourceLocation } from './spec-reader.js';
import { readStep, type ImageStep } from './spec-steps.js';

export { ImageSpecError, parseByteSize, type ImageSpecIssue, type SourceLocation } from './spec-reader.js';
export type { ImageStep } from './spec-steps.js';

export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface ImageSpec {
  name: string;
  parent: string;
  identity: { strip: string[]; keep: string[] };
  /** Whether its run steps may reach beyond the machine (the bake hosts get egress). */
  egress: boolean;
  /** With egress: only these IPv4 ranges and names (HostResources.egressAllow); absent: everywhere. */
  egressAllow?: string[];
  steps: ImageStep[];
  at: SourceLocation;
}

const IMAGE_KEYS = ['parent', 'identity', 'egress', 'steps'] as const;

/** The images a berth.yaml declares, in file order; throws ImageSpecError listing every problem. */
export function parseImagesFile(text: string, file: string): ImageSpec[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const r = new Reader(doc, lines, file);
  for (const error of doc.errors) {
    r.report(r.locAt(error.pos[0]), '', `invalid YAML: ${error.message}`, 'Fix the YAML syntax at this position (indentation, brackets, quotes, duplicate keys).');
  }
  // After a syntax error the tree is a guess: checking it would report errors that are not there.
  if (r.issues.length > 0) r.throwIfAny();
  const specs = readImages(r, doc.contents);
  r.throwIfAny();
  return specs;
}

function readImages(r: Reader, root: unknown): ImageSpec[] {
  const start = r.locAt(0);
  const top = r.slot(root, '', start);
  if (top.node === null || (isScalar(top.node) && top.node.value === null)) return [];
  if (!isMap(top.node)) {
    r.report(top.at, '', 'a berth.yaml is a mapping of sections (images:, pools:, …)', 'Start the file with "images:".');
    return [];
  }
  const section = top.node.items.find((pair) => isScalar(pair.key) && pair.key.value === 'images');
  if (!section) return [];
  const imagesSlot = r.pairSlot(section, 'images', start);
  if (isScalar(imagesSlot.node) && imagesSlot.node.value === null) return [];
  const images = r.entries(imagesSlot, null, 'a mapping of image names to images', 'Write images: with one entry per image, e.g. "web: {steps: [...]}".');
  if (!images) return [];
  const specs: ImageSpec[] = [];
  const parentAt = new Map<string, Slot>();
  for (const [name, slot] of images) {
    const spec = readImage(r, name, slot);
    if (!spec) continue;
    specs.push(spec.spec);
    if (spec.parentSlot) parentAt.set(name, spec.parentSlot);
  }
  reportParentCycles(r, specs, parentAt);
  return specs;
}

function readImage(r: Reader, name: string, slot: Slot): { spec: ImageSpec; parentSlot: Slot | undefined } | undefined {
  if (!IMAGE_NAME.test(name)) {
    r.report(slot.keyAt, slot.path, `bad image name "${name}"`, 'An image name is 1-63 lowercase letters, digits, ".", "_" and "-", starting with a letter or digit.');
  }
  const fields = r.entries(slot, IMAGE_KEYS, `a mapping (${IMAGE_KEYS.join(', ')})`, 'Give the image its steps: e.g. "steps: [{run: make}]".');
  if (!fields) return undefined;
  const parentSlot = fields.get('parent');
  const parent = parentSlot ? readParent(r, parentSlot, name) : '/';
  const identitySlot = fields.get('identity');
  const identity = identitySlot ? readIdentity(r, identitySlot) : { strip: [], keep: [] };
  const egressSlot = fields.get('egress');
  const egressAllow = egressSlot && isSeq(egressSlot.node) ? readEgressAllow(r, egressSlot) : undefined;
  const egress = egressAllow ? true : egressSlot ? (r.bool(egressSlot) ?? false) : false;
  const stepsSlot = fields.get('steps');
  if (!stepsSlot) r.report(slot.keyAt, slot.path, 'missing steps', 'Add steps: with the list of steps that build the image.');
  const stepItems = stepsSlot ? (r.items(stepsSlot, 'a list of steps', 'Write steps: as a list, one "- kind: ..." item per step.') ?? []) : [];
  const steps = stepItems.map((item) => readStep(r, item)).filter((step) => step !== undefined);
  if (parent === undefined) return undefined;
  return { spec: { name, parent, identity, egress, ...(egressAllow ? { egressAllow } : {}), steps, at: slot.keyAt }, parentSlot };
}

/** `egress: [ranges and names]`: each entry checked where it is written. */
function readEgressAllow(r: Reader, slot: Slot): string[] {
  const entries: string[] = [];
  const hint = 'Give ranges as 203.0.113.0/24 and names as packages.example.com or *.mirror.example.org; or write egress: true to reach everywhere.';
  for (const item of r.items(slot, 'a list of IPv4 ranges and names', hint) ?? []) {
    const entry = r.text(item, 'an IPv4 range or a name', hint);
    if (entry === undefined) continue;
    try {
      parseEgressAllow([entry]);
      entries.push(entry);
    } catch (err) {
      r.report(item.at, item.path, errorMessage(err), hint);
    }
  }
  if (entries.length > EGRESS_ALLOW_MAX) r.report(slot.at, slot.path, `at most ${EGRESS_ALLOW_MAX} entries (got ${entries.length})`, hint);
  return entries;
}

function readParent(r: Reader, slot: Slot, name: string): string | undefined {
  const hint = "Name another image, or give a root filesystem directory's absolute path ('/' is this machine's root).";
  const parent = r.text(slot, 'an image name or an absolute path', hint);
  if (parent === undefined) return undefined;
  if (parent === name) {
    r.report(slot.at, slot.path, `image "${name}" cannot be its own parent`, hint);
    return undefined;
  }
  if (!parent.startsWith('/') && !IMAGE_NAME.test(parent)) {
    r.report(slot.at, slot.path, `must be an image name or an absolute path (got ${JSON.stringify(parent)})`, hint);
    return undefined;
  }
  return parent;
}

function readIdentity(r: Reader, slot: Slot): ImageSpec['identity'] {
  const identity: ImageSpec['identity'] = { strip: [], keep: [] };
  const fields = r.entries(slot, ['strip', 'keep'], 'a mapping (strip, keep)', 'Write identity: {strip: [/path], keep: [/path]}.');
  for (const [key, listSlot] of fields ?? []) {
    const list = key === 'strip' ? identity.strip : identity.keep;
    for (const item of r.items(listSlot, 'a list of absolute paths', `Write ${key}: [/path, ...].`) ?? []) {
      const path = r.absolutePath(item, "an absolute path below '/'");
      if (path === '/') r.report(item.at, item.path, `must be an absolute path below '/' (got "/")`, 'Name the file or directory itself.');
      else if (path !== undefined) list.push(path);
    }
  }
  return identity;
}

/** Parents within the file must not loop (a → b → a); reported once, at the loop's first image. */
function reportParentCycles(r: Reader, specs: ImageSpec[], parentAt: Map<string, Slot>): void {
  const byName = new Map(specs.map((spec, index) => [spec.name, { spec, index }]));
  for (const [index, spec] of specs.entries()) {
    const chain = [spec.name];
    let next = byName.get(spec.parent);
    while (next && !chain.includes(next.spec.name)) {
      chain.push(next.spec.name);
      next = byName.get(next.spec.parent);
    }
    const loops = next?.spec.name === spec.name;
    const firstOfLoop = chain.every((name) => (byName.get(name)?.index ?? Infinity) >= index);
    const slot = parentAt.get(spec.name);
    if (loops && firstOfLoop && slot) {
      r.report(slot.at, slot.path, `parents loop: ${[...chain, spec.name].join(' → ')}`, 'Make one of these images start from a root filesystem or an image outside the loop.');
    }
  }
}

/**
 * Checks that the files steps take from the project exist: copy sources (file or directory) and
 * fetch/slug paths (a file). Relative paths resolve against `projectDir`; absolute ones are taken
 * as they are. Throws ImageSpecError located at the path in the file.
 */
export function checkStepInputs(spec: ImageSpec, projectDir: string): void {
  const issues: ImageSpecIssue[] = [];
  for (const [index, step] of spec.steps.entries()) {
    const stepPath = `${childPath(childPath('images', spec.name), 'steps')}[${index}].${step.kind}`;
    if (step.kind === 'copy') {
      const problem = inputProblem(resolve(projectDir, step.src), 'any');
      if (problem) issues.push({ ...step.srcAt, path: stepPath, message: `src ${JSON.stringify(step.src)} ${problem}`, hint: inputHint(projectDir) });
    } else if ((step.kind === 'fetch' || step.kind === 'slug') && 'path' in step.source) {
      const problem = inputProblem(resolve(projectDir, step.source.path), 'file');
      if (problem) issues.push({ ...step.sourceAt, path: `${stepPath}.path`, message: `path ${JSON.stringify(step.source.path)} ${problem}`, hint: inputHint(projectDir) });
    }
  }
  const [first, ...rest] = issues;
  if (first) throw new ImageSpecError([first, ...rest]);
}

function inputProblem(path: string, want: 'file' | 'any'): string | undefined {
  try {
    const stats = statSync(path);
    if (want === 'file' && !stats.isFile()) return `is not a file (${path})`;
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? `does not exist (${path})` : `cannot be read (${path}: ${code ?? String(err)})`;
  }
}

function inputHint(projectDir: string): string {
  return `Relative paths are taken from the project directory (${projectDir}); create the file or fix the path.`;
}

const LOCATION_KEYS = new Set(['at', 'srcAt', 'sourceAt', 'sha256At']);

/**
 * What a step does, without where it is written: equal for the same step in short or long form, in
 * any position or formatting, so it can key a content-addressed cache. Defaults are filled in and
 * absent options left out, never present as undefined.
 */
export function stepDefinition(step: ImageStep): Record<string, unknown> {
  const entries = Object.entries(step).filter(([key, value]) => !LOCATION_KEYS.has(key) && value !== undefined);
  return structuredClone(Object.fromEntries(entries));
}
