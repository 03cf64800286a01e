import { describe, expect, it } from 'vitest';
import { AgentArrivals } from './ready-waiters.js';

type Row = { id: string; pool: string };

describe('AgentArrivals', () => {
  it('resolves true for the first matching arrival, not for others', async () => {
    const arrivals = new AgentArrivals<Row>();
    const wait = arrivals.wait((row) => row.pool === 'web', 5000);
    let settled = false;
    void wait.arrived.then(() => (settled = true));
    arrivals.arrived({ id: 'h-1', pool: 'api' });
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toBe(false);
    arrivals.arrived({ id: 'h-2', pool: 'web' });
    expect(await wait.arrived).toBe(true);
  });

  it('resolves false when the time runs out, when cancelled and when aborted, and stops listening', async () => {
    const arrivals = new AgentArrivals<Row>();
    const t0 = performance.now();
    expect(await arrivals.wait(() => true, 50).arrived).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45);

    const cancelled = arrivals.wait(() => true, 5000);
    cancelled.cancel();
    expect(await cancelled.arrived).toBe(false);

    const controller = new AbortController();
    const aborted = arrivals.wait(() => true, 5000, controller.signal);
    controller.abort();
    expect(await aborted.arrived).toBe(false);
    expect(await arrivals.wait(() => true, 5000, controller.signal).arrived).toBe(false);

    // Nobody listens any more: a late arrival reaches no settled wait.
    const events = (arrivals as unknown as { events: { listenerCount(name: string): number } }).events;
    expect(events.listenerCount('arrival')).toBe(0);
  });
});
