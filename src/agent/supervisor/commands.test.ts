import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { UnknownServiceError } from './errors.js';
import { resolveUser } from './user.js';
import { isAlive, makeSpec, Sandbox, sleep, statusOf, waitFor } from './test-helpers.js';

const box = new Sandbox();
afterAll(() => box.cleanup());

describe('start, stop, restart by name', () => {
  it('start leaves a running service alone; stop and restart act on one service only', async () => {
    const sup = box.supervisor();
    await sup.converge([makeSpec('one', 'exec sleep 1000'), makeSpec('two', 'exec sleep 1000', { dependsOn: ['one'] })]);
    const pid = statusOf(sup, 'one').pid!;
    expect(await sup.start('one')).toMatchObject({ state: 'ready', pid });
    const twoPid = statusOf(sup, 'two').pid!;

    expect(await sup.stop('one')).toMatchObject({ state: 'stopped', pid: null, reason: 'stopped on request' });
    expect(isAlive(pid)).toBe(false);
    expect(statusOf(sup, 'two').pid).toBe(twoPid); // dependencies order starts; they do not bind lifetimes

    const restarted = await sup.restart('two');
    expect(restarted.pid).not.toBe(twoPid);
    expect(restarted).toMatchObject({ state: 'stopped', reason: 'dependency one is stopped' });
    const started = await sup.start('one');
    expect(started.state).toBe('ready');
    await waitFor('two started after one', () => statusOf(sup, 'two').state === 'ready');
    expect(() => sup.logFiles('three')).toThrow(UnknownServiceError);
    await expect(sup.stop('three')).rejects.toThrow('unknown service "three"');
    await sup.stopAll();
  });

  it('a failed service starts again on request with a fresh crash count', async () => {
    const sup = box.supervisor();
    const flag = box.path('fixed');
    const spec = makeSpec('flaky', `test -f ${flag} || exit 1; exec sleep 1000`, {
      restart: { policy: 'always', initialDelayMs: 10, crashLoopLimit: 2 },
    });
    await sup.converge([spec]);
    await waitFor('flaky failed', () => statusOf(sup, 'flaky').state === 'failed');
    writeFileSync(flag, '');
    expect(await sup.start('flaky')).toMatchObject({ state: 'ready' });
    await sup.stopAll();
  });
});

describe('how a service runs', () => {
  it('as its user, in its cwd, with its env on top of the agent env', async () => {
    const sup = box.supervisor();
    const nobody = resolveUser('nobody');
    await sup.converge([makeSpec('asuser', 'exec sleep 1000', { user: 'nobody', cwd: '/tmp', env: { GREETING: 'hi there' } })]);
    const pid = statusOf(sup, 'asuser').pid!;
    const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    expect(Number(uid)).toBe(nobody.uid);
    // Read once `sh -c` has exec'd sleep (environ reads empty during an exec).
    const env = await waitFor('sleep to run', () => {
      const entries = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep' && entries.length > 1 && entries;
    });
    expect(env).toEqual(expect.arrayContaining(['GREETING=hi there', 'BERTH_SERVICE=asuser', `HOME=${nobody.home}`, `PATH=${process.env['PATH']}`]));
    await sup.stopAll();
  });

  it('a missing cwd fails the start with a clear reason', async () => {
    const sup = box.supervisor();
    await sup.converge([makeSpec('nowhere', 'true', { cwd: '/does/not/exist' })]);
    expect(statusOf(sup, 'nowhere')).toMatchObject({
      state: 'failed',
      pid: null,
      reason: 'could not start: working directory /does/not/exist does not exist',
    });
  });
});

describe('logs', () => {
  it('non-follow reads the retained lines, or only the last N', async () => {
    const sup = box.supervisor();
    await sup.converge([makeSpec('talker', 'for i in 1 2 3 4 5; do echo "said $i"; done; exec sleep 1000', { logs: { timestamps: false } })]);
    await waitFor('5 lines', () => readFileSync(sup.logFiles('talker').at(-1)!, 'utf8').includes('said 5'));
    const all: string[] = [];
    for await (const line of sup.logs('talker')) all.push(line);
    expect(all.filter((l) => l.startsWith('said'))).toEqual(['said 1', 'said 2', 'said 3', 'said 4', 'said 5']);
    const tail: string[] = [];
    for await (const line of sup.logs('talker', { tailLines: 2 })) tail.push(line);
    expect(tail).toEqual(['said 4', 'said 5']);
    await sup.stopAll();
  });
});

describe('idle cost', () => {
  it('20 idle services (10 of them adopted, polled) cost the agent next to no CPU', async () => {
    const first = box.supervisor();
    const specs = Array.from({ length: 20 }, (_, i) => makeSpec(`idle${i}`, 'exec sleep 1000'));
    await first.converge(specs.slice(0, 10));
    first.detach();
    const sup = box.supervisor();
    await sup.converge(specs);
    await sleep(200);
    const before = process.cpuUsage();
    await sleep(1000);
    const used = process.cpuUsage(before);
    console.log(`idle supervisor CPU over 1 s: ${(used.user + used.system) / 1000} ms`);
    expect((used.user + used.system) / 1000).toBeLessThan(50);
    expect(sup.status().every((s) => s.state === 'ready')).toBe(true);
    await sup.stopAll();
  });
});
