import { describe, expect, it } from 'vitest';
import { claimDeadlineS } from './claim-deadline.js';

describe("a claim's deadline", () => {
  it('is what the claim gives; else 60 s, or the driver boot limit + 30 s when that is longer (EC2)', () => {
    expect(claimDeadlineS(5, 300_000)).toBe(5);
    expect(claimDeadlineS(undefined, undefined)).toBe(60);
    expect(claimDeadlineS(undefined, 30_000)).toBe(60);
    // The AWS driver's default boot limit is 5 min: a cold launch then fits in the claim.
    expect(claimDeadlineS(undefined, 300_000)).toBe(330);
  });
});
