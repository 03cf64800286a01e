/**
 * The sleeper against the store, with placements and releases recorded in memory: the order of a
 * sleep (route first, then the hosts), one wake for many callers, a failed wake given back and
 * remembered for a few seconds, the idle sweep, and what a server restart finds mid-sleep or
 * mid-wake.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import type { RouteSpec, RouteView } from '../router/router.js';
import { DEFAULT_TENANT } from '../store/migrations.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import { readyEnvironment, useEnvironmentsRepo } from '../../test/helpers/environments.js';
import { rejection } from '../../test/helpers/errors.js';
import { EnvironmentSleeper, parseSleepAfter, type SleepDeps } from './sleep.js';

const T = DEFAULT_TENANT;

describe('environment sleep', () => {
  const repo = useEnvironmentsRepo();
  let steps: string[];
  let routes: Map<string, RouteSpec>;
  let idle: Map<string, number>;
  let failWake: Error | undefined;
  let wakeDelayMs: number;
  let nextHost: number;

  const deps = (): SleepDeps => ({
    envs: repo.envs,
    router: {
      setRoute: (name, spec) => {
        routes.set(name, spec);
        steps.push(`route ${name} ${spec.wake ? 'asleep' : spec.backends.map((b) => b.id).join(',')}`);
        return { name } as RouteView;
      },
      idleMs: (name) => idle.get(name),
    },
    placeAgain: async (row, claimed: EnvHostRecord[], _balanced, _deadline) => {
      steps.push(`place ${row.name}`);
      const hostId = `${row.name}-w${nextHost++}`;
      claimed.push({ hostId, service: null, generation: (row.route?.generation ?? 0) + 1 });
      await repo.envs.setHosts(T, row.name, claimed);
      await new Promise((r) => setTimeout(r, wakeDelayMs));
      if (failWake) throw failWake;
      routes.set(row.name, { backends: [{ id: hostId, url: 'http://10.0.0.9:8080' }] });
      return { timings: { claimMs: 1.04, totalMs: 2 }, route: { service: 'web', port: 8080, healthPath: '/', generation: (row.route?.generation ?? 0) + 1 } };
    },
    release: (row, hosts, why) => {
      steps.push(`release ${hosts.map((h) => h.hostId).join(',')} (${why})`);
      return Promise.resolve();
    },
    guardOf: () => ({}),
    drainMs: 0,
    log: (line) => steps.push(`log ${line}`),
  });
  const get = async (name: string): Promise<EnvironmentRow> => {
    const row = await repo.envs.get(T, name);
    if (!row) throw new Error(`no ${name}`);
    return row;
  };

  beforeEach(() => {
    steps = [];
    routes = new Map();
    idle = new Map();
    failWake = undefined;
    wakeDelayMs = 0;
    nextHost = 1;
  });

  it('reads sleep-after durations within bounds', () => {
    expect(parseSleepAfter('15m')).toBe(900_000);
    expect(parseSleepAfter('7d')).toBe(604_800_000);
    for (const bad of ['0.5s', '8d', 'soon', '']) expect(() => parseSleepAfter(bad)).toThrow(BerthError);
  });

  it('routes requests to the wake before it lets go of the hosts, and records none after', async () => {
    const sleeper = new EnvironmentSleeper(deps());
    const row = await readyEnvironment(repo.envs, 'a');
    const asleep = await sleeper.sleep(row, 'put to sleep by request');
    expect(steps).toEqual(['route a asleep', 'release a-1,a-2 (environment a went to sleep (put to sleep by request))']);
    expect(asleep.hosts).toEqual([]);
    expect(await get('a')).toMatchObject({ state: 'sleeping', state_reason: 'put to sleep by request', hosts: [] });
    // Asleep already: the same answer, nothing done twice.
    expect((await sleeper.sleep(row, 'again')).state).toBe('sleeping');
    expect(steps).toHaveLength(2);
  });

  it('wakes once for many callers, as a wake operation with its timings', async () => {
    const sleeper = new EnvironmentSleeper(deps());
    await sleeper.sleep(await readyEnvironment(repo.envs, 'b'), 'idle');
    wakeDelayMs = 30;
    const rows = await Promise.all(Array.from({ length: 5 }, () => sleeper.wake(T, 'b', { why: 'woken by a request' })));
    expect(steps.filter((s) => s.startsWith('place'))).toEqual(['place b']);
    expect(new Set(rows.map((r) => r.hosts[0]?.hostId))).toEqual(new Set(['b-w1']));
    const row = await get('b');
    expect(row).toMatchObject({ state: 'ready', operation: 'wake', state_reason: 'woken by a request', hosts: [{ hostId: 'b-w1', service: null, generation: 1 }] });
    expect(row.timings).toMatchObject({ claimMs: 1, totalMs: expect.any(Number) as number });
    // Awake: a wake changes nothing.
    expect((await sleeper.wake(T, 'b', { why: 'again' })).hosts).toEqual(row.hosts);
    expect(steps.filter((s) => s.startsWith('place'))).toHaveLength(1);
  });

  it('gives back what a failed wake claimed, stays asleep with the reason, and waits a few seconds before trying again unless asked', async () => {
    const sleeper = new EnvironmentSleeper(deps());
    await sleeper.sleep(await readyEnvironment(repo.envs, 'c'), 'idle');
    steps = [];
    failWake = new BerthError('pool_empty', 'pool s has no ready host', 'Wait.');
    expect(await rejection(sleeper.wake(T, 'c', { why: 'woken by a request' }))).toMatchObject({ code: 'pool_empty' });
    expect(steps).toEqual(['place c', 'route c asleep', 'release c-w1 (environment c: could not wake: pool s has no ready host)']);
    expect(await get('c')).toMatchObject({ state: 'sleeping', state_reason: 'could not wake: pool s has no ready host', hosts: [] });
    failWake = undefined;
    expect(await rejection(sleeper.wake(T, 'c', { why: 'woken by a request' }))).toMatchObject({ code: 'pool_empty' });
    expect(steps.filter((s) => s.startsWith('place'))).toHaveLength(1);
    expect((await sleeper.wake(T, 'c', { why: 'woken by request', retryNow: true })).state).toBe('ready');
  });

  it('puts to sleep only environments idle past their sleep-after, and refuses to sleep one that is not ready', async () => {
    const sleeper = new EnvironmentSleeper(deps());
    for (const [name, after] of [['d1', 1000], ['d2', 60_000]] as const) {
      await readyEnvironment(repo.envs, name);
      await repo.envs.setOptions(T, name, { sleepAfterMs: after }, ['ready']);
      idle.set(name, 5000);
    }
    await readyEnvironment(repo.envs, 'd3'); // never sleeps
    idle.set('d3', 1e9);
    expect(await sleeper.sweep()).toEqual(['d1']);
    expect(await get('d1')).toMatchObject({ state: 'sleeping', state_reason: 'no request for 5s' });
    expect((await get('d2')).state).toBe('ready');
    expect((await get('d3')).state).toBe('ready');
    await repo.envs.transition(T, 'd2', ['ready'], 'deploying');
    expect(await rejection(sleeper.sleep(await get('d2'), 'by hand'))).toMatchObject({ code: 'conflict', message: 'environment d2 is deploying' });
  });

  it('after a restart, finishes a sleep and gives back the hosts of a wake cut short, routing both asleep', async () => {
    const sleeper = new EnvironmentSleeper(deps());
    await readyEnvironment(repo.envs, 'e1');
    // A sleep cut short: asleep, its hosts still listed.
    const mid = await repo.envs.transition(T, 'e1', ['ready'], 'sleeping', { reason: 'idle' });
    // A wake cut short: one host claimed and recorded.
    await readyEnvironment(repo.envs, 'e2');
    await repo.envs.transition(T, 'e2', ['ready'], 'sleeping', { hosts: [] });
    await repo.envs.transition(T, 'e2', ['sleeping'], 'waking', { reason: 'woken by a request' });
    await repo.envs.setHosts(T, 'e2', [{ hostId: 'e2-w9', service: null, generation: 2 }]);
    await sleeper.recover(mid ?? (await get('e1')));
    await sleeper.recover(await get('e2'));
    expect(steps).toEqual([
      'release e1-1,e1-2 (environment e1 went to sleep (idle))',
      'route e1 asleep',
      'release e2-w9 (environment e2: its wake was cut short by a server restart)',
      'route e2 asleep',
    ]);
    expect(await get('e1')).toMatchObject({ state: 'sleeping', hosts: [] });
    expect(await get('e2')).toMatchObject({ state: 'sleeping', hosts: [], state_reason: 'a wake was cut short by a server restart' });
    // The route's wake is the sleeper's: a request would bring it back.
    await routes.get('e2')?.wake?.();
    expect((await get('e2')).state).toBe('ready');
  });
});
