/**
 * placeServices' contract with its callers when some claims fail: it throws only once every claim
 * it started has ended, so each host a claim got has been handed to onClaimed (the caller records
 * it, and gives it back). The claims are stand-ins (the pool's side is tested on real hosts in the
 * e2e suites); what is under test is the waiting.
 */
import { describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import type { ClaimView } from '../pools/views.js';
import type { StackSpec } from '../stacks/spec.js';
import { placeServices, type PlacedHost } from './placement.js';

const stack = { name: 'shop', services: {} } as unknown as StackSpec;

describe('placeServices', () => {
  it('fails only after every claim it started has ended, each host got handed over', async () => {
    let calls = 0;
    const claim = async (): Promise<ClaimView> => {
      const n = ++calls;
      if (n === 2) throw new BerthError('pool_empty', 'pool shop has no ready host', 'Wait for it to refill.');
      // The others take their time: a pick, an init, a move into the group.
      await new Promise((resolve) => setTimeout(resolve, 50 * n));
      return { id: `c-${n}`, host: { id: `h-${n}`, ip: `10.0.0.${n}` }, timings: {} } as unknown as ClaimView;
    };
    const handed: string[] = [];
    const placing = placeServices(
      { claim, awaitServicesReady: () => Promise.resolve() },
      {
        tenantId: 't',
        name: 'bob',
        stack,
        pool: 'shop',
        mode: 'review',
        ref: null,
        replicas: 3,
        owner: null,
        settings: {},
        generation: 1,
        target: { service: 'web', port: 8080, healthPath: '/' },
        deadline: Date.now() + 10_000,
        onClaimed: (host: PlacedHost) => Promise.resolve(void handed.push(host.hostId)),
      },
    );
    await expect(placing).rejects.toThrow('pool shop has no ready host');
    expect(handed.sort()).toEqual(['h-1', 'h-3']);
  });
});
