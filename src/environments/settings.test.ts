/**
 * Settings changes against the store, with hosts that keep their tags in memory: the order of the
 * work (host by host, each back in rotation before the next), the undo on every host changed so far
 * when one fails, and the settling of a change a restart cut short.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import { DEFAULT_TENANT } from '../store/migrations.js';
import type { HostRow } from '../store/schema.js';
import { readyEnvironment, useEnvironmentsRepo } from '../../test/helpers/environments.js';
import { rejection } from '../../test/helpers/errors.js';
import { changeSettings, nextSettings, settleSettings, tagChange, type SettingsDeps } from './settings.js';

const T = DEFAULT_TENANT;

describe('environment settings', () => {
  const repo = useEnvironmentsRepo();
  let tags: Map<string, Record<string, string>>;
  let steps: string[];
  let failOn: string | undefined;
  let healthyAfter: number;

  const deps = (): SettingsDeps => ({
    envs: repo.envs,
    hosts: { get: (_t, id) => Promise.resolve(tags.has(id) ? ({ id, state: 'running', tags: tags.get(id) } as unknown as HostRow) : undefined) },
    changeHostTags: (_t, hostId, change) => {
      const next = { ...tags.get(hostId), ...change.set };
      for (const key of change.remove) delete next[key];
      tags.set(hostId, next);
      steps.push(`tag ${hostId} ${JSON.stringify(change)}`);
      return Promise.resolve();
    },
    awaitServicesReady: (_t, hostId) => {
      steps.push(`ready? ${hostId}`);
      const value = tags.get(hostId)?.['berth.env.MODE'];
      return failOn !== undefined && value === failOn ? Promise.reject(new BerthError('environment_failed', `host ${hostId}: service web failed`, 'Fix it.')) : Promise.resolve();
    },
    backendHealthy: (_name, hostId) => {
      steps.push(`routed? ${hostId}`);
      return healthyAfter-- <= 0;
    },
    log: () => undefined,
  });

  const make = async (name: string, settings: Record<string, string>) => {
    for (const id of [`${name}-1`, `${name}-2`]) tags.set(id, Object.fromEntries(Object.entries(settings).map(([k, v]) => [`berth.env.${k}`, v])));
    return readyEnvironment(repo.envs, name, settings);
  };
  beforeEach(() => {
    tags = new Map();
    steps = [];
    failOn = undefined;
    healthyAfter = 0;
  });

  it('works out the new settings and the tags that make them, refusing what berth sets itself', () => {
    expect(nextSettings('e', { A: '1', B: '2' }, { set: { B: '3', C: '4' }, unset: ['A', 'Z'] })).toEqual({ B: '3', C: '4' });
    expect(tagChange({ A: '1', B: '2' }, { B: '3', C: '4' })).toEqual({ set: { 'berth.env.B': '3', 'berth.env.C': '4' }, remove: ['berth.env.A'] });
    expect(() => nextSettings('e', {}, { set: { A: '1' }, unset: ['A'] })).toThrow(/A is both set and unset/);
    expect(() => nextSettings('e', {}, { set: { BERTH_REF: 'v2' }, unset: [] })).toThrow(/berth sets BERTH_REF itself/);
    expect(() => nextSettings('e', {}, { set: {}, unset: ['BERTH_SERVICE_API_ADDR'] })).toThrow(/berth sets BERTH_SERVICE_API_ADDR itself/);
  });

  it('changes one host at a time, each ready and back in rotation before the next, then records the settings', async () => {
    await make('one', { MODE: 'a' });
    healthyAfter = 1; // the first host fails one rotation check after its restart
    const done = await changeSettings(deps(), (await repo.envs.get(T, 'one'))!, { set: { MODE: 'b' }, unset: [], wait: 5 });
    expect(steps).toEqual([
      'tag one-1 {"set":{"berth.env.MODE":"b"},"remove":[]}',
      'ready? one-1',
      'routed? one-1',
      'routed? one-1',
      'tag one-2 {"set":{"berth.env.MODE":"b"},"remove":[]}',
      'ready? one-2',
      'routed? one-2',
    ]);
    expect([done.state, done.settings, done.state_reason]).toEqual(['ready', { MODE: 'b' }, 'changed MODE']);
    // Nothing to change: no work, no new state.
    steps = [];
    expect((await changeSettings(deps(), done, { set: { MODE: 'b' }, unset: ['NOPE'], wait: 5 })).updated_at).toEqual(done.updated_at);
    expect(steps).toEqual([]);
  });

  it('undoes the change on every host it reached when one host fails, and keeps the old settings', async () => {
    await make('two', { MODE: 'a', KEEP: 'k' });
    failOn = 'b';
    const err = await rejection(changeSettings(deps(), (await repo.envs.get(T, 'two'))!, { set: { MODE: 'b', NEW: 'n' }, unset: ['KEEP'], wait: 5 }));
    expect(err.message).toMatch(/host two-1: service web failed/);
    expect(steps.filter((s) => s.startsWith('tag'))).toEqual([
      'tag two-1 {"set":{"berth.env.MODE":"b","berth.env.NEW":"n"},"remove":["berth.env.KEEP"]}',
      'tag two-1 {"set":{"berth.env.KEEP":"k","berth.env.MODE":"a"},"remove":["berth.env.NEW"]}',
    ]);
    expect(tags.get('two-1')).toEqual({ 'berth.env.MODE': 'a', 'berth.env.KEEP': 'k' });
    expect(tags.get('two-2')).toEqual({ 'berth.env.MODE': 'a', 'berth.env.KEEP': 'k' });
    const row = (await repo.envs.get(T, 'two'))!;
    expect([row.state, row.settings]).toEqual(['ready', { MODE: 'a', KEEP: 'k' }]);
    expect(row.state_reason).toMatch(/^settings change failed and was undone: /);
  });

  it('refuses an environment that is not ready, and changes nothing', async () => {
    const row = await make('three', { MODE: 'a' });
    await repo.envs.transition(T, 'three', ['ready'], 'deploying');
    const err = await rejection(changeSettings(deps(), { ...row, state: 'deploying' }, { set: { MODE: 'b' }, unset: [], wait: 5 }));
    expect([err.code, err.message]).toEqual(['conflict', 'environment three is deploying']);
    expect(steps).toEqual([]);
  });

  it('after a restart, puts every host of a change cut short back to the recorded settings', async () => {
    await make('four', { MODE: 'a' });
    await repo.envs.transition(T, 'four', ['ready'], 'configuring');
    tags.set('four-1', { 'berth.env.MODE': 'b', 'berth.env.NEW': 'n', 'berth.env.BERTH_REF': 'v1' });
    const settled = await settleSettings(deps(), (await repo.envs.get(T, 'four'))!);
    expect(settled?.state).toBe('ready');
    expect(tags.get('four-1')).toEqual({ 'berth.env.MODE': 'a', 'berth.env.BERTH_REF': 'v1' });
    expect(steps).toEqual(['tag four-1 {"set":{"berth.env.MODE":"a"},"remove":["berth.env.NEW"]}']);
  });
});
