/**
 * A service's settings: its environment at start, with the dotenv file named by BERTH_ENV_FILE (if
 * set) on top. `reload()` (on SIGHUP) reads the file again; the process keeps running and whoever
 * subscribed applies the new values. Messages name variables, never their values: some are secrets.
 */
import { readFileSync } from 'node:fs';

/** Names whose values are never shown (the same rule as berth's `config show`). */
const SECRET_NAME = /(SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE_KEY|API_KEY)/i;
/** Where berth writes a host's tags (and rewrites them at a claim): the fallback when BERTH_TAGS is not set. */
const HOST_TAGS_PATH = '/etc/berth/tags.json';
/** Read once at start; a change needs a restart (logged as such on reload). */
const RESTART_ONLY = ['PORT', 'HOST', 'DATA_DIR', 'BERTH_ENV_FILE'];
const ESCAPES = { n: '\n', r: '\r', t: '\t', '"': '"', '\\': '\\', $: '$' };

/**
 * KEY=VALUE lines: `#` comment lines and blank lines skipped, an optional `export `, unquoted values
 * up to an inline ` #` comment, 'single' (literal) or "double" (\n \t \" \\ escapes) quotes, which
 * may span lines. No ${VAR} expansion. Bad lines are left out and reported by line number.
 */
export function parseDotenv(text) {
  const lines = text.split('\n').map((line) => line.replace(/\r$/, ''));
  const vars = {};
  const problems = [];
  for (let i = 0; i < lines.length; i++) {
    const body = lines[i].trim();
    if (body === '' || body.startsWith('#')) continue;
    const rest = body.replace(/^export\s+/, '');
    const eq = rest.indexOf('=');
    const name = eq < 0 ? '' : rest.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      problems.push(`line ${i + 1}: expected NAME=value`);
      continue;
    }
    const value = rest.slice(eq + 1).trimStart();
    const quote = value[0];
    if (quote !== '"' && quote !== "'") {
      vars[name] = value.replace(/(^|\s)#.*$/, '').trimEnd();
      continue;
    }
    const quoted = readQuoted(lines, i, value.slice(1), quote);
    if (!quoted) {
      problems.push(`line ${i + 1}: unterminated quoted value of ${name}`);
      break;
    }
    vars[name] = quoted.value;
    i = quoted.endLine;
  }
  return { vars, problems };
}

function readQuoted(lines, start, text, quote) {
  let value = '';
  for (let lineIndex = start; ; ) {
    for (let i = 0; i < text.length; i++) {
      const char = text[i];
      if (char === quote) return { value, endLine: lineIndex };
      if (quote === '"' && char === '\\' && i + 1 < text.length) {
        value += ESCAPES[text[i + 1]] ?? `\\${text[i + 1]}`;
        i++;
      } else value += char;
    }
    lineIndex++;
    if (lineIndex >= lines.length) return undefined;
    value += '\n';
    text = lines[lineIndex];
  }
}

export class Settings {
  #base;
  #env;
  #listeners = [];

  /** Reads the env file now too, so the process starts with what a reload would give it. */
  constructor(log, baseEnv = process.env) {
    this.log = log;
    this.#base = { ...baseEnv };
    this.file = this.#base.BERTH_ENV_FILE || undefined;
    this.#env = this.#base;
    if (this.file) {
      try {
        this.#env = this.#read();
      } catch (err) {
        log(`cannot read settings file ${this.file} (${err.code ?? err.message}); using the environment alone`);
      }
    }
  }

  get(name, fallback = undefined) {
    const value = this.#env[name];
    return value === undefined || value === '' ? fallback : value;
  }

  /** A whole number within [min, max]; anything else is the fallback (and said once per reload). */
  int(name, fallback, min = 0, max = Number.MAX_SAFE_INTEGER) {
    const text = this.get(name);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (Number.isInteger(value) && value >= min && value <= max) return value;
    this.#warnOnce(name, `${name} is not a whole number from ${min} to ${max}; using ${fallback}`);
    return fallback;
  }

  #warned = new Set();
  #warnOnce(key, line) {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.log(line);
  }

  onReload(listener) {
    this.#listeners.push(listener);
  }

  /** SIGHUP: read the file again and tell the listeners; on a bad file keep the current settings. */
  reload() {
    if (!this.file) {
      this.log('SIGHUP: no BERTH_ENV_FILE set, nothing to reload');
      return;
    }
    let next;
    try {
      next = this.#read();
    } catch (err) {
      this.log(`SIGHUP: cannot read ${this.file} (${err.code ?? err.message}); keeping the current settings`);
      return;
    }
    const names = new Set([...Object.keys(this.#env), ...Object.keys(next)]);
    const changed = [...names].filter((name) => this.#env[name] !== next[name]).sort();
    this.#env = next;
    this.#warned.clear();
    const later = changed.filter((name) => RESTART_ONLY.includes(name));
    const live = changed.filter((name) => !RESTART_ONLY.includes(name));
    this.log(`reloaded settings from ${this.file}: ${live.length ? `changed ${live.join(', ')}` : 'no changes'}`);
    if (later.length) this.log(`${later.join(', ')} changed: takes effect at the next restart`);
    for (const listener of this.#listeners) listener(changed);
  }

  #read() {
    const { vars, problems } = parseDotenv(readFileSync(this.file, 'utf8'));
    for (const problem of problems) this.log(`${this.file}: ${problem} (skipped)`);
    return { ...this.#base, ...vars };
  }

  /** The host's tags: BERTH_TAGS (a JSON object), else the host's tags file; undefined when neither. */
  tags() {
    const fromEnv = this.get('BERTH_TAGS');
    let text = fromEnv;
    if (text === undefined) {
      try {
        text = readFileSync(this.get('BERTH_TAGS_FILE', HOST_TAGS_PATH), 'utf8');
      } catch {
        return undefined;
      }
    }
    try {
      const parsed = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
      const tags = {};
      for (const [key, value] of Object.entries(parsed)) {
        if (typeof value !== 'string') continue;
        // berth.env.NAME=value overrides a variable: a secret one's value is not for display.
        const overridden = key.startsWith('berth.env.') ? key.slice('berth.env.'.length) : undefined;
        tags[key] = overridden !== undefined && this.isSecret(overridden) ? '********' : value;
      }
      return tags;
    } catch {
      return undefined;
    }
  }

  isSecret(name) {
    return SECRET_NAME.test(name);
  }

  /** What the app runs with that anyone may see: no secret, no path. */
  publicConfig(service) {
    const tags = this.tags();
    const environment = this.get('BERTH_ENVIRONMENT') ?? tags?.['berth.env'];
    // berth gives every service of an environment its ref: `env deploy --ref v2` shows on the page.
    const ref = this.get('BERTH_REF');
    return {
      service,
      greeting: this.get('GREETING', 'Hello from berth'),
      ...(environment !== undefined && { environment }),
      version: this.get('APP_VERSION', 'dev'),
      ...(ref !== undefined && ref !== '' && { ref }),
      ...(tags !== undefined && { tags }),
    };
  }
}
