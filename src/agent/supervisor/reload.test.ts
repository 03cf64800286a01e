/** Reload without restart, and the env file (BERTH_ENV_FILE) it relies on: real processes, real signals. */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import type { ServiceSpec } from '../../protocol/messages.js';
import { parseDotenv } from '../../stacks/dotenv.js';
import { formatEnvFile, writeEnvFile } from './env-file.js';
import { reloadable } from './supervisor.js';
import { isAlive, makeSpec, Sandbox, statusOf, waitFor } from './test-helpers.js';

const box = new Sandbox();
afterAll(() => box.cleanup());

/** Values that break naive quoting: quotes, newlines, `$`, backslashes (also before n and at the end), `#`. */
const TRICKY: Record<string, string> = {
  QUOTES: `say "hi" and 'bye'`,
  LINES: 'one\ntwo\r\nthree\n',
  DOLLAR: '$HOME ${PATH} $(id) `id`',
  BACKSLASH: 'C:\\dir\\new \\n not a newline \\',
  HASH: 'a # not a comment',
  EMPTY: '',
  SPACES: '  padded  ',
  UNICODE: 'grüße ✓',
};

function readEnvFile(path: string): Record<string, string> {
  const { entries, issues } = parseDotenv(readFileSync(path, 'utf8'), path);
  expect(issues).toEqual([]);
  return Object.fromEntries(entries.map((e) => [e.name, e.value]));
}

/**
 * A service that, on SIGHUP, copies its env file to `<dir>/seen.N` (N counts the signals). It also
 * starts a child that SIGHUP would kill: the signal must reach the main process only.
 */
function hupService(name: string, env: Record<string, string>, overrides: Partial<ServiceSpec> = {}): ServiceSpec {
  const dir = box.path(name);
  const cmd = [
    `mkdir -p ${dir}`,
    // The trap before the child file: the test signals once it sees that file.
    `n=0; trap 'n=$((n+1)); cp "$BERTH_ENV_FILE" ${dir}/seen.tmp; mv ${dir}/seen.tmp ${dir}/seen.$n' HUP`,
    `sleep 1000 & echo $! > ${dir}/child.tmp; mv ${dir}/child.tmp ${dir}/child`,
    'while :; do sleep 0.02; done',
  ].join('; ');
  return makeSpec(name, cmd, { env, reload: { signal: 'SIGHUP' }, ...overrides });
}

describe('reload without restart', () => {
  it('an env-only change of a service with reload: its env file rewritten, SIGHUP to its main process, same pid', async () => {
    const sup = box.supervisor();
    const first = hupService('web', { GREETING: 'one' });
    await sup.converge([first]);
    const before = statusOf(sup, 'web');
    expect(before).toMatchObject({ state: 'ready', configHash: 'web-1', reloads: 0 });
    const child = Number(await waitFor('child pid', () => existsSync(box.path('web/child')) && readFileSync(box.path('web/child'), 'utf8')));
    const eventsBefore = box.events.length;

    await sup.converge([{ ...first, env: { GREETING: 'two', ...TRICKY }, configHash: 'web-2' }]);
    // Reported at once: the server waits for the new configHash.
    expect(statusOf(sup, 'web')).toMatchObject({ state: 'ready', pid: before.pid, configHash: 'web-2', reloads: 1, restarts: 0, reason: 'reloaded with SIGHUP' });
    expect(box.events.slice(eventsBefore).some((e) => e.name === 'web' && e.configHash === 'web-2')).toBe(true);
    expect(readEnvFile(await waitFor('the first reload seen', () => existsSync(box.path('web/seen.1')) && box.path('web/seen.1')))).toEqual({ GREETING: 'two', ...TRICKY });
    expect(isAlive(before.pid!), 'the main process survives its reload signal').toBe(true);
    expect(isAlive(child), 'its child is not signalled').toBe(true);
    // The process's own environment is the one it started with; the file is how it learns the new one.
    expect(readFileSync(`/proc/${before.pid}/environ`, 'latin1').split('\0')).toContain('GREETING=one');
    // The new spec is the one on disk too: a new agent would not reload it again.
    expect(JSON.parse(readFileSync(`${box.stateDir}/web.json`, 'utf8'))).toMatchObject({ spec: { configHash: 'web-2' }, reloads: 1 });

    await sup.converge([{ ...first, env: { GREETING: 'three' }, configHash: 'web-3' }]);
    expect(statusOf(sup, 'web')).toMatchObject({ pid: before.pid, configHash: 'web-3', reloads: 2 });
    expect(readEnvFile(await waitFor('the second reload seen', () => existsSync(box.path('web/seen.2')) && box.path('web/seen.2')))).toEqual({ GREETING: 'three' });
    expect(readFileSync(sup.logFiles('web').at(-1)!, 'utf8')).toContain(`berth: configuration web-3: SIGHUP to pid ${before.pid} (reload)`);
    await sup.stopAll();
  });

  it('a change of anything but env restarts the service, reload or not', async () => {
    const sup = box.supervisor();
    const first = hupService('api', { A: '1' });
    await sup.converge([first]);
    const pid = statusOf(sup, 'api').pid!;
    await sup.converge([{ ...first, cmd: `${first.cmd} # v2`, env: { A: '2' }, configHash: 'api-2' }]);
    const after = statusOf(sup, 'api');
    expect(after).toMatchObject({ state: 'ready', configHash: 'api-2', reloads: 0 });
    expect(after.pid).not.toBe(pid);
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(box.path('api/seen.1'))).toBe(false);
    expect(readEnvFile(`${box.stateDir}/api.env`)).toEqual({ A: '2' });
    await sup.stopAll();
  });

  it('a service without reload restarts on an env change, its env file written before it starts', async () => {
    const sup = box.supervisor();
    const out = box.path('plain.out');
    const first = makeSpec('plain', `cp "$BERTH_ENV_FILE" ${out}; exec sleep 1000`, { env: { V: 'old' } });
    await sup.converge([first]);
    const pid = statusOf(sup, 'plain').pid!;
    await sup.converge([{ ...first, env: { V: 'new $x "y"' }, configHash: 'plain-2' }]);
    const after = statusOf(sup, 'plain');
    expect(after.pid).not.toBe(pid);
    expect(isAlive(pid)).toBe(false);
    expect(after.reloads).toBe(0);
    await waitFor('the new run copied its env file', () => existsSync(out) && readEnvFile(out)['V'] === 'new $x "y"');
    await sup.stopAll();
  });

  it('a service still starting (not yet ready) is restarted: it may not handle the signal yet', async () => {
    const sup = box.supervisor();
    const flag = box.path('slow-ready');
    const first = hupService('slow', { A: '1' }, { ready: { command: `test -f ${flag}`, intervalMs: 20, timeoutSeconds: 30 } });
    const converging = sup.converge([first]);
    const pid = await waitFor('slow running', () => sup.status().find((s) => s.name === 'slow')?.pid ?? undefined);
    // Settles only once the new run is ready: awaited after the flag is there.
    const second = sup.converge([{ ...first, env: { A: '2' }, configHash: 'slow-2' }]);
    const restarted = await waitFor('slow restarted', () => {
      const s = statusOf(sup, 'slow');
      return s.pid !== null && s.pid !== pid && s;
    });
    expect(restarted).toMatchObject({ configHash: 'slow-2', reloads: 0 });
    writeFileSync(flag, '');
    await Promise.all([converging, second]);
    expect(isAlive(pid)).toBe(false);
    await sup.stopAll();
  });

  it('a removed service loses its env file', async () => {
    const sup = box.supervisor();
    await sup.converge([makeSpec('gone', 'exec sleep 1000', { env: { SECRET_TOKEN: 's3cret' } })]);
    expect(existsSync(`${box.stateDir}/gone.env`)).toBe(true);
    await sup.converge([]);
    expect(existsSync(`${box.stateDir}/gone.env`)).toBe(false);
  });
});

describe('reloadable', () => {
  const base = makeSpec('x', 'run', { env: { A: '1' }, reload: { signal: 'SIGUSR1' } });
  it('only when the new spec declares reload and nothing but env and configHash changed', () => {
    expect(reloadable(base, { ...base, env: { A: '2', B: '3' }, configHash: 'x-2' })).toBe(true);
    expect(reloadable(base, { ...base, env: { A: '2' }, reload: undefined })).toBe(false);
    expect(reloadable(base, { ...base, env: { A: '2' }, reload: { signal: 'SIGUSR2' } })).toBe(false);
    expect(reloadable(base, { ...base, ports: [8080] })).toBe(false);
    expect(reloadable(base, { ...base, restart: { ...base.restart, maxDelayMs: 1 } })).toBe(false);
    // Key order is not a difference (specs come from the wire and from state files).
    const reordered = Object.fromEntries(Object.entries(base).reverse()) as ServiceSpec;
    expect(reloadable(base, { ...reordered, env: { A: '9' } })).toBe(true);
  });
});

describe('the env file', () => {
  it('round-trips any value through the stacks dotenv parser', () => {
    const text = formatEnvFile(TRICKY);
    expect(text.split('\n').filter(Boolean)).toHaveLength(Object.keys(TRICKY).length); // one line per variable
    const { entries, issues } = parseDotenv(text, 'env');
    expect(issues).toEqual([]);
    expect(Object.fromEntries(entries.map((e) => [e.name, e.value]))).toEqual(TRICKY);
    expect(formatEnvFile({ B: '2', A: 'x"y' })).toBe('A="x\\"y"\nB="2"\n');
  });

  it('is written atomically with mode 0600, over a leftover temp file of any mode', () => {
    const path = box.path('mode.env');
    writeFileSync(`${path}.tmp`, 'junk', { mode: 0o644 });
    writeEnvFile(path, { K: 'v' });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readFileSync(path, 'utf8')).toBe('K="v"\n');
    expect(existsSync(`${path}.tmp`)).toBe(false);
    expect(statSync(path).uid).toBe(process.getuid?.());
  });

  it("a service's BERTH_ENV_FILE names its file in the state dir, mode 0600, holding spec.env only", async () => {
    const sup = box.supervisor();
    const out = box.path('named.out');
    await sup.converge([makeSpec('named', `echo "$BERTH_ENV_FILE" > ${out}; exec sleep 1000`, { env: { ONLY: 'me' } })]);
    const named = await waitFor('the service wrote its BERTH_ENV_FILE', () => existsSync(out) && readFileSync(out, 'utf8').trim());
    expect(named).toBe(`${box.stateDir}/named.env`);
    expect(statSync(named).mode & 0o777).toBe(0o600);
    expect(readEnvFile(named)).toEqual({ ONLY: 'me' });
    await sup.stopAll();
  });
});
