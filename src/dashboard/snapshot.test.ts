import { describe, expect, it } from 'vitest';
import { histogramSamples } from '../metrics/exposition.js';
import { claimLatency } from './snapshot.js';

describe('claimLatency', () => {
  it('undoes the cumulative total-stage buckets of hits and misses of every pool, leaving other stages and failures out', () => {
    const bounds = [0.001, 0.01, 0.1];
    const samples = [
      // pool a: hits 1 ≤1ms, 2 ≤10ms; misses 1 above 100 ms
      ...histogramSamples({ pool: 'a', outcome: 'hit', stage: 'total' }, bounds, [1, 3, 3], 0.02, 3),
      ...histogramSamples({ pool: 'a', outcome: 'miss', stage: 'total' }, bounds, [0, 0, 0], 2.5, 1),
      ...histogramSamples({ pool: 'b', outcome: 'hit', stage: 'total' }, bounds, [0, 0, 4], 0.3, 4),
      // not counted: a stage, and failed claims
      ...histogramSamples({ pool: 'a', outcome: 'hit', stage: 'pick' }, bounds, [3, 3, 3], 0.001, 3),
      ...histogramSamples({ pool: 'b', outcome: 'failed', stage: 'total' }, bounds, [9, 9, 9], 0.001, 9),
    ];
    const h = claimLatency(samples);
    expect(h.boundsMs).toEqual([1, 10, 100]);
    expect(h.counts).toEqual([1, 2, 4, 1]);
    expect(h.count).toBe(8);
    expect(h.sumMs).toBeCloseTo(2820, 6);
  });

  it('is empty without claims', () => {
    expect(claimLatency([])).toEqual({ boundsMs: [], counts: [0], count: 0, sumMs: 0 });
  });
});
