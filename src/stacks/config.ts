/**
 * A stack's layered env config, read from its config directory on the machine that runs the CLI
 * (kept in git next to berth.yaml), then resolved per service and host by effectiveConfig:
 *
 *   <config>/common/              every service, every environment
 *   <config>/env/<environment>/   hosts tagged berth.env=<environment>
 *   <config>/services/<service>/  that service
 *
 * Each of these directories is an envdir, a `.env` file inside it, or both (the `.env` first, then
 * the envdir's files on top). Envdir, as daemontools' envdir reads it: each file names a variable;
 * its value is the file's first line with trailing whitespace removed, and NUL bytes in it become
 * newlines; a file of 0 bytes UNSETS the variable (a file holding just a newline sets it to "").
 * Files whose names start with "." (`.env`, `.gitkeep`) are not variables. `.env` syntax:
 * src/stacks/dotenv.ts. Files at the top of the config directory (a README) are ignored; an unknown
 * directory there is reported (a typo such as `service/` would otherwise drop config silently).
 *
 * Layers, lowest first (a higher one wins; an unset removes what lower ones set):
 *
 *   common < environment < service dir < service inline env (berth.yaml) < host overrides (tags)
 */
import { createHmac } from 'node:crypto';
import { readdirSync, readFileSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { BerthError } from '../core/errors.js';
import { canonicalJson } from '../images/digests.js';
import { closest, type SpecIssue } from '../images/spec-reader.js';
import { ENV_NAME_PATTERN } from '../protocol/messages.js';
import { parseDotenv } from './dotenv.js';
import { ENV_NAME_RULE } from './spec-service.js';
import { StackSpecError } from './spec.js';

/** A variable in one layer: its value, or null when the layer unsets it, and the file (and line) that says so. */
export interface ConfigValue {
  value: string | null;
  source: string;
}
export type ConfigLayer = Record<string, ConfigValue>;

/** Everything in a config directory; plain data (JSON-safe), so it can be read in one place and used in another. */
export interface ConfigLayers {
  /** How the config directory is named in sources and messages, e.g. "config". */
  label: string;
  common: ConfigLayer;
  environments: Record<string, ConfigLayer>;
  services: Record<string, ConfigLayer>;
}

export interface EffectiveConfig {
  env: Record<string, string>;
  /** Where each variable's value came from; for a name in `unset`, the layer that unset it. */
  sources: Record<string, string>;
  /** Names a layer unset and no higher layer set again. */
  unset: string[];
  /** configHash of `env` (names and values) under the options' hashKey. */
  hash: string;
}

export interface EffectiveConfigOptions {
  /** The environment layer to use; one the config does not have contributes nothing. */
  environment?: string;
  service: string;
  /** The service's env as written in berth.yaml. */
  inline?: Record<string, string>;
  /** Where each inline variable is written, e.g. "service web (berth.yaml:12:9)"; default "service <name>". */
  inlineSources?: Record<string, string>;
  hostOverrides?: Record<string, string>;
  /** The tenant's key for config hashes (see configHash). */
  hashKey: string;
}

const LAYER_DIRS = ['common', 'env', 'services'] as const;

/** A config with no layers: what a stack without `config:` resolves against. */
export function emptyConfigLayers(label = ''): ConfigLayers {
  return { label, common: {}, environments: {}, services: {} };
}

/**
 * Reads every layer of `configDir` (all environments and services found). Throws StackSpecError
 * naming each bad file (a bad variable name, a bad `.env` line, a directory where a file belongs).
 */
export function readConfigLayers(configDir: string, label = configDir): ConfigLayers {
  const dirStat = statOrUndefined(configDir);
  if (!dirStat?.isDirectory()) {
    const problem = dirStat ? 'is not a directory' : 'does not exist';
    throw new BerthError('validation_failed', `config dir ${label} ${problem} (${configDir})`, "Create it, or fix the stack's config: in berth.yaml.", { configDir });
  }
  const issues: SpecIssue[] = [];
  const layers = emptyConfigLayers(label);
  for (const entry of visibleEntries(configDir)) {
    const at = join(label, entry);
    if (!statOrUndefined(join(configDir, entry))?.isDirectory()) continue; // a README or notes: not config
    if (!(LAYER_DIRS as readonly string[]).includes(entry)) {
      const guess = closest(entry, LAYER_DIRS);
      issues.push(fileIssue(at, `unknown config directory "${entry}" (expected ${LAYER_DIRS.join('/, ')}/)`, guess ? `Did you mean "${guess}"?` : 'Move its files into common/, env/<environment>/ or services/<service>/.'));
    }
  }
  layers.common = readLayerIfAny(join(configDir, 'common'), join(label, 'common'), issues);
  layers.environments = readLayerDirs(join(configDir, 'env'), join(label, 'env'), issues);
  layers.services = readLayerDirs(join(configDir, 'services'), join(label, 'services'), issues);
  const [first, ...rest] = issues.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.column - b.column));
  if (first) throw new StackSpecError([first, ...rest]);
  return layers;
}

/** `env/` or `services/`: one layer per subdirectory, by its name. */
function readLayerDirs(dir: string, label: string, issues: SpecIssue[]): Record<string, ConfigLayer> {
  const stats = statOrUndefined(dir);
  if (!stats) return {};
  if (!stats.isDirectory()) {
    issues.push(fileIssue(label, 'is not a directory', `Make ${label} a directory with one directory per name.`));
    return {};
  }
  const layers = new Map<string, ConfigLayer>();
  for (const entry of visibleEntries(dir)) {
    if (statOrUndefined(join(dir, entry))?.isDirectory()) layers.set(entry, readLayer(join(dir, entry), join(label, entry), issues));
    else issues.push(fileIssue(join(label, entry), 'is not a directory', `Each entry of ${label}/ is a directory of variables (an envdir, a .env file, or both).`));
  }
  return Object.fromEntries(layers);
}

function readLayerIfAny(dir: string, label: string, issues: SpecIssue[]): ConfigLayer {
  const stats = statOrUndefined(dir);
  if (!stats) return {};
  if (stats.isDirectory()) return readLayer(dir, label, issues);
  issues.push(fileIssue(label, 'is not a directory', 'Make it a directory of variables (an envdir, a .env file, or both).'));
  return {};
}

/** One directory: its `.env` first, then its envdir files on top. */
function readLayer(dir: string, label: string, issues: SpecIssue[]): ConfigLayer {
  const layer = new Map<string, ConfigValue>();
  const dotenvPath = join(dir, '.env');
  const dotenvStat = statOrUndefined(dotenvPath);
  if (dotenvStat?.isFile()) {
    const dotenvLabel = join(label, '.env');
    const parsed = parseDotenv(readFileSync(dotenvPath, 'utf8'), dotenvLabel);
    issues.push(...parsed.issues);
    for (const entry of parsed.entries) layer.set(entry.name, { value: entry.value, source: `${dotenvLabel}:${entry.line}` });
  } else if (dotenvStat) {
    issues.push(fileIssue(join(label, '.env'), 'is not a file', 'Make .env a file of NAME=value lines.'));
  }
  for (const name of visibleEntries(dir)) {
    const source = join(label, name);
    if (!ENV_NAME_PATTERN.test(name)) {
      issues.push(fileIssue(source, `file name ${JSON.stringify(name)} is not a valid variable name`, `${ENV_NAME_RULE} Rename the file.`));
      continue;
    }
    const value = readEnvdirFile(join(dir, name), source, issues);
    if (value !== undefined) layer.set(name, { value, source });
  }
  return Object.fromEntries(layer);
}

/** An envdir file's value (null: unset), as daemontools' envdir reads it; undefined when unreadable. */
function readEnvdirFile(path: string, source: string, issues: SpecIssue[]): string | null | undefined {
  if (!statOrUndefined(path)?.isFile()) {
    issues.push(fileIssue(source, 'is not a file', 'An envdir holds one file per variable.'));
    return undefined;
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    issues.push(fileIssue(source, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 'Make the file readable.'));
    return undefined;
  }
  if (bytes.length === 0) return null;
  const text = bytes.toString('utf8');
  const newline = text.indexOf('\n');
  const firstLine = newline < 0 ? text : text.slice(0, newline);
  // Trim before turning NULs into newlines, as envdir does: a value may end in a newline that way.
  return firstLine.trimEnd().replaceAll('\0', '\n');
}

/**
 * The env of `service` on a host: the layers folded lowest first, each variable remembering the
 * layer that set it, or unset it last.
 */
export function effectiveConfig(layers: ConfigLayers, options: EffectiveConfigOptions): EffectiveConfig {
  const { environment, service, inline = {}, inlineSources = {}, hostOverrides = {}, hashKey } = options;
  const sequence: Array<ConfigLayer | undefined> = [
    layers.common,
    environment === undefined ? undefined : ownValue(layers.environments, environment),
    ownValue(layers.services, service),
    mapValues(inline, (name) => ownValue(inlineSources, name) ?? `service ${service}`),
    mapValues(hostOverrides, () => 'host override'),
  ];
  const env = new Map<string, string>();
  const sources = new Map<string, string>();
  const unset = new Set<string>();
  for (const layer of sequence) {
    for (const [name, { value, source }] of Object.entries(layer ?? {})) {
      sources.set(name, source);
      if (value === null) {
        env.delete(name);
        unset.add(name);
      } else {
        env.set(name, value);
        unset.delete(name);
      }
    }
  }
  const sortedEnv = Object.fromEntries([...env].sort(([a], [b]) => (a < b ? -1 : 1)));
  return {
    env: sortedEnv,
    sources: Object.fromEntries([...sources].sort(([a], [b]) => (a < b ? -1 : 1))),
    unset: [...unset].sort(),
    hash: configHash(sortedEnv, hashKey),
  };
}

/**
 * The hash every config in berth shows: the first 16 hex digits of an HMAC-SHA256 of `value`'s
 * canonical JSON under the tenant's key. Equal configs of a tenant hash equal (what `svc ls` and
 * `config show` let users compare), but the hash of an env holding a weak secret cannot be used to
 * test guesses of it offline, as a plain digest could.
 */
export function configHash(value: unknown, key: string): string {
  return createHmac('sha256', key).update(canonicalJson(value)).digest('hex').slice(0, 16);
}

/** A record's own entry: names such as "constructor" or "__proto__" are data here, never Object's. */
export function ownValue<T>(record: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function mapValues(values: Record<string, string>, sourceOf: (name: string) => string): ConfigLayer {
  return Object.fromEntries(Object.entries(values).map(([name, value]) => [name, { value, source: sourceOf(name) }]));
}

function visibleEntries(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => !name.startsWith('.'))
    .sort();
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

function fileIssue(file: string, message: string, hint: string): SpecIssue {
  return { file, line: 1, column: 1, path: '', message, hint };
}
