import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import type { ServiceSpec } from '../../protocol/messages.js';
import { InvalidServiceSetError } from './errors.js';
import { freePort, isAlive, makeSpec, Sandbox, statusOf, waitFor } from './test-helpers.js';

const box = new Sandbox();
afterAll(() => box.cleanup());

describe('restart policy with real processes', () => {
  it('a crashing service is restarted with growing delays, then failed; restarts and last exit are visible', async () => {
    const sup = box.supervisor();
    const spec = makeSpec('crasher', 'echo boom; exit 3', {
      restart: { policy: 'always', initialDelayMs: 100, factor: 2, crashLoopLimit: 4 },
    });
    const first = box.events.length;
    await sup.converge([spec]);
    const final = await waitFor('crasher failed', () => statusOf(sup, 'crasher').state === 'failed' && statusOf(sup, 'crasher'));
    expect(final).toMatchObject({ restarts: 3, pid: null, reason: 'crashed 4 times in a row (last: exit code 3)' });
    expect(final.lastExit).toMatchObject({ code: 3, signal: null });
    // Time spent in backoff before each restart: 100, 200, 400 ms.
    const events = box.events.slice(first).filter((e) => e.name === 'crasher');
    const waits: number[] = [];
    events.forEach((e, i) => {
      const next = events[i + 1];
      if (e.state === 'backoff' && next?.state === 'starting') waits.push(Date.parse(next.since) - Date.parse(e.since));
    });
    expect(waits).toHaveLength(3);
    waits.forEach((w, i) => expect(w).toBeGreaterThanOrEqual([100, 200, 400][i]! - 5));
    expect(waits[1]!).toBeGreaterThan(waits[0]!);
    expect(waits[2]!).toBeGreaterThan(waits[1]!);
    const log = readFileSync(sup.logFiles('crasher').at(-1)!, 'utf8');
    expect(log.match(/Z boom$/gm)).toHaveLength(4);
    expect(log).toContain('berth: crashed 4 times in a row (last: exit code 3)');
  });

  it('a run that lasted resetAfterSeconds resets the crash count', async () => {
    const sup = box.supervisor();
    const spec = makeSpec('steady', 'sleep 0.25; exit 1', {
      restart: { policy: 'always', initialDelayMs: 20, resetAfterSeconds: 0.2, crashLoopLimit: 2 },
    });
    await sup.converge([spec]);
    await waitFor('3 restarts', () => statusOf(sup, 'steady').restarts >= 3);
    expect(statusOf(sup, 'steady').state).not.toBe('failed');
    await sup.stop('steady');
  });

  it('on-failure leaves a clean exit stopped; never marks a failure failed', async () => {
    const sup = box.supervisor();
    await sup.converge([
      makeSpec('oneshot', 'exit 0', { restart: { policy: 'on-failure' } }),
      makeSpec('never', 'exit 7', { restart: { policy: 'never' } }),
    ]);
    await waitFor('both settled', () => sup.status().every((s) => s.state === 'stopped' || s.state === 'failed'));
    expect(statusOf(sup, 'oneshot')).toMatchObject({ state: 'stopped', restarts: 0, reason: 'exited (exit code 0); restart policy on-failure' });
    expect(statusOf(sup, 'never')).toMatchObject({ state: 'failed', restarts: 0, lastExit: { code: 7 } });
  });
});

describe('stopping', () => {
  it('a service that ignores TERM is KILLed with its children after stopTimeout, escaped ones too', async () => {
    const sup = box.supervisor();
    const childFile = box.path('stubborn.child');
    const escapedFile = box.path('stubborn.escaped');
    // The escaped process writes its own pid: setsid(1) forks when it is started as a process group
    // leader, and then $! would be the pid of a setsid that has exited.
    const cmd = `trap '' TERM; sleep 1000 & echo $! > ${childFile}; setsid sh -c 'echo $$ > ${escapedFile}.tmp && mv ${escapedFile}.tmp ${escapedFile} && exec sleep 1001' & wait`;
    await sup.converge([makeSpec('stubborn', cmd, { stopTimeoutSeconds: 0.5 })]);
    const pid = statusOf(sup, 'stubborn').pid!;
    // Both files are complete once they end in a newline (echo writes the pid and the newline at once).
    const read = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8') : '');
    await waitFor('child and escaped pids', () => read(childFile).endsWith('\n') && read(escapedFile).endsWith('\n'));
    const child = Number(read(childFile));
    const escaped = Number(read(escapedFile));
    expect([pid, child, escaped].every(isAlive)).toBe(true);
    const t0 = performance.now();
    const status = await sup.stop('stubborn');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(450);
    expect(status).toMatchObject({ state: 'stopped', pid: null, lastExit: { signal: 'SIGKILL' } });
    expect([pid, child, escaped].filter(isAlive)).toEqual([]);
  });

  it('a stop sends the stop signal once: a TERM trap runs once (a second TERM is "stop now" to many programs)', async () => {
    const sup = box.supervisor();
    const names = ['once-a', 'once-b', 'once-c'];
    await sup.converge(names.map((name) => makeSpec(name, `trap 'echo trapped >> ${box.path(name)}; sleep 0.3; exit 0' TERM; sleep 1000 & wait`)));
    await Promise.all(names.map((name) => sup.stop(name)));
    expect(names.map((name) => readFileSync(box.path(name), 'utf8'))).toEqual(['trapped\n', 'trapped\n', 'trapped\n']);
    expect(box.processes(names)).toEqual([]);
  });

  it('stopAll stops everything, dependents first, and leaves no process', async () => {
    const sup = box.supervisor();
    const order = box.path('stop-order');
    const svc = (name: string, deps: string[]) =>
      makeSpec(name, `trap 'echo ${name} >> ${order}; exit 0' TERM; sleep 1000 & wait`, { dependsOn: deps });
    await sup.converge([svc('db', []), svc('api', ['db']), svc('web', ['api']), svc('worker', ['db'])]);
    const pids = sup.status().map((s) => s.pid!);
    expect(pids.every(isAlive)).toBe(true);
    await sup.stopAll();
    expect(sup.status().map((s) => s.state)).toEqual(['stopped', 'stopped', 'stopped', 'stopped']);
    const stopped = readFileSync(order, 'utf8').trim().split('\n');
    expect(stopped.indexOf('web')).toBeLessThan(stopped.indexOf('api'));
    expect(stopped.indexOf('api')).toBeLessThan(stopped.indexOf('db'));
    expect(stopped.indexOf('worker')).toBeLessThan(stopped.indexOf('db'));
    expect(pids.filter(isAlive)).toEqual([]);
    expect(box.processes(['db', 'api', 'web', 'worker'])).toEqual([]);
  });
});

describe('dependencies and readiness', () => {
  it('B starts only once A is ready (A becomes ready when it has created a file)', async () => {
    const sup = box.supervisor();
    const flag = box.path('a-ready');
    const bStarted = box.path('b-started');
    await sup.converge([
      makeSpec('b', `touch ${bStarted}; exec sleep 1000`, { dependsOn: ['a'] }),
      makeSpec('a', `sleep 0.4; touch ${flag}; exec sleep 1000`, { ready: { command: `test -f ${flag}`, intervalMs: 50 } }),
    ]);
    expect(sup.status().map((s) => [s.name, s.state])).toEqual([
      ['a', 'ready'],
      ['b', 'ready'],
    ]);
    await waitFor('b to run', () => existsSync(bStarted));
    expect(statSync(bStarted).mtimeMs).toBeGreaterThanOrEqual(statSync(flag).mtimeMs);
    const events = box.events.filter((e) => e.name === 'a' || e.name === 'b');
    const aReady = events.findIndex((e) => e.name === 'a' && e.state === 'ready');
    const bFirstPid = events.findIndex((e) => e.name === 'b' && e.pid !== null);
    expect(events.some((e) => e.name === 'b' && e.state === 'starting' && e.reason === 'waiting for a to be ready')).toBe(true);
    expect(aReady).toBeGreaterThanOrEqual(0);
    expect(bFirstPid).toBeGreaterThan(aReady);
    await sup.stopAll();
  });

  it('a ready check that never passes fails the service with the reason; its dependents never start', async () => {
    const sup = box.supervisor();
    const port = await freePort();
    const depStarted = box.path('dep-started');
    await sup.converge([
      makeSpec('web', 'exec sleep 1000', { ready: { tcp: { port }, timeoutSeconds: 0.5, intervalMs: 50 } }),
      makeSpec('proxy', `touch ${depStarted}; exec sleep 1000`, { dependsOn: ['web'] }),
      makeSpec('edge', `touch ${depStarted}; exec sleep 1000`, { dependsOn: ['proxy'] }),
    ]);
    const web = statusOf(sup, 'web');
    expect(web).toMatchObject({ state: 'failed', pid: null, reason: `not ready within 0.5 s: tcp 127.0.0.1:${port} refused` });
    expect(statusOf(sup, 'proxy')).toMatchObject({ state: 'stopped', pid: null, reason: 'dependency web failed' });
    expect(statusOf(sup, 'edge')).toMatchObject({ state: 'stopped', pid: null, reason: 'dependency proxy cannot start' });
    expect(existsSync(depStarted)).toBe(false);
    expect(box.processes(['web', 'proxy', 'edge'])).toEqual([]);
  });

  it('bad sets (cycle, unknown dependency, bad env name, unknown user) are refused and change nothing', async () => {
    const sup = box.supervisor();
    await sup.converge([makeSpec('keeper', 'exec sleep 1000')]);
    const before = sup.status();
    const attempts: Array<[ServiceSpec[], string]> = [
      [[makeSpec('x', 'true', { dependsOn: ['y'] }), makeSpec('y', 'true', { dependsOn: ['x'] })], 'dependency cycle: x -> y -> x'],
      [[makeSpec('x', 'true', { dependsOn: ['nope'] })], 'service "x" depends on unknown service "nope"'],
      [[makeSpec('x', 'true', { env: { '1BAD': 'v' } })], 'service "x": env var name "1BAD" is not a valid identifier'],
      [[makeSpec('x', 'true', { user: 'no-such-user-here' })], 'user "no-such-user-here" does not exist'],
    ];
    for (const [specs, message] of attempts) {
      const error = await sup.converge(specs).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidServiceSetError);
      expect((error as Error).message).toContain(message);
      expect(sup.status()).toEqual(before);
    }
    expect(readdirSync(box.stateDir).filter((f) => f.startsWith('x.'))).toEqual([]);
    await sup.stopAll();
  });
});

describe('converge', () => {
  it('restarts only the service whose configHash changed; removes the one no longer wanted', async () => {
    const sup = box.supervisor();
    const specs = [makeSpec('c1', 'exec sleep 1000'), makeSpec('c2', 'exec sleep 1000', { dependsOn: ['c1'] }), makeSpec('c3', 'exec sleep 1000')];
    await sup.converge(specs);
    const pid = (name: string) => statusOf(sup, name).pid!;
    const before = { c1: pid('c1'), c2: pid('c2'), c3: pid('c3') };
    await sup.converge([specs[0]!, { ...specs[1]!, env: { NEW: '1' }, configHash: 'c2-2' }, specs[2]!]);
    expect(pid('c1')).toBe(before.c1);
    expect(pid('c3')).toBe(before.c3);
    expect(pid('c2')).not.toBe(before.c2);
    expect(isAlive(before.c2)).toBe(false);
    await waitFor('c2 with its new env', () => readFileSync(`/proc/${pid('c2')}/environ`, 'latin1').split('\0').includes('NEW=1'));
    await sup.converge([specs[0]!, { ...specs[1]!, env: { NEW: '1' }, configHash: 'c2-2' }]);
    expect(sup.status().map((s) => s.name)).toEqual(['c1', 'c2']);
    expect(isAlive(before.c3)).toBe(false);
    expect(existsSync(`${box.stateDir}/c3.json`)).toBe(false);
    await sup.stopAll();
  });
});

describe('logs', () => {
  it('rotate at maxBytes while the service writes; lines timestamped; follow sees every line across rotations', async () => {
    const sup = box.supervisor();
    const go = box.path('chatty-go');
    const cmd = `while [ ! -f ${go} ]; do sleep 0.02; done; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "line $i"; done; exec sleep 1000`;
    await sup.converge([makeSpec('chatty', cmd, { logs: { maxBytes: 4096, keep: 2 } })]);
    const followed: string[] = [];
    const ac = new AbortController();
    const following = (async () => {
      for await (const line of sup.logs('chatty', { follow: true, tailLines: 0, signal: ac.signal })) {
        followed.push(line);
        if (line.endsWith(' line 3000')) ac.abort();
      }
    })();
    writeFileSync(go, '');
    await following;
    const numbered = (lines: string[]) => lines.filter((l) => / line \d+$/.test(l)).map((l) => Number(l.split(' line ')[1]));
    expect(numbered(followed)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));

    const files = sup.logFiles('chatty');
    expect(files.map((f) => f.slice(box.logDir.length + 1))).toEqual(['chatty.log.2', 'chatty.log.1', 'chatty.log']);
    expect(existsSync(`${box.logDir}/chatty.log.3`)).toBe(false);
    const retained = files.flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean));
    for (const f of files) expect(statSync(f).size).toBeLessThanOrEqual(4096);
    for (const line of retained) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (line \d+|berth: .*)$/);
    // Only what rotation dropped is missing: the retained lines are the last ones, with no gap.
    const kept = numbered(retained);
    expect(kept.at(-1)).toBe(3000);
    expect(kept).toEqual(kept.map((_, i) => 3000 - kept.length + 1 + i));
    expect(kept.length).toBeGreaterThan(150);
    await sup.stopAll();
  });
});
