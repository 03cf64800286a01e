import { describe, expect, it } from 'vitest';
import type { PoolRow } from '../store/schema.js';
import { DEFAULT_LEAD_TIME_S, leadTimeFor, readDemand, targetFor } from './demand.js';
import { parsePoolSpec } from './spec.js';

describe('demand sizing', () => {
  const demand = { max: 5, windowS: 600, leadTimeS: null };

  it('keeps between size and demand.max ready hosts: as many as the peak', () => {
    expect(targetFor(1, demand, 0)).toBe(1);
    expect(targetFor(1, demand, 3)).toBe(3);
    expect(targetFor(1, demand, 50)).toBe(5);
    expect(targetFor(4, demand, 2)).toBe(4);
  });

  it('takes the configured lead time, else the measured one (at least 1 s), else a default', () => {
    expect(leadTimeFor({ ...demand, leadTimeS: 7 }, 0.2)).toBe(7);
    expect(leadTimeFor(demand, 2.5)).toBe(2.5);
    expect(leadTimeFor(demand, 0.08)).toBe(1);
    expect(leadTimeFor(demand, undefined)).toBe(DEFAULT_LEAD_TIME_S);
  });

  it('reads nothing for a pool of fixed size, and asks the store with the lead time it uses', async () => {
    const asked: unknown[] = [];
    const source = {
      demandPeak: (_t: string, pool: string, windowS: number, spanS: number) => (asked.push([pool, windowS, spanS]), Promise.resolve(4)),
      medianLeadTimeS: () => Promise.resolve(0.5),
    };
    const row = { tenant_id: 'default', name: 'p', size: 2, demand: null } as unknown as PoolRow;
    expect(await readDemand(source, row)).toBeUndefined();
    expect(asked).toEqual([]);
    expect(await readDemand(source, { ...row, demand })).toEqual({ target: 4, peak: 4, leadTimeS: 1 });
    expect(asked).toEqual([['p', 600, 1]]);
  });

  it('checks demand against size and maxSize in the pool spec, and sizes maxSize for it by default', () => {
    expect(parsePoolSpec({ name: 'p', size: 1, demand: { max: 8 } })).toMatchObject({ maxSize: 12, demand: { max: 8, windowS: 600, leadTimeS: null } });
    expect(parsePoolSpec({ name: 'p', size: 1 })).toMatchObject({ maxSize: 5, demand: null });
    expect(() => parsePoolSpec({ name: 'p', size: 3, demand: { max: 2 } })).toThrow(/demand.max 2 is below size 3/);
    expect(() => parsePoolSpec({ name: 'p', size: 1, maxSize: 4, demand: { max: 5 } })).toThrow(/above maxSize 4/);
    expect(() => parsePoolSpec({ name: 'p', size: 1, demand: { max: 2, window: 5 } })).toThrow(/window/);
    expect(() => parsePoolSpec({ name: 'p', size: 1, demand: { max: 2, extra: 1 } })).toThrow(/demand/);
  });
});
