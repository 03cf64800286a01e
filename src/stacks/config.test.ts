/** Layered env config: envdir and .env semantics, the layering order, sources, unsets and the hash. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isBerthError } from '../core/errors.js';
import { effectiveConfig, emptyConfigLayers, readConfigLayers } from './config.js';
import { parseDotenv } from './dotenv.js';
import { StackSpecError } from './spec.js';

const root = mkdtempSync(join(tmpdir(), 'berth-stacks-config-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A config directory made of `files` (path → content), read back with label "config". */
function configDir(files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(join(root, 'config-'));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

function errorOf(run: () => unknown): StackSpecError {
  try {
    run();
  } catch (err) {
    if (err instanceof StackSpecError) return err;
    throw err;
  }
  throw new Error('expected a StackSpecError');
}

describe('envdir', () => {
  it('takes the first line, trims trailing whitespace, turns NUL into newline; an empty file unsets', () => {
    const dir = configDir({
      'common/FIRST_LINE': 'value one  \t\nsecond line ignored\n',
      'common/NO_NEWLINE': 'bare',
      'common/MULTILINE': Buffer.from('line1\0line2\0\n'),
      'common/EMPTY_STRING': '\n',
      'common/GONE': '',
      'common/.gitkeep': '',
      'common/.hidden': 'not a variable',
    });
    const layers = readConfigLayers(dir, 'config');
    expect(layers.common).toEqual({
      EMPTY_STRING: { value: '', source: 'config/common/EMPTY_STRING' },
      FIRST_LINE: { value: 'value one', source: 'config/common/FIRST_LINE' },
      GONE: { value: null, source: 'config/common/GONE' },
      MULTILINE: { value: 'line1\nline2\n', source: 'config/common/MULTILINE' },
      NO_NEWLINE: { value: 'bare', source: 'config/common/NO_NEWLINE' },
    });
  });

  it('reads every environment and service directory, and treats names such as __proto__ as data', () => {
    const dir = configDir({ 'env/prod/A': 'p', 'env/dev/A': 'd', 'services/web/B': 'w', 'services/constructor/C': 'c', 'common/__proto__': 'x', 'README.md': 'notes' });
    const layers = readConfigLayers(dir, 'config');
    expect(Object.keys(layers.environments).sort()).toEqual(['dev', 'prod']);
    expect(Object.keys(layers.services).sort()).toEqual(['constructor', 'web']);
    expect(Object.hasOwn(layers.common, '__proto__')).toBe(true);
    expect(effectiveConfig(layers, { hashKey: 'k', service: 'web' }).env).toEqual(Object.fromEntries([['B', 'w'], ['__proto__', 'x']]));
  });

  it('names the file of a bad variable name, and reports every bad entry at once', () => {
    const dir = configDir({ 'common/bad-name': 'x', 'common/OK': 'y', 'services/web/2FA': 'z', 'env/prod.env': 'A=1', 'servics/web/A': 'a' });
    const err = errorOf(() => readConfigLayers(dir, 'config'));
    expect(err.message.split('\n')).toEqual([
      'config/common/bad-name:1:1: file name "bad-name" is not a valid variable name',
      'config/env/prod.env:1:1: is not a directory',
      'config/services/web/2FA:1:1: file name "2FA" is not a valid variable name',
      'config/servics:1:1: unknown config directory "servics" (expected common/, env/, services/)',
    ]);
    expect(err.issues.at(-1)?.hint).toBe('Did you mean "services"?');
  });

  it('a config dir that does not exist is a validation error', () => {
    let caught: unknown;
    try {
      readConfigLayers(join(root, 'nope'), 'config');
    } catch (err) {
      caught = err;
    }
    expect(isBerthError(caught) && caught.code).toBe('validation_failed');
    expect((caught as Error).message).toBe(`config dir config does not exist (${join(root, 'nope')})`);
  });
});

describe('.env files', () => {
  it('parses the supported forms', () => {
    const text = [
      '# comment', // 1
      '', // 2
      'PLAIN=hello world', // 3
      'export EXPORTED=yes', // 4
      '  SPACED = around  ', // 5
      'INLINE=value # a comment', // 6
      'HASH=a#b', // 7
      "SINGLE='literal $HOME \\n # not a comment'", // 8
      'DOUBLE="tab\\there \\"quoted\\" \\\\ \\$ \\q" # comment', // 9
      'EMPTY=', // 10
      'MULTI="first', // 11
      'second"', // 12
      'NOEXPAND=${PLAIN}', // 13
      'PLAIN=again', // 14
    ].join('\r\n');
    const { entries, issues } = parseDotenv(text, 'x/.env');
    expect(issues).toEqual([]);
    expect(entries.map((e) => [e.name, e.value, e.line])).toEqual([
      ['PLAIN', 'hello world', 3],
      ['EXPORTED', 'yes', 4],
      ['SPACED', 'around', 5],
      ['INLINE', 'value', 6],
      ['HASH', 'a#b', 7],
      ['SINGLE', 'literal $HOME \\n # not a comment', 8],
      ['DOUBLE', 'tab\there "quoted" \\ $ \\q', 9],
      ['EMPTY', '', 10],
      ['MULTI', 'first\nsecond', 11],
      ['NOEXPAND', '${PLAIN}', 13],
      ['PLAIN', 'again', 14],
    ]);
  });

  it('locates bad lines without printing values', () => {
    const text = ['OK=1', 'no equals sign', 'export 9LIVES=cat', 'A="x" trailing', 'B="never closed', 'C=after'].join('\n');
    const { entries, issues } = parseDotenv(text, 'config/common/.env');
    expect(entries.map((e) => e.name)).toEqual(['OK']);
    expect(issues.map((i) => `${i.file}:${i.line}:${i.column}: ${i.message}`)).toEqual([
      'config/common/.env:2:1: expected NAME=value',
      'config/common/.env:3:8: bad variable name "9LIVES"',
      'config/common/.env:4:1: unexpected text after the closing quote of A',
      'config/common/.env:5:3: unterminated double-quoted value of B',
    ]);
  });

  it('in a layer, the .env comes first and the envdir files on top (an empty one unsets)', () => {
    const dir = configDir({ 'common/.env': 'A=from-dotenv\nB=from-dotenv\nC=from-dotenv\n', 'common/B': 'from-file\n', 'common/C': '' });
    expect(readConfigLayers(dir, 'config').common).toEqual({
      A: { value: 'from-dotenv', source: 'config/common/.env:1' },
      B: { value: 'from-file', source: 'config/common/B' },
      C: { value: null, source: 'config/common/C' },
    });
  });

  it('a bad .env line is a located error', () => {
    const dir = configDir({ 'env/prod/.env': 'GOOD=1\nBAD NAME=2\n' });
    expect(errorOf(() => readConfigLayers(dir, 'config')).message).toBe('config/env/prod/.env:2:1: bad variable name "BAD NAME"');
  });
});

describe('effectiveConfig', () => {
  const dir = configDir({
    'common/.env': 'LEVEL=common\nDB_HOST=db.common\nDEBUG=1\nFEATURE=on\n',
    'env/prod/LEVEL': 'environment',
    'env/prod/DEBUG': '',
    'env/prod/.env': 'DB_HOST=db.prod\n',
    'services/web/LEVEL': 'service-dir',
    'services/web/FEATURE': '',
    'services/web/ONLY_WEB': 'yes',
  });
  const layers = readConfigLayers(dir, 'config');

  it('layers common < environment < service dir < inline < host overrides, with sources', () => {
    const config = effectiveConfig(layers, { hashKey: 'k',
      environment: 'prod',
      service: 'web',
      inline: { LEVEL: 'inline', PORT: '8080' },
      inlineSources: { LEVEL: 'service web (berth.yaml:12:9)' },
      hostOverrides: { PORT: '9090' },
    });
    expect(config.env).toEqual({ DB_HOST: 'db.prod', LEVEL: 'inline', ONLY_WEB: 'yes', PORT: '9090' });
    expect(config.sources).toEqual({
      DB_HOST: 'config/env/prod/.env:1',
      DEBUG: 'config/env/prod/DEBUG',
      FEATURE: 'config/services/web/FEATURE',
      LEVEL: 'service web (berth.yaml:12:9)',
      ONLY_WEB: 'config/services/web/ONLY_WEB',
      PORT: 'host override',
    });
    expect(config.unset).toEqual(['DEBUG', 'FEATURE']);
    expect(config.hash).toMatch(/^[0-9a-f]{16}$/);
  });

  it('each layer wins over the ones below it', () => {
    const level = (options: Omit<Parameters<typeof effectiveConfig>[1], 'hashKey'>) => effectiveConfig(layers, { ...options, hashKey: 'k' }).env['LEVEL'];
    expect(level({ service: 'db' })).toBe('common');
    expect(level({ service: 'db', environment: 'prod' })).toBe('environment');
    expect(level({ service: 'web', environment: 'prod' })).toBe('service-dir');
    expect(level({ service: 'web', environment: 'prod', inline: { LEVEL: 'inline' } })).toBe('inline');
    expect(level({ service: 'web', environment: 'prod', inline: { LEVEL: 'inline' }, hostOverrides: { LEVEL: 'host' } })).toBe('host');
  });

  it('an unset removes the value of lower layers, and a higher layer can set it again', () => {
    const db = effectiveConfig(layers, { hashKey: 'k', service: 'db', environment: 'prod' });
    expect(db.env['DEBUG']).toBeUndefined();
    expect(db.unset).toEqual(['DEBUG']);
    const again = effectiveConfig(layers, { hashKey: 'k', service: 'web', environment: 'prod', hostOverrides: { DEBUG: '2' } });
    expect(again.env['DEBUG']).toBe('2');
    expect(again.unset).toEqual(['FEATURE']);
    expect(effectiveConfig(layers, { hashKey: 'k', service: 'db' }).env['DEBUG']).toBe('1');
  });

  it('hashes names and values', () => {
    const base = effectiveConfig(emptyConfigLayers(), { hashKey: 'k', service: 'x', inline: { A: '1', B: '2' } }).hash;
    expect(effectiveConfig(emptyConfigLayers(), { hashKey: 'k', service: 'x', hostOverrides: { B: '2', A: '1' } }).hash).toBe(base);
    expect(effectiveConfig(emptyConfigLayers(), { hashKey: 'k', service: 'x', inline: { A: '1', B: '3' } }).hash).not.toBe(base);
    expect(effectiveConfig(emptyConfigLayers(), { hashKey: 'k', service: 'x', inline: { A: '1', C: '2' } }).hash).not.toBe(base);
  });
});
