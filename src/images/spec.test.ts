/** berth.yaml `images:`: the parsed structure, and every error located at its exact line and column. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkStepInputs, ImageSpecError, parseByteSize, parseImagesFile, stepDefinition, type ImageSpec, type ImageStep } from './spec.js';

const FILE = 'berth.yaml';
const HEX = 'ab'.repeat(32);

/** Lines joined with newlines, so a test's line numbers are its array indexes + 1. */
const yaml = (...lines: string[]): string => `${lines.join('\n')}\n`;

function errorOf(text: string): ImageSpecError {
  try {
    parseImagesFile(text, FILE);
  } catch (err) {
    if (err instanceof ImageSpecError) return err;
    throw err;
  }
  throw new Error('expected an ImageSpecError');
}

const at = (line: number, column: number) => ({ file: FILE, line, column });

describe('parseImagesFile: a valid file', () => {
  const text = yaml(
    'pools:', // 1
    '  - {name: web, size: 2}', // 2
    'images:', // 3
    '  base:', // 4
    '    steps:', // 5
    '      - run: apt-get update', // 6
    '  web:', // 7
    '    parent: base', // 8
    '    identity:', // 9
    '      strip: [/etc/myapp/instance-id, /var/lib/foo/*.state]', // 10
    '      keep: [/etc/machine-id]', // 11
    '    steps:', // 12
    '      - copy: app/ /srv/app', // 13
    '      - copy: {src: conf/nginx.conf, dest: /etc/nginx/nginx.conf, mode: "0644"}', // 14
    '      - run: [make, make install]', // 15
    '      - run:', // 16
    '          commands: make test', // 17
    '          cwd: /srv/app', // 18
    '          env: {CI: true, JOBS: 4}', // 19
    '          timeout: 600', // 20
    `      - fetch: {url: https://example.com/x.tgz, sha256: "sha256:${HEX.toUpperCase()}", dest: /opt/x, extract: true, maxSize: 512MiB}`, // 21
    '      - fetch: {path: vendor/tool, dest: /usr/local/bin/tool, mode: 0755}', // 22
    '      - slug: {path: build/app.tgz, maxSize: 1GiB}', // 23
    `      - slug: {url: https://example.com/app.tgz, sha256: ${HEX}, dest: /srv/slug}`, // 24
    '      - env: {PORT: 8080, MODE: production, VERSION: 1.10}', // 25
    '      - test: curl -sf http://127.0.0.1:8080/health', // 26
    '      - test: {commands: [a, b], timeout: 60}', // 27
    '  rootfs:', // 28
    '    parent: /var/lib/berth/roots/alpine', // 29
    '    steps: []', // 30
    '    egress: true', // 31
  );

  it('parses every step kind, short and long forms, with defaults and locations', () => {
    const specs = parseImagesFile(text, FILE);
    expect(specs.map((s) => [s.name, s.parent, s.at])).toEqual([
      ['base', '/', at(4, 3)],
      ['web', 'base', at(7, 3)],
      ['rootfs', '/var/lib/berth/roots/alpine', at(28, 3)],
    ]);
    const [base, web, rootfs] = specs as [ImageSpec, ImageSpec, ImageSpec];
    expect(base.identity).toEqual({ strip: [], keep: [] });
    expect(base.steps).toEqual([{ kind: 'run', commands: ['apt-get update'], env: {}, at: at(6, 9) }]);
    expect(rootfs.steps).toEqual([]);
    expect([base.egress, web.egress, rootfs.egress]).toEqual([false, false, true]);
    expect(web.identity).toEqual({ strip: ['/etc/myapp/instance-id', '/var/lib/foo/*.state'], keep: ['/etc/machine-id'] });
    expect(web.steps).toEqual<ImageStep[]>([
      { kind: 'copy', src: 'app/', dest: '/srv/app', at: at(13, 9), srcAt: at(13, 15) },
      { kind: 'copy', src: 'conf/nginx.conf', dest: '/etc/nginx/nginx.conf', mode: 0o644, at: at(14, 9), srcAt: at(14, 21) },
      { kind: 'run', commands: ['make', 'make install'], env: {}, at: at(15, 9) },
      { kind: 'run', commands: ['make test'], cwd: '/srv/app', env: { CI: 'true', JOBS: '4' }, timeoutSeconds: 600, at: at(16, 9) },
      {
        kind: 'fetch',
        source: { url: 'https://example.com/x.tgz' },
        sha256: HEX,
        dest: '/opt/x',
        extract: true,
        maxBytes: 512 * 1024 ** 2,
        at: at(21, 9),
        sourceAt: at(21, 22),
        sha256At: at(21, 57),
      },
      { kind: 'fetch', source: { path: 'vendor/tool' }, dest: '/usr/local/bin/tool', extract: false, mode: 0o755, maxBytes: 2 * 1024 ** 3, at: at(22, 9), sourceAt: at(22, 23) },
      { kind: 'slug', source: { path: 'build/app.tgz' }, dest: '/app', maxBytes: 1024 ** 3, at: at(23, 9), sourceAt: at(23, 22) },
      { kind: 'slug', source: { url: 'https://example.com/app.tgz' }, sha256: HEX, dest: '/srv/slug', maxBytes: 2 * 1024 ** 3, at: at(24, 9), sourceAt: at(24, 21), sha256At: at(24, 58) },
      { kind: 'env', env: { PORT: '8080', MODE: 'production', VERSION: '1.10' }, at: at(25, 9) },
      { kind: 'test', commands: ['curl -sf http://127.0.0.1:8080/health'], at: at(26, 9) },
      { kind: 'test', commands: ['a', 'b'], timeoutSeconds: 60, at: at(27, 9) },
    ]);
  });

  it('declares no images when the file has none, or only other sections', () => {
    expect(parseImagesFile('', FILE)).toEqual([]);
    expect(parseImagesFile(yaml('pools:', '  - {name: web, size: 1}'), FILE)).toEqual([]);
    expect(parseImagesFile(yaml('images:'), FILE)).toEqual([]);
    expect(parseImagesFile(yaml('images:', '  solo:', '    steps: [{run: make}]'), FILE)).toHaveLength(1);
  });

  it('reads egress as a list of the ranges and names its run steps may reach', () => {
    const [spec] = parseImagesFile(yaml('images:', '  web:', '    egress: [packages.example.com, "*.mirror.example.org", 203.0.113.0/24]', '    steps: []'), FILE);
    expect([spec?.egress, spec?.egressAllow]).toEqual([true, ['packages.example.com', '*.mirror.example.org', '203.0.113.0/24']]);
  });
});

describe('parseImagesFile: errors, located', () => {
  const cases: [string, string, string][] = [
    ['a YAML syntax error', yaml('images:', '  web:', '    steps: [{run: make}', 'pools: []'), `${FILE}:4:1: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ]`],
    ['a duplicate key', yaml('images:', '  web:', '    steps: []', '  web:', '    steps: []'), `${FILE}:4:3: invalid YAML: Map keys must be unique`],
    ['a top level that is not a mapping', yaml('- images'), `${FILE}:1:1: a berth.yaml is a mapping`],
    ['images that is not a mapping', yaml('images: [web]'), `${FILE}:1:9: images: must be a mapping of image names to images (got a list)`],
    ['a bad image name', yaml('images:', '  Web_App!:', '    steps: []'), `${FILE}:2:3: images["Web_App!"]: bad image name "Web_App!"`],
    ['missing steps', yaml('images:', '  web:', '    parent: /'), `${FILE}:2:3: images.web: missing steps`],
    ['steps that are not a list', yaml('images:', '  web:', '    steps: {run: make}'), `${FILE}:3:12: images.web.steps: must be a list of steps (got a mapping)`],
    ['an unknown image key', yaml('images:', '  web:', '    steps: []', '    parnet: base'), `${FILE}:4:5: images.web: unknown key "parnet" (expected one of parent, identity, egress, steps)`],
    ['egress that is not true or false', yaml('images:', '  web:', '    egress: maybe', '    steps: []'), `${FILE}:3:13: images.web.egress: must be true or false (got "maybe")`],
    ['an egress entry that is neither range nor name', yaml('images:', '  web:', '    egress: [packages.example.com, 10.0.0.0/40]', '    steps: []'), `${FILE}:3:36: images.web.egress[1]: egressAllow entry "10.0.0.0/40" is neither an IPv4 range nor a DNS name`],
    ['a parent naming the image itself', yaml('images:', '  web:', '    parent: web', '    steps: []'), `${FILE}:3:13: images.web.parent: image "web" cannot be its own parent`],
    ['a parent that is neither name nor path', yaml('images:', '  web:', '    parent: ../roots/x', '    steps: []'), `${FILE}:3:13: images.web.parent: must be an image name or an absolute path (got "../roots/x")`],
    ['a parent loop', yaml('images:', '  a:', '    parent: b', '    steps: []', '  b:', '    parent: a', '    steps: []'), `${FILE}:3:13: images.a.parent: parents loop: a → b → a`],
    ['an unknown identity key', yaml('images:', '  web:', '    identity: {strip: [/a], kepp: [/b]}', '    steps: []'), `${FILE}:3:29: images.web.identity: unknown key "kepp" (expected one of strip, keep)`],
    ['a relative identity path', yaml('images:', '  web:', '    identity:', '      strip: [/a, etc/x]', '    steps: []'), `${FILE}:4:19: images.web.identity.strip[1]: must be an absolute path below '/' (got "etc/x")`],
    ['an unknown step type', yaml('images:', '  web:', '    steps:', '      - run: make', '      - runn: make'), `${FILE}:5:9: images.web.steps[1]: unknown step type "runn" (expected one of copy, run, fetch, slug, env, test)`],
    ['a step with no kind key', yaml('images:', '  web:', '    steps:', '      - {}'), `${FILE}:4:9: images.web.steps[0]: a step needs one key naming its kind`],
    ['a step with two kind keys', yaml('images:', '  web:', '    steps:', '      - run: make', '        test: make check'), `${FILE}:5:9: images.web.steps[0]: a step has exactly one key naming its kind, found "run" and "test"`],
    ['an option beside the kind key', yaml('images:', '  web:', '    steps: [{run: make, cwd: /src}]'), `${FILE}:3:25: images.web.steps[0]: a step has exactly one key naming its kind, found "run" and "cwd"`],
    ['a step that is not a mapping', yaml('images:', '  web:', '    steps:', '      - run make'), `${FILE}:4:9: images.web.steps[0]: must be a mapping with one key naming the step's kind`],
    ['an unknown step option', yaml('images:', '  web:', '    steps:', '      - copy: {src: a, dest: /b, mdoe: "0755"}'), `${FILE}:4:34: images.web.steps[0].copy: unknown key "mdoe" (expected one of src, dest, mode)`],
    ['a copy short form of one word', yaml('images:', '  web:', '    steps:', '      - copy: app/'), `${FILE}:4:15: images.web.steps[0].copy: "app/" is not "SRC DEST" (two words, found 1)`],
    ['a copy short form with a relative dest', yaml('images:', '  web:', '    steps:', '      - copy: app   srv/app'), `${FILE}:4:21: images.web.steps[0].copy: dest must be an absolute path (got "srv/app")`],
    ['a copy long form with a relative dest', yaml('images:', '  web:', '    steps:', '      - copy:', '          src: app', '          dest: srv/app'), `${FILE}:6:17: images.web.steps[0].copy.dest: must be an absolute path (got "srv/app")`],
    ['a copy without src', yaml('images:', '  web:', '    steps:', '      - copy: {dest: /srv}'), `${FILE}:4:9: images.web.steps[0].copy: missing src`],
    ['a bad mode', yaml('images:', '  web:', '    steps:', '      - copy: {src: a, dest: /b, mode: 0955}'), `${FILE}:4:40: images.web.steps[0].copy.mode: must be octal permission bits such as "0755" (got 0955)`],
    ['an empty command list', yaml('images:', '  web:', '    steps:', '      - run: []'), `${FILE}:4:14: images.web.steps[0].run: must list at least one command`],
    ['an empty command', yaml('images:', '  web:', '    steps:', '      - test:'), `${FILE}:4:9: images.web.steps[0].test: must be a command or a list of commands (got nothing)`],
    ['a relative cwd', yaml('images:', '  web:', '    steps:', '      - run: {commands: [make], cwd: src}'), `${FILE}:4:38: images.web.steps[0].run.cwd: must be an absolute path (got "src")`],
    ['a bad timeout', yaml('images:', '  web:', '    steps:', '      - test: {commands: [x], timeout: -1}'), `${FILE}:4:40: images.web.steps[0].test.timeout: must be a number of seconds above 0 (got -1)`],
    ['a bad env name', yaml('images:', '  web:', '    steps:', '      - env: {PORT: 1, 2X: a}'), `${FILE}:4:24: images.web.steps[0].env.2X: bad variable name "2X"`],
    ['an empty env value', yaml('images:', '  web:', '    steps:', '      - env:', '          A:'), `${FILE}:5:11: images.web.steps[0].env.A: must be text, a number or a boolean (got nothing)`],
    ['a bad sha256', yaml('images:', '  web:', '    steps:', '      - fetch: {url: https://x.test/y, sha256: abc123, dest: /y}'), `${FILE}:4:48: images.web.steps[0].fetch.sha256: must be a SHA-256 digest`],
    ['a url without sha256', yaml('images:', '  web:', '    steps:', '      - fetch: {url: https://x.test/y, dest: /y}'), `${FILE}:4:9: images.web.steps[0].fetch: missing sha256 (required with url)`],
    ['both url and path', yaml('images:', '  web:', '    steps:', `      - slug: {url: https://x.test/y, sha256: ${HEX}, path: y}`), `${FILE}:4:113: images.web.steps[0].slug: give either url or path, not both`],
    ['neither url nor path', yaml('images:', '  web:', '    steps:', '      - slug: {dest: /app}'), `${FILE}:4:9: images.web.steps[0].slug: missing url or path`],
    ['a url that is not http', yaml('images:', '  web:', '    steps:', `      - fetch: {url: ftp://x.test/y, sha256: ${HEX}, dest: /y}`), `${FILE}:4:22: images.web.steps[0].fetch.url: must be an http or https url (got "ftp://x.test/y")`],
    ['a fetch without dest', yaml('images:', '  web:', '    steps:', '      - fetch: {path: y}'), `${FILE}:4:9: images.web.steps[0].fetch: missing dest`],
    ['a relative fetch dest', yaml('images:', '  web:', '    steps:', '      - fetch:', '          path: y', '          dest: opt/y'), `${FILE}:6:17: images.web.steps[0].fetch.dest: must be an absolute path (got "opt/y")`],
    ['a bad size', yaml('images:', '  web:', '    steps:', '      - slug: {path: a.tgz, maxSize: 2GiBs}'), `${FILE}:4:38: images.web.steps[0].slug.maxSize: must be a size such as 512MiB`],
    ['extract that is not a boolean', yaml('images:', '  web:', '    steps:', '      - fetch: {path: y, dest: /y, extract: "yes"}'), `${FILE}:4:45: images.web.steps[0].fetch.extract: must be true or false (got "yes")`],
    ['mode with extract', yaml('images:', '  web:', '    steps:', '      - fetch: {path: y, dest: /y, extract: true, mode: "0755"}'), `${FILE}:4:51: images.web.steps[0].fetch.mode: mode applies to a single file`],
  ];

  it.each(cases)('%s', (_name, text, prefix) => {
    const err = errorOf(text);
    expect(err.message.startsWith(prefix), `${err.message}\n  does not start with\n${prefix}`).toBe(true);
    expect(err.code).toBe('validation_failed');
    expect(err.hint).not.toBe('');
    const [, line, column] = /^[^:]+:(\d+):(\d+):/.exec(prefix) ?? [];
    expect(err.details).toMatchObject({ file: FILE, line: Number(line), column: Number(column) });
  });

  it('reports every error at once, in file order, with the path in details', () => {
    const err = errorOf(yaml('images:', '  web:', '    stpes: []', '  api:', '    steps:', '      - runn: x', '      - copy: a b'));
    expect(err.message.split('\n')).toEqual([
      `${FILE}:2:3: images.web: missing steps`,
      `${FILE}:3:5: images.web: unknown key "stpes" (expected one of parent, identity, egress, steps)`,
      `${FILE}:6:9: images.api.steps[0]: unknown step type "runn" (expected one of copy, run, fetch, slug, env, test)`,
      `${FILE}:7:17: images.api.steps[1].copy: dest must be an absolute path (got "b")`,
    ]);
    expect(err.details).toMatchObject({ file: FILE, line: 2, column: 3, path: 'images.web' });
    expect(err.issues).toHaveLength(4);
    expect(err.hint).toContain('steps');
  });

  it('suggests the step kind or key a typo meant', () => {
    expect(errorOf(yaml('images:', '  web:', '    steps: [{runn: x}]')).hint).toContain('"run"');
    const typo = errorOf(yaml('images:', '  web:', '    steps: [{copy: {src: a, dset: /b}}]'));
    expect(typo.issues.map((issue) => [issue.column, issue.message, issue.hint])).toEqual([
      [14, 'missing dest', 'Add dest: to the step.'],
      [29, 'unknown key "dset" (expected one of src, dest, mode)', 'Did you mean "dest"?'],
    ]);
  });
});

describe('stepDefinition', () => {
  const stepsOf = (text: string): ImageStep[] => parseImagesFile(text, FILE).flatMap((spec) => spec.steps);

  it('is the same for a step in short and long form, at any position or formatting', () => {
    const short = stepsOf(yaml('images:', '  web:', '    steps:', '      - copy: app/ /srv/app', '      - run: make', '      - test: make check'));
    const long = stepsOf(
      yaml(
        'images:',
        '  other:',
        '    steps:',
        '      - env: {A: "1"}',
        '      - copy:',
        '          dest: /srv/app',
        '          src: app/',
        '      - run: {commands: [make]}',
        '      - test:',
        '          - make check',
      ),
    );
    expect(long.slice(1).map(stepDefinition)).toEqual(short.map(stepDefinition));
    expect(stepDefinition(short[0] as ImageStep)).toEqual({ kind: 'copy', src: 'app/', dest: '/srv/app' });
    expect(stepDefinition(short[1] as ImageStep)).toEqual({ kind: 'run', commands: ['make'], env: {} });
  });

  it('fills defaults and ignores formatting of fetch and slug, and differs when the step differs', () => {
    const [flow, block, other] = stepsOf(
      yaml(
        'images:',
        '  web:',
        '    steps:',
        `      - fetch: {url: https://x.test/a, sha256: "sha256:${HEX}", dest: /a, extract: false, maxSize: 2GiB}`,
        '      - fetch:',
        '          url: https://x.test/a',
        `          sha256: ${HEX.toUpperCase()}`,
        '          dest: /a',
        '      - fetch:',
        '          url: https://x.test/a',
        `          sha256: ${HEX}`,
        '          dest: /b',
      ),
    ) as [ImageStep, ImageStep, ImageStep];
    expect(stepDefinition(flow)).toEqual(stepDefinition(block));
    expect(stepDefinition(flow)).toEqual({ kind: 'fetch', source: { url: 'https://x.test/a' }, sha256: HEX, dest: '/a', extract: false, maxBytes: 2 * 1024 ** 3 });
    expect(stepDefinition(other)).not.toEqual(stepDefinition(flow));
  });
});

describe('checkStepInputs', () => {
  const projectDir = mkdtempSync(join(tmpdir(), 'berth-spec-'));
  afterAll(() => rmSync(projectDir, { recursive: true, force: true }));
  mkdirSync(join(projectDir, 'app'));
  mkdirSync(join(projectDir, 'vendor'));
  writeFileSync(join(projectDir, 'vendor', 'tool'), '#!/bin/sh\n');
  const absoluteFile = join(projectDir, 'vendor', 'tool');

  const specOf = (...steps: string[]): ImageSpec => {
    const [spec] = parseImagesFile(yaml('images:', '  web:', '    steps:', ...steps), FILE);
    if (!spec) throw new Error('no image');
    return spec;
  };

  it('accepts inputs that exist, relative or absolute', () => {
    const spec = specOf('      - copy: app /srv/app', '      - fetch: {path: vendor/tool, dest: /t}', `      - slug: {path: ${absoluteFile}}`, `      - fetch: {url: https://x.test/a, sha256: ${HEX}, dest: /a}`);
    expect(() => checkStepInputs(spec, projectDir)).not.toThrow();
  });

  it('reports a missing copy src and fetch/slug path at its location', () => {
    const spec = specOf('      - run: make', '      - copy: {src: missing/, dest: /srv}', '      - slug: {path: build/app.tgz}', '      - fetch: {path: vendor, dest: /v}');
    let err: unknown;
    try {
      checkStepInputs(spec, projectDir);
    } catch (caught) {
      err = caught;
    }
    expect(err).toBeInstanceOf(ImageSpecError);
    const lines = (err as ImageSpecError).message.split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(new RegExp(`^${FILE}:5:21: images\\.web\\.steps\\[1\\]\\.copy: src "missing/" does not exist`));
    expect(lines[1]).toMatch(new RegExp(`^${FILE}:6:22: images\\.web\\.steps\\[2\\]\\.slug\\.path: path "build/app.tgz" does not exist`));
    expect(lines[2]).toMatch(new RegExp(`^${FILE}:7:23: images\\.web\\.steps\\[3\\]\\.fetch\\.path: path "vendor" is not a file`));
    expect((err as ImageSpecError).details).toMatchObject({ file: FILE, line: 5, column: 21 });
  });
});

describe('parseByteSize', () => {
  it('reads bytes, 1024-based and 1000-based units', () => {
    expect([parseByteSize('4096'), parseByteSize('100k'), parseByteSize('100KiB'), parseByteSize('10MB'), parseByteSize('1.5GiB'), parseByteSize('2 gb'), parseByteSize('7B')]).toEqual([
      4096,
      102_400,
      102_400,
      10_000_000,
      1.5 * 1024 ** 3,
      2_000_000_000,
      7,
    ]);
    expect([parseByteSize('0'), parseByteSize('1Ki'), parseByteSize('iB'), parseByteSize('2 GiBs'), parseByteSize('-1')]).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });
});
