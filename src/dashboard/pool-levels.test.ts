import { describe, expect, it } from 'vitest';
import { PoolLevels } from './pool-levels.js';

const level = (pool: string, ready: number, warming = 0, claimed = 0) => ({ pool, ready, warming, claimed });

describe('PoolLevels', () => {
  it('keeps each pool its samples, oldest first, up to its capacity, and forgets removed pools', () => {
    const levels = new PoolLevels({ capacity: 3, minSpacingMs: 0 });
    for (let i = 0; i < 5; i++) levels.record('t', [level('a', i), level('b', 10 - i)], 1000 * i);
    expect(levels.history('t', 'a').map((s) => [s.at, s.ready])).toEqual([[2000, 2], [3000, 3], [4000, 4]]);
    expect(levels.history('t', 'b').at(-1)).toEqual({ at: 4000, ready: 6, warming: 0, claimed: 0 });
    levels.record('t', [level('a', 5)], 5000);
    expect(levels.history('t', 'b')).toEqual([]);
    expect(levels.history('other', 'a')).toEqual([]);
  });

  it('merges a sample into the previous one when close, unless the previous one recorded a change', () => {
    const levels = new PoolLevels({ minSpacingMs: 1000 });
    levels.record('t', [level('a', 1)], 0);
    levels.record('t', [level('a', 1)], 2000);
    levels.record('t', [level('a', 1)], 2100); // same level as before: replaces the 2000 sample
    expect(levels.history('t', 'a').map((s) => s.at)).toEqual([0, 2100]);
    levels.record('t', [level('a', 0, 1)], 2200); // a change: replaces 2100, which recorded none
    levels.record('t', [level('a', 1)], 2300); // close, but 2200 recorded a change: both kept
    expect(levels.history('t', 'a').map((s) => [s.at, s.ready])).toEqual([[0, 1], [2200, 0], [2300, 1]]);
  });
});
