import { describe, expect, it } from 'vitest';
import type { BerthEvent } from '../events/types.js';
import { SERVICE_REMOVED_REASON } from '../protocol/reasons.js';
import { progressLine } from './env-progress.js';

let seq = 0;
const event = (over: Partial<BerthEvent> & Pick<BerthEvent, 'kind' | 'state'>): BerthEvent => ({ seq: ++seq, at: '2026-11-24T00:00:00.000Z', id: 'x', tenantId: 'default', ...over });

describe("an environment command's progress lines", () => {
  it('says the hosts it claims, their services starting and ready, and the environment state; nothing of other environments', () => {
    const hosts = new Set<string>();
    const lines = [
      event({ kind: 'claim', state: 'ready', group: 'shop', hostId: 'h-1', pool: 'demo' }),
      event({ kind: 'claim', state: 'ready', group: 'other', hostId: 'h-9', pool: 'demo' }),
      event({ kind: 'service', state: 'starting', hostId: 'h-1', service: 'web', reason: 'configuration changed' }),
      event({ kind: 'service', state: 'ready', hostId: 'h-1', service: 'web', reason: 'ready after 56 ms' }),
      event({ kind: 'service', state: 'ready', hostId: 'h-9', service: 'web', reason: 'ready after 5 ms' }),
      event({ kind: 'environment', state: 'creating', environment: 'shop' }),
      event({ kind: 'environment', state: 'ready', environment: 'shop' }),
    ].map((e) => progressLine(e, 'shop', hosts));
    expect(lines.filter((l) => l !== undefined)).toEqual(['claimed h-1 from pool demo', 'h-1: web starting (configuration changed)', 'h-1: web ready after 56 ms', 'shop ready']);
  });

  it("leaves out a pool host stopping the services that are not its own (service mode), but not their failures", () => {
    const hosts = new Set(['h-1']);
    const line = (state: string) => progressLine(event({ kind: 'service', state, hostId: 'h-1', service: 'api', reason: SERVICE_REMOVED_REASON }), 'shop', hosts);
    expect([line('stopping'), line('stopped')]).toEqual([undefined, undefined]);
    expect(line('failed')).toBe(`h-1: api failed (${SERVICE_REMOVED_REASON})`);
  });
});
