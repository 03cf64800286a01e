/** berth.yaml `stacks:`: the parsed structure, its Procfile, and every error at its exact line and column. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SpecFileError } from '../images/spec-reader.js';
import { parseStacksFile, StackSpecError, type StackService } from './spec.js';

const FILE = 'berth.yaml';
const project = mkdtempSync(join(tmpdir(), 'berth-stacks-spec-'));
afterAll(() => rmSync(project, { recursive: true, force: true }));

mkdirSync(join(project, 'config'));
writeFileSync(join(project, 'Procfile'), ['# the simple form', 'worker: bin/worker --queue default', '', 'clock:   bin/clock'].join('\n'));

/** Lines joined with newlines, so a test's line numbers are its array indexes + 1. */
const yaml = (...lines: string[]): string => `${lines.join('\n')}\n`;
const at = (line: number, column: number, file = FILE) => ({ file, line, column });

function errorOf(text: string, dir = project): StackSpecError {
  try {
    parseStacksFile(text, FILE, dir);
  } catch (err) {
    if (err instanceof StackSpecError) return err;
    throw err;
  }
  throw new Error('expected a StackSpecError');
}

/** The first line of the error's message: `file:line:col: path: message`. */
const firstLine = (text: string): string => errorOf(text).message.split('\n')[0] ?? '';

describe('parseStacksFile: a valid file', () => {
  const text = yaml(
    'images:', // 1
    '  web: {steps: []}', // 2
    'stacks:', // 3
    '  shop:', // 4
    '    config: config/', // 5
    '    secrets: [DB_PASSWORD, API_TOKEN]', // 6
    '    procfile: Procfile', // 7
    '    services:', // 8
    '      web:', // 9
    '        cmd: bin/web --port $PORT', // 10
    '        cwd: /app', // 11
    '        user: app', // 12
    '        env: {PORT: "8080", WORKERS: 4, DEBUG: false}', // 13
    '        ports: [8080]', // 14
    '        dependsOn: [db]', // 15
    '        ready: {http: {port: 8080, path: /health}, timeout: 30}', // 16
    '        stopSignal: TERM', // 17
    '        stopTimeout: 10', // 18
    '        restart: {policy: always, initialDelay: 100ms, factor: 2, maxDelay: 30s, resetAfter: 1m, crashLoopLimit: 5}', // 19
    '        logs: {maxSize: 10MiB, keep: 5, timestamps: true}', // 20
    '      db:', // 21
    '        cmd: postgres -D /var/lib/pg', // 22
    '        ready: {tcp: 5432, command: pg_isready, timeout: "1.5s", interval: 250ms}', // 23
    '        restart: on-failure', // 24
    '      cache: redis-server', // 25
  );

  it('reads the Procfile and the services, translating durations and sizes', () => {
    const [shop, ...rest] = parseStacksFile(text, FILE, project);
    expect(rest).toEqual([]);
    expect(shop?.name).toBe('shop');
    expect(shop?.at).toEqual(at(4, 3));
    expect(shop?.configDir).toEqual({ path: join(project, 'config'), label: 'config', at: at(5, 13) });
    expect(shop?.secrets).toEqual(['DB_PASSWORD', 'API_TOKEN']);
    expect(Object.keys(shop?.services ?? {})).toEqual(['worker', 'clock', 'web', 'db', 'cache']);
    expect(shop?.services['worker']).toEqual<StackService>({
      name: 'worker',
      cmd: 'bin/worker --queue default',
      env: {},
      envAt: {},
      ports: [],
      dependsOn: [],
      restart: { policy: 'always' },
      at: at(2, 1, 'Procfile'),
      from: 'procfile',
    });
    expect(shop?.services['clock']?.cmd).toBe('bin/clock');
    expect(shop?.services['web']).toEqual<StackService>({
      name: 'web',
      cmd: 'bin/web --port $PORT',
      cwd: '/app',
      user: 'app',
      env: { PORT: '8080', WORKERS: '4', DEBUG: 'false' },
      envAt: { PORT: at(13, 15), WORKERS: at(13, 29), DEBUG: at(13, 41) },
      ports: [8080],
      dependsOn: ['db'],
      ready: { http: { port: 8080, path: '/health' }, timeoutSeconds: 30 },
      stopSignal: 'SIGTERM',
      stopTimeoutSeconds: 10,
      restart: { policy: 'always', initialDelayMs: 100, factor: 2, maxDelayMs: 30_000, resetAfterSeconds: 60, crashLoopLimit: 5 },
      logs: { maxBytes: 10 * 1024 * 1024, keep: 5, timestamps: true },
      at: at(9, 7),
      from: 'services',
    });
    expect(shop?.services['db']).toMatchObject({ ready: { tcp: { port: 5432 }, command: 'pg_isready', timeoutSeconds: 1.5, intervalMs: 250 }, restart: { policy: 'on-failure' } });
    expect(shop?.services['cache']).toMatchObject({ cmd: 'redis-server', restart: { policy: 'always' }, at: at(25, 7) });
  });

  it('ignores other sections, and a file without stacks: declares none', () => {
    expect(parseStacksFile(yaml('images:', '  web: {steps: []}'), FILE, project)).toEqual([]);
    expect(parseStacksFile('', FILE, project)).toEqual([]);
    expect(parseStacksFile(yaml('stacks:'), FILE, project)).toEqual([]);
  });

  it('names a Procfile next to berth.yaml as berth.yaml is named', () => {
    const [stack] = parseStacksFile(yaml('stacks:', '  shop: {procfile: Procfile}'), join(project, FILE), project);
    expect(stack?.services['worker']?.at).toEqual(at(2, 1, join(project, 'Procfile')));
  });
});

describe('parseStacksFile: located errors', () => {
  const stack = (...serviceLines: string[]) => yaml('stacks:', '  shop:', '    services:', ...serviceLines);

  it('unknown keys, with a guess', () => {
    expect(firstLine(yaml('stacks:', '  shop:', '    servces: {}'))).toBe('berth.yaml:3:5: stacks.shop: unknown key "servces" (expected one of config, secrets, procfile, services)');
    expect(errorOf(stack('      web: {cmd: x, dependson: [y]}')).hint).toBe('Did you mean "dependsOn"?');
    expect(firstLine(stack('      web:', '        cmd: x', '        ready: {http: 80, timout: 5}'))).toBe(
      'berth.yaml:6:27: stacks.shop.services.web.ready: unknown key "timout" (expected one of http, tcp, command, timeout, interval)',
    );
  });

  it('bad service names, missing cmd, bad values', () => {
    expect(firstLine(stack('      Web: {cmd: x}'))).toBe('berth.yaml:4:7: stacks.shop.services.Web: bad service name "Web"');
    expect(firstLine(stack('      web: {cwd: /app}'))).toBe('berth.yaml:4:7: stacks.shop.services.web: missing cmd');
    expect(firstLine(stack('      web: {cmd: x, cwd: app}'))).toMatch(/^berth\.yaml:4:26: stacks\.shop\.services\.web\.cwd: must be an absolute directory/);
    expect(firstLine(stack('      web: {cmd: x, ports: [80, 70000]}'))).toMatch(/^berth\.yaml:4:33: stacks\.shop\.services\.web\.ports\[1\]: must be a TCP port/);
    expect(firstLine(stack('      web: {cmd: x, stopSignal: SIGWINCH}'))).toBe('berth.yaml:4:33: stacks.shop.services.web.stopSignal: unknown stop signal "SIGWINCH"');
    expect(firstLine(stack('      web: {cmd: x, restart: sometimes}'))).toBe('berth.yaml:4:30: stacks.shop.services.web.restart: unknown restart policy "sometimes"');
    expect(firstLine(stack('      web: {cmd: x, ready: {timeout: 5}}'))).toBe('berth.yaml:4:28: stacks.shop.services.web.ready: a ready check needs http, tcp or command');
  });

  it('bad env names', () => {
    expect(firstLine(stack('      web:', '        cmd: x', '        env: {GOOD: 1, bad-name: 2}'))).toBe('berth.yaml:6:24: stacks.shop.services.web.env.bad-name: bad variable name "bad-name"');
    expect(firstLine(yaml('stacks:', '  shop:', '    secrets: [OK, 2FA]', '    services: {web: x}'))).toBe('berth.yaml:3:19: stacks.shop.secrets[1]: bad variable name "2FA"');
  });

  it('bad durations and sizes', () => {
    expect(firstLine(stack('      web:', '        cmd: x', '        restart: {initialDelay: 5 minutes}'))).toBe(
      'berth.yaml:6:33: stacks.shop.services.web.restart.initialDelay: must be a duration 0 or more such as 30, "100ms", "30s" or "5m" (got "5 minutes")',
    );
    expect(firstLine(stack('      web: {cmd: x, ready: {tcp: 1, timeout: 0}}'))).toMatch(/^berth\.yaml:4:46: stacks\.shop\.services\.web\.ready\.timeout: must be a duration above 0/);
    expect(firstLine(stack('      web: {cmd: x, logs: {maxSize: lots}}'))).toMatch(/^berth\.yaml:4:37: stacks\.shop\.services\.web\.logs\.maxSize: must be a size/);
  });

  it('unknown dependencies and dependency cycles, at the dependency', () => {
    const unknown = errorOf(stack('      web: {cmd: x, dependsOn: [dbb]}', '      db: {cmd: y}'));
    expect(unknown.message).toBe('berth.yaml:4:33: stacks.shop.services.web.dependsOn[0]: service "web" depends on unknown service "dbb"');
    expect(unknown.hint).toBe('Did you mean "db"?');
    expect(firstLine(stack('      web: {cmd: x, dependsOn: [db]}', '      db: {cmd: y, dependsOn: web}'))).toBe('berth.yaml:4:33: stacks.shop.services.web.dependsOn[0]: dependency cycle: web -> db -> web');
    expect(firstLine(stack('      web: {cmd: x, dependsOn: [web]}'))).toBe('berth.yaml:4:33: stacks.shop.services.web.dependsOn[0]: dependency cycle: web -> web');
  });

  it('a missing Procfile or config dir, at its value', () => {
    expect(firstLine(yaml('stacks:', '  shop:', '    procfile: Procfile.dev'))).toBe(
      `berth.yaml:3:15: stacks.shop.procfile: procfile "Procfile.dev" does not exist (${join(project, 'Procfile.dev')})`,
    );
    expect(firstLine(yaml('stacks:', '  shop:', '    config: conf/', '    procfile: Procfile'))).toBe(
      `berth.yaml:3:13: stacks.shop.config: config dir "conf/" does not exist (${join(project, 'conf')})`,
    );
    expect(firstLine(yaml('stacks:', '  shop:', '    config: Procfile', '    procfile: Procfile'))).toMatch(/^berth\.yaml:3:13: stacks\.shop\.config: config dir "Procfile" is not a directory/);
  });

  it('a service both in the Procfile and under services:, at the service', () => {
    expect(firstLine(yaml('stacks:', '  shop:', '    procfile: Procfile', '    services:', '      clock: {cmd: other}'))).toBe(
      'berth.yaml:5:7: stacks.shop.services.clock: service "clock" is also in the Procfile (Procfile:4:1)',
    );
  });

  it('bad Procfile lines, located in the Procfile', () => {
    const dir = mkdtempSync(join(project, 'bad-procfile-'));
    writeFileSync(join(dir, 'Procfile'), ['web: bin/web', 'Worker: bin/worker', 'just a command', 'web: again', 'empty:'].join('\n'));
    const err = errorOf(yaml('stacks:', '  shop: {procfile: Procfile}'), dir);
    expect(err.message.split('\n')).toEqual([
      'Procfile:2:1: stacks.shop.procfile: bad service name "Worker"',
      'Procfile:3:1: stacks.shop.procfile: expected "name: command"',
      'Procfile:4:1: stacks.shop.procfile: service "web" is listed twice (first at line 1)',
      'Procfile:5:7: stacks.shop.procfile: service "empty" has no command',
    ]);
  });

  it('a stack without services, and a bad stack name', () => {
    expect(firstLine(yaml('stacks:', '  shop: {secrets: [A]}'))).toBe('berth.yaml:2:3: stacks.shop: stack "shop" has no services');
    expect(firstLine(yaml('stacks:', '  Shop: {services: {web: x}}'))).toBe('berth.yaml:2:3: stacks.Shop: bad stack name "Shop"');
  });

  it('reports every problem at once, as a SpecFileError with details', () => {
    const err = errorOf(stack('      web: {cmd: x, dependsOn: [nope], bogus: 1}', '      Db: {cmd: y}'));
    expect(err).toBeInstanceOf(SpecFileError);
    expect(err.code).toBe('validation_failed');
    expect(err.issues.map((issue) => [issue.line, issue.column])).toEqual([
      [4, 33],
      [4, 40],
      [5, 7],
    ]);
  });

  it('reports YAML syntax errors alone', () => {
    expect(firstLine(yaml('stacks:', '  shop: {services: [}'))).toMatch(/^berth\.yaml:2:\d+: invalid YAML/);
  });
});

describe('parseStacksFile: reload', () => {
  const web = (line: string) => yaml('stacks:', '  shop:', '    services:', '      web:', '        cmd: x', line);
  const reloadOf = (line: string) => parseStacksFile(web(line), FILE, project)[0]?.services['web']?.reload;

  it('a mapping with signal, or the signal alone; with or without SIG, in any case', () => {
    expect(reloadOf('        reload: {signal: HUP}')).toEqual({ signal: 'SIGHUP' });
    expect(reloadOf('        reload: {signal: SIGUSR1}')).toEqual({ signal: 'SIGUSR1' });
    expect(reloadOf('        reload: HUP')).toEqual({ signal: 'SIGHUP' });
    expect(reloadOf('        reload: usr2')).toEqual({ signal: 'SIGUSR2' });
    // Absent, not undefined: a service's options are hashed.
    expect(parseStacksFile(web('        ports: [80]'), FILE, project)[0]?.services['web']).not.toHaveProperty('reload');
  });

  it('bad values, at the value', () => {
    expect(firstLine(web('        reload: TERM'))).toBe('berth.yaml:6:17: stacks.shop.services.web.reload: unknown reload signal "TERM"');
    expect(errorOf(web('        reload: TERM')).hint).toBe('Use one of SIGHUP, SIGUSR1, SIGUSR2.');
    expect(firstLine(web('        reload: {signal: KILL}'))).toBe('berth.yaml:6:26: stacks.shop.services.web.reload.signal: unknown reload signal "KILL"');
    expect(firstLine(web('        reload: {}'))).toBe('berth.yaml:6:9: stacks.shop.services.web.reload: missing signal');
    expect(errorOf(web('        reload: {sig: HUP}')).message.split('\n')).toEqual([
      'berth.yaml:6:9: stacks.shop.services.web.reload: missing signal',
      'berth.yaml:6:18: stacks.shop.services.web.reload: unknown key "sig" (expected one of signal)',
    ]);
    expect(firstLine(web('        reload: 1'))).toMatch(/^berth\.yaml:6:17: stacks\.shop\.services\.web\.reload: must be a signal name or a mapping \(signal\)/);
    expect(firstLine(web('        reload: [HUP]'))).toMatch(/^berth\.yaml:6:17: stacks\.shop\.services\.web\.reload: must be a signal name or a mapping \(signal\)/);
  });
});
