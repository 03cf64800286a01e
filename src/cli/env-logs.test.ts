import { describe, expect, it } from 'vitest';
import type { EnvironmentView } from '../environments/views.js';
import { LineSplitter, logSources, mergeByTime, toLogLine, type LogSource } from './env-logs.js';

const web: LogSource = { hostId: 'h-1', service: 'web', label: 'web' };
const api: LogSource = { hostId: 'h-2', service: 'api', label: 'api' };

describe('env logs', () => {
  it('merges several logs by their timestamps; a line without one stays after the line before it', () => {
    const a = ['2026-11-23T10:00:00.000Z a1', '2026-11-23T10:00:02.000Z a2', '  a2 continued'].map((l) => toLogLine(web, l));
    const b = ['2026-11-23T10:00:01.000Z b1', '2026-11-23T10:00:03.000Z b2'].map((l) => toLogLine(api, l));
    expect(mergeByTime([a, b]).map((l) => l.line.replace(/^\S+Z /, '').trim())).toEqual(['a1', 'b1', 'a2', 'a2 continued', 'b2']);
    expect(a[0]?.at).toBe('2026-11-23T10:00:00.000Z');
    expect(a[2]?.at).toBeNull();
  });

  it('equal timestamps keep each log in its own order', () => {
    const t = '2026-11-23T10:00:00.000Z';
    const a = [`${t} a1`, `${t} a2`].map((l) => toLogLine(web, l));
    const b = [`${t} b1`].map((l) => toLogLine(api, l));
    expect(mergeByTime([a, b]).map((l) => l.line.slice(25))).toEqual(['a1', 'a2', 'b1']);
  });

  it('splits a stream into whole lines across chunks', () => {
    const s = new LineSplitter();
    expect(s.push('one\ntw')).toEqual(['one']);
    expect(s.push('o\n\nthr')).toEqual(['two', '']);
    expect(s.end()).toEqual(['thr']);
    expect(s.end()).toEqual([]);
  });

  it("labels a service with its host only when it runs on several; a review host's services are asked of it", async () => {
    const env = (hosts: EnvironmentView['hosts']) => ({ name: 'shop', hosts }) as EnvironmentView;
    const asked: string[] = [];
    const client = { get: <T>(path: string): Promise<T> => (asked.push(path), Promise.resolve({ services: [{ name: 'api' }, { name: 'web' }] } as T)) };
    const split = env([
      { hostId: 'h-aaaaaaaa1', service: 'web', generation: 1 },
      { hostId: 'h-bbbbbbbb2', service: 'web', generation: 1 },
      { hostId: 'h-cccccccc3', service: 'api', generation: 1 },
    ]);
    expect((await logSources(client, split, undefined)).map((s) => s.label)).toEqual(['web@h-aaaaaa', 'web@h-bbbbbb', 'api']);
    expect(asked).toEqual([]);
    expect((await logSources(client, split, 'api')).map((s) => s.hostId)).toEqual(['h-cccccccc3']);
    const review = env([{ hostId: 'h-dddddddd4', service: null, generation: 1 }]);
    expect((await logSources(client, review, undefined)).map((s) => `${s.label} ${s.hostId}`)).toEqual(['api h-dddddddd4', 'web h-dddddddd4']);
    expect(asked).toEqual(['/v1/hosts/h-dddddddd4/services']);
    await expect(logSources(client, review, 'worker')).rejects.toThrow('environment shop has no service worker (it runs: api, web)');
  });
});
