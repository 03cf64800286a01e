/** Modes from tags: which services a host runs, resolved with their layered env and config hashes. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import { canonicalJson, sha256 } from '../images/digests.js';
import { serviceSpec, type ServiceSpec } from '../protocol/messages.js';
import { readConfigLayers, type ConfigLayers } from './config.js';
import { MASK } from '../core/secret-names.js';
import { configProblems, maskSecrets, servicesForHost } from './modes.js';
import { parseStacksFile, type StackSpec } from './spec.js';

const KEY = 'tenant-key-for-tests';
const root = mkdtempSync(join(tmpdir(), 'berth-stacks-modes-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const BERTH_YAML = [
  'stacks:', // 1
  '  shop:', // 2
  '    config: config/', // 3
  '    secrets: [DB_USER]', // 4
  '    procfile: Procfile', // 5
  '    services:', // 6
  '      web:', // 7
  '        cmd: bin/web --port $PORT', // 8
  '        env: {PORT: "8080"}', // 9
  '        dependsOn: [db]', // 10
  '        ready: {http: 8080}', // 11
  '      db:', // 12
  '        cmd: postgres -D /var/lib/pg', // 13
  '        ready: {tcp: 5432}', // 14
].join('\n');

/** A project with berth.yaml, a Procfile and config files (path → content); its stack and config read back. */
function project(config: Record<string, string>, berthYaml = BERTH_YAML): { stack: StackSpec; layers: ConfigLayers } {
  const dir = mkdtempSync(join(root, 'project-'));
  writeFileSync(join(dir, 'berth.yaml'), berthYaml);
  writeFileSync(join(dir, 'Procfile'), 'worker: bin/worker\n');
  mkdirSync(join(dir, 'config'));
  for (const [path, content] of Object.entries(config)) {
    mkdirSync(dirname(join(dir, 'config', path)), { recursive: true });
    writeFileSync(join(dir, 'config', path), content);
  }
  const [stack] = parseStacksFile(berthYaml, 'berth.yaml', dir);
  if (!stack?.configDir) throw new Error('expected the stack with a config dir');
  return { stack, layers: readConfigLayers(stack.configDir.path, stack.configDir.label) };
}

const CONFIG = {
  'common/.env': 'DB_HOST=db.internal\nLOG_LEVEL=info\n',
  'env/prod/LOG_LEVEL': 'warn',
  'env/staging/LOG_LEVEL': 'debug',
  'services/db/DB_PASSWORD': 's3cret',
  'services/db/DB_USER': 'shop',
};
const review = { 'berth.stack': 'shop', 'berth.mode': 'review', 'berth.env': 'prod' };
const webOnly = { 'berth.stack': 'shop', 'berth.mode': 'service', 'berth.service': 'web', 'berth.env': 'prod' };
const byName = (services: ServiceSpec[]) => new Map(services.map((s) => [s.name, s]));

describe('servicesForHost', () => {
  const { stack, layers } = project(CONFIG);

  it('the same stack: every service on a review host, only web on a service=web host', () => {
    const all = servicesForHost(stack, layers, review, KEY);
    expect(all.problems).toEqual([]);
    expect(all.mode).toBe('review');
    expect(all.services.map((s) => s.name)).toEqual(['worker', 'web', 'db']);
    expect(byName(all.services).get('web')?.dependsOn).toEqual(['db']);

    const one = servicesForHost(stack, layers, webOnly, KEY);
    expect(one.problems).toEqual([]);
    expect(one.mode).toBe('service');
    expect(one.services.map((s) => s.name)).toEqual(['web']);
    // Its dependency runs on another host: waiting for it here would wait forever.
    expect(one.services[0]?.dependsOn).toEqual([]);
  });

  it('resolves each service fully: layered env, protocol defaults, and the server’s own configHash', () => {
    const { services, configs } = servicesForHost(stack, layers, { ...review, 'berth.env.LOG_LEVEL': 'trace' }, KEY);
    const web = byName(services).get('web');
    expect(web?.env).toEqual({ DB_HOST: 'db.internal', LOG_LEVEL: 'trace', PORT: '8080' });
    expect(web?.ready).toEqual({ http: { port: 8080, path: '/' }, timeoutSeconds: 30, intervalMs: 200 });
    expect(web?.restart).toMatchObject({ policy: 'always', initialDelayMs: 100 });
    expect(configs['web']?.sources).toEqual({ DB_HOST: 'config/common/.env:1', LOG_LEVEL: 'host override', PORT: 'service web (berth.yaml:9:15)' });
    expect(byName(services).get('db')?.env).toEqual({ DB_HOST: 'db.internal', DB_PASSWORD: 's3cret', DB_USER: 'shop', LOG_LEVEL: 'trace' });
    for (const service of services) {
      const { configHash, ...rest } = serviceSpec.parse(service);
      expect(configHash).toBe(createHmac('sha256', KEY).update(canonicalJson(rest)).digest('hex').slice(0, 16));
      // Keyed: a plain digest of the env would let a weak secret be guessed offline from the hash.
      expect(configHash).not.toBe(sha256(canonicalJson(rest)).slice(0, 16));
    }
    const otherTenant = servicesForHost(stack, layers, { ...review, 'berth.env.LOG_LEVEL': 'trace' }, 'another-key');
    expect(byName(otherTenant.services).get('web')?.configHash).not.toBe(byName(services).get('web')?.configHash);
  });

  it('berth.env picks the environment layer', () => {
    const level = (env: string) => byName(servicesForHost(stack, layers, { ...review, 'berth.env': env }, KEY).services).get('db')?.env['LOG_LEVEL'];
    expect(level('prod')).toBe('warn');
    expect(level('staging')).toBe('debug');
  });

  it('an unknown service is a problem, and the host gets no services', () => {
    const result = servicesForHost(stack, layers, { ...webOnly, 'berth.service': 'api' }, KEY);
    expect(result).toEqual({ services: [], mode: 'service', problems: ['stack shop has no service api (it has: worker, web, db)'], configs: {} });
    expect(servicesForHost(stack, layers, { ...webOnly, 'berth.service': 'constructor' }, KEY).problems).toEqual(['stack shop has no service constructor (it has: worker, web, db)']);
  });

  it('other bad tags are problems too, and change nothing', () => {
    const problems = (tags: Record<string, string>) => servicesForHost(stack, layers, tags, KEY);
    expect(problems({ ...review, 'berth.env': 'qa' })).toMatchObject({ services: [], problems: ['stack shop has no environment qa (its config has: prod, staging)'] });
    expect(problems({ ...review, 'berth.env.bad-name': 'x' })).toMatchObject({ services: [], problems: [expect.stringMatching(/^tag berth\.env\.bad-name: "bad-name" is not a valid variable name/)] });
    expect(problems({ 'berth.stack': 'shop' })).toMatchObject({ mode: 'none', services: [], problems: ['host is tagged berth.stack=shop but has no berth.mode tag (review or service)'] });
    expect(problems({ 'berth.stack': 'shop', 'berth.mode': 'all' }).problems).toEqual(['unknown berth.mode "all" (expected review or service)']);
    expect(problems({ 'berth.stack': 'shop', 'berth.mode': 'service' }).problems[0]).toMatch(/names no service/);
  });

  it('a host of another stack, or of none, runs nothing of this one', () => {
    expect(servicesForHost(stack, layers, { ...review, 'berth.stack': 'blog' }, KEY)).toEqual({ services: [], mode: 'none', problems: [], configs: {} });
    expect(servicesForHost(stack, layers, {}, KEY)).toEqual({ services: [], mode: 'none', problems: [], configs: {} });
  });

  it("changing only db's env changes only db's configHash", () => {
    const before = byName(servicesForHost(stack, layers, review, KEY).services);
    const changed = project({ ...CONFIG, 'services/db/DB_USER': 'shop2' });
    const after = byName(servicesForHost(changed.stack, changed.layers, review, KEY).services);
    expect(after.get('db')?.configHash).not.toBe(before.get('db')?.configHash);
    expect(after.get('web')?.configHash).toBe(before.get('web')?.configHash);
    expect(after.get('worker')?.configHash).toBe(before.get('worker')?.configHash);
    // A common value reaches every service.
    const common = project({ ...CONFIG, 'common/.env': 'DB_HOST=db2.internal\nLOG_LEVEL=info\n' });
    const everyone = byName(servicesForHost(common.stack, common.layers, review, KEY).services);
    for (const name of ['worker', 'web', 'db']) expect(everyone.get(name)?.configHash).not.toBe(before.get(name)?.configHash);
  });

  it("a service's reload is in its resolved spec and its hash; an env change leaves the rest of the spec equal", () => {
    const withReload = BERTH_YAML.replace('        ready: {http: 8080}', '        ready: {http: 8080}\n        reload: HUP');
    const plain = byName(servicesForHost(stack, layers, review, KEY).services).get('web');
    const before = project(CONFIG, withReload);
    const after = project({ ...CONFIG, 'env/prod/LOG_LEVEL': 'error' }, withReload);
    const web = byName(servicesForHost(before.stack, before.layers, review, KEY).services).get('web');
    const changed = byName(servicesForHost(after.stack, after.layers, review, KEY).services).get('web');
    if (!web || !changed) throw new Error('expected web');
    expect(web.reload).toEqual({ signal: 'SIGHUP' });
    expect(plain).not.toHaveProperty('reload');
    expect(web.configHash).not.toBe(plain?.configHash);
    // What the supervisor compares to decide on a reload rather than a restart.
    expect(changed.configHash).not.toBe(web.configHash);
    const { env: _a, configHash: _b, ...rest } = web;
    const { env: _c, configHash: _d, ...changedRest } = changed;
    expect(changedRest).toEqual(rest);
  });

  it('the service-mode web has the same env as on a review host, but its own hash (no dependsOn)', () => {
    const reviewWeb = byName(servicesForHost(stack, layers, review, KEY).services).get('web');
    const serviceWeb = servicesForHost(stack, layers, webOnly, KEY).services[0];
    expect(serviceWeb?.env).toEqual(reviewWeb?.env);
    expect(serviceWeb?.configHash).not.toBe(reviewWeb?.configHash);
  });
});

describe('maskSecrets', () => {
  const { stack, layers } = project(CONFIG);
  const db = servicesForHost(stack, layers, review, KEY).configs['db'];
  if (!db) throw new Error('expected db');

  it("masks the stack's secrets and names that say they are secret, unless asked", () => {
    const masked = maskSecrets(db, stack.secrets, false);
    expect(masked.env).toEqual({ DB_HOST: 'db.internal', DB_PASSWORD: MASK, DB_USER: MASK, LOG_LEVEL: 'warn' });
    expect(masked.masked).toEqual(['DB_PASSWORD', 'DB_USER']);
    expect(masked.hash).toBe(db.hash);
    expect(masked.sources).toEqual(db.sources);
    expect(db.env['DB_PASSWORD']).toBe('s3cret'); // the config itself is untouched
    const shown = maskSecrets(db, stack.secrets, true);
    expect(shown.env['DB_PASSWORD']).toBe('s3cret');
    expect(shown.masked).toEqual([]);
  });

  it('recognises secret-looking names in any case', () => {
    const config = { env: { api_key: 'a', GITHUB_TOKEN: 'b', Passwd: 'c', SSH_PRIVATE_KEY: 'd', AWS_SECRET: 'e', HOME: '/root' }, sources: {}, unset: [], hash: 'x' };
    expect(maskSecrets(config, [], false).masked).toEqual(['api_key', 'GITHUB_TOKEN', 'Passwd', 'SSH_PRIVATE_KEY', 'AWS_SECRET']);
  });
});

describe('configProblems', () => {
  it('names service directories for services the stack does not have', () => {
    const { stack, layers } = project({ ...CONFIG, 'services/wbe/A': '1' });
    expect(configProblems(stack, layers)).toEqual(['config/services/wbe: stack shop has no service wbe (it has: worker, web, db)']);
  });
});
