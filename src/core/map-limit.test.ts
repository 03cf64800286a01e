import { describe, expect, it } from 'vitest';
import { mapLimit } from './map-limit.js';

describe('mapLimit', () => {
  it('keeps at most `limit` running, starts the next as one ends, and returns results in order', async () => {
    let running = 0;
    let most = 0;
    const finished: number[] = [];
    // Item 0 is slow: with a sliding window the others go on past it, not in batches behind it.
    const results = await mapLimit([200, 5, 5, 5, 5, 5], 2, async (ms) => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, ms));
      running--;
      finished.push(ms);
      return ms * 2;
    });
    expect(results).toEqual([400, 10, 10, 10, 10, 10]);
    expect(most).toBe(2);
    expect(finished).toEqual([5, 5, 5, 5, 5, 200]);
    expect(await mapLimit([], 4, () => Promise.resolve(1))).toEqual([]);
  });
});
