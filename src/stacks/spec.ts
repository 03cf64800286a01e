/**
 * The `stacks:` section of a berth.yaml: the services a stack runs, where its layered env config
 * lives and which variables are secret. Other sections are someone else's and ignored. Every problem
 * is reported with file, line and column, all at once, as images: does (the same Reader).
 *
 * Grammar:
 *
 *   stacks:
 *     shop:                      # stack name: ^[a-z0-9][a-z0-9_-]{0,62}$ (hosts name it in tag berth.stack)
 *       config: config/          # optional: a directory of layered env config (src/stacks/config.ts)
 *       secrets: [DB_PASSWORD]   # optional: variables whose values are never printed unless asked
 *       procfile: Procfile       # optional: each "name: command" line is a service, restarted always
 *       services:                # optional too, but the stack needs at least one service in all
 *         web:                   # service name: ^[a-z0-9][a-z0-9_-]{0,62}$, unique across Procfile and services
 *           cmd: bin/web --port $PORT          # required; run by /bin/sh -c
 *           cwd: /app                          # absolute
 *           user: app                          # a user name or uid on the host
 *           env: {PORT: "8080"}                # the service's inline env (layering: src/stacks/config.ts)
 *           ports: [8080]
 *           dependsOn: [db]                    # services of this stack; no cycles
 *           ready: {http: {port: 8080, path: /health}, timeout: 30}   # and/or tcp: 5432, command: "…";
 *                                              # http: 8080 means path /; every probe given must pass
 *           stopSignal: SIGTERM                # or TERM, INT, QUIT, HUP, USR1, USR2, KILL
 *           stopTimeout: 10
 *           restart: {policy: always, initialDelay: 100ms, factor: 2, maxDelay: 30s, resetAfter: 60s, crashLoopLimit: 5}
 *           reload: {signal: HUP}              # or reload: HUP (HUP, USR1, USR2, with or without SIG):
 *                                              # an env-only change signals the service, no restart
 *           logs: {maxSize: 10MiB, keep: 5, timestamps: true}
 *         worker: bin/worker                   # a command alone: the Procfile line's meaning
 *
 * Values:
 * - config and procfile: relative to the project directory (berth.yaml's), or absolute; both must exist.
 * - restart: always (the default), on-failure or never, alone (`restart: never`) or as `policy:`.
 * - durations: a number is seconds; text is a number with a unit ms, s, m or h ("100ms", "1.5s", "5m").
 * - sizes: as images: (10MiB, 512k, 10MB, a number of bytes); env: as images: (numbers taken as written).
 * - unset options take the protocol's defaults (src/protocol/messages.ts).
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import { closest, Reader, SpecFileError, type Slot, type SourceLocation, type SpecIssue } from '../images/spec-reader.js';
import { ENV_NAME_PATTERN, SERVICE_NAME_PATTERN } from '../protocol/messages.js';
import { findCycle } from '../protocol/services.js';
import { parseProcfile } from './procfile.js';
import { ENV_NAME_RULE, readService, type ReadService, type StackService } from './spec-service.js';
import { readNames } from './values.js';

export type { StackService } from './spec-service.js';

export const STACK_NAME_PATTERN = SERVICE_NAME_PATTERN;

export interface StackSpec {
  name: string;
  at: SourceLocation;
  /** `path` is absolute; `label` is as written (no trailing "/"), for naming files in messages. */
  configDir?: { path: string; label: string; at: SourceLocation };
  secrets: string[];
  /** Procfile services first, then `services:`, each in file order. */
  services: Record<string, StackService>;
}

/** Problems of a stack's files: berth.yaml's stacks:, its Procfiles and its config directories. */
export class StackSpecError extends SpecFileError {
  constructor(issues: readonly [SpecIssue, ...SpecIssue[]]) {
    super(issues);
    this.name = 'StackSpecError';
  }
}

const STACK_KEYS = ['config', 'secrets', 'procfile', 'services'] as const;

/** The stacks a berth.yaml declares, in file order; throws StackSpecError listing every problem. */
export function parseStacksFile(text: string, file: string, projectDir: string): StackSpec[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const r = new Reader(doc, lines, file, (issues) => new StackSpecError(issues));
  for (const error of doc.errors) {
    r.report(r.locAt(error.pos[0]), '', `invalid YAML: ${error.message}`, 'Fix the YAML syntax at this position (indentation, brackets, quotes, duplicate keys).');
  }
  // After a syntax error the tree is a guess: checking it would report errors that are not there.
  r.throwIfAny();
  const start = r.locAt(0);
  const top = r.slot(doc.contents, '', start);
  if (!isMap(top.node)) {
    if (!isNothing(top.node)) r.report(top.at, '', 'a berth.yaml is a mapping of sections (stacks:, images:, …)', 'Start the file with "stacks:".');
    r.throwIfAny();
    return [];
  }
  const section = top.node.items.find((pair) => isScalar(pair.key) && pair.key.value === 'stacks');
  const stacksSlot = section && r.pairSlot(section, 'stacks', start);
  if (!stacksSlot || isNothing(stacksSlot.node)) return [];
  const stacks = r.entries(stacksSlot, null, 'a mapping of stack names to stacks', 'Write stacks: with one entry per stack, e.g. "shop: {procfile: Procfile}".');
  const specs = [...(stacks ?? [])].map(([name, slot]) => readStack(r, name, slot, projectDir)).filter((spec) => spec !== undefined);
  r.throwIfAny();
  return specs;
}

function readStack(r: Reader, name: string, slot: Slot, projectDir: string): StackSpec | undefined {
  if (!STACK_NAME_PATTERN.test(name)) {
    r.report(slot.keyAt, slot.path, `bad stack name "${name}"`, 'A stack name is 1-63 lowercase letters, digits, "_" and "-", starting with a letter or digit.');
  }
  const issuesBefore = r.issues.length;
  const fields = r.entries(slot, STACK_KEYS, `a mapping (${STACK_KEYS.join(', ')})`, 'Give the stack its services: e.g. "procfile: Procfile" or "services: {web: {cmd: bin/web}}".');
  if (!fields) return undefined;
  // After a misspelt key ("servces:") the typo is the problem to report, not its consequence.
  const misspelt = r.issues.length > issuesBefore;
  const spec: StackSpec = { name, at: slot.keyAt, secrets: [], services: {} };
  const configSlot = fields.get('config');
  const configText = configSlot && r.text(configSlot, 'a directory', 'Name the directory of layered config, e.g. config/.');
  if (configSlot && configText !== undefined) {
    const path = resolve(projectDir, configText);
    const problem = pathProblem(path, 'directory');
    if (problem) r.report(configSlot.at, configSlot.path, `config dir ${JSON.stringify(configText)} ${problem}`, inputHint(projectDir));
    else spec.configDir = { path, label: configText.replace(/(.)\/+$/, '$1'), at: configSlot.at };
  }
  const secretsSlot = fields.get('secrets');
  if (secretsSlot) spec.secrets = readNames(r, secretsSlot, ENV_NAME_PATTERN, 'variable name', ENV_NAME_RULE).map((secret) => secret.name);

  const services = new Map<string, ReadService>();
  const procfileSlot = fields.get('procfile');
  if (procfileSlot) {
    for (const entry of readProcfile(r, procfileSlot, projectDir)) {
      const service: StackService = { name: entry.name, cmd: entry.cmd, env: {}, envAt: {}, ports: [], dependsOn: [], restart: { policy: 'always' }, at: entry.at, from: 'procfile' };
      services.set(entry.name, { service, dependsOn: [] });
    }
  }
  const servicesSlot = fields.get('services');
  const written = servicesSlot && !isNothing(servicesSlot.node) ? r.entries(servicesSlot, null, 'a mapping of service names to services', 'Write services: {web: {cmd: bin/web}}.') : undefined;
  for (const [serviceName, serviceSlot] of written ?? []) {
    const fromProcfile = services.get(serviceName)?.service.at;
    if (fromProcfile) {
      const where = `${fromProcfile.file}:${fromProcfile.line}:${fromProcfile.column}`;
      r.report(serviceSlot.keyAt, serviceSlot.path, `service "${serviceName}" is also in the Procfile (${where})`, 'Name it once: in the Procfile or under services:, not both.');
      continue;
    }
    const read = readService(r, serviceName, serviceSlot);
    if (read) services.set(serviceName, read);
  }
  const noneWritten = !servicesSlot || isNothing(servicesSlot.node) || written?.size === 0;
  if (!procfileSlot && noneWritten && !misspelt) {
    r.report(slot.keyAt, slot.path, `stack "${name}" has no services`, 'Add procfile: Procfile, or services: with at least one service.');
  }
  checkDependencies(r, services);
  spec.services = Object.fromEntries([...services].map(([serviceName, read]) => [serviceName, read.service]));
  return spec;
}

function readProcfile(r: Reader, slot: Slot, projectDir: string): ReturnType<typeof parseProcfile> {
  const written = r.text(slot, 'a file', 'Name the Procfile, e.g. procfile: Procfile.');
  if (written === undefined) return [];
  const path = resolve(projectDir, written);
  const problem = pathProblem(path, 'file');
  if (problem) {
    r.report(slot.at, slot.path, `procfile ${JSON.stringify(written)} ${problem}`, inputHint(projectDir));
    return [];
  }
  // Named as berth.yaml is, so an editor can open file:line:column from either.
  const label = isAbsolute(written) ? written : join(dirname(r.file), written);
  const entries = parseProcfile(readFileSync(path, 'utf8'), label, (at, message, hint) => r.report(at, slot.path, message, hint));
  if (entries.length === 0 && r.issues.every((issue) => issue.file !== label)) {
    r.report(slot.at, slot.path, `procfile ${JSON.stringify(written)} lists no services`, 'Add a "name: command" line per service.');
  }
  return entries;
}

/** Each dependency is a service of the stack, and none loops; reported at the dependency as written. */
function checkDependencies(r: Reader, services: ReadonlyMap<string, ReadService>): void {
  const names = [...services.keys()];
  for (const [name, read] of services) {
    for (const dep of read.dependsOn) {
      if (services.has(dep.name)) continue;
      const guess = closest(dep.name, names);
      const hint = guess ? `Did you mean "${guess}"?` : `The stack's services are: ${names.join(', ')}.`;
      r.report(dep.slot.at, dep.slot.path, `service "${name}" depends on unknown service "${dep.name}"`, hint);
    }
  }
  const cycle = findCycle(new Map([...services].map(([name, read]) => [name, read.service])));
  const [first, second] = cycle ?? [];
  const edge = first !== undefined ? services.get(first)?.dependsOn.find((dep) => dep.name === second) : undefined;
  if (cycle && edge) {
    r.report(edge.slot.at, edge.slot.path, `dependency cycle: ${cycle.join(' -> ')}`, 'A service cannot wait for itself: drop one of these dependencies.');
  }
}

function isNothing(node: unknown): boolean {
  return node === null || node === undefined || (isScalar(node) && node.value === null);
}

function pathProblem(path: string, want: 'file' | 'directory'): string | undefined {
  try {
    const stats = statSync(path);
    if (want === 'file' && !stats.isFile()) return `is not a file (${path})`;
    if (want === 'directory' && !stats.isDirectory()) return `is not a directory (${path})`;
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? `does not exist (${path})` : `cannot be read (${path}: ${code ?? String(err)})`;
  }
}

function inputHint(projectDir: string): string {
  return `Relative paths are taken from the project directory (${projectDir}); create it or fix the path.`;
}
