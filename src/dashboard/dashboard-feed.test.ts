/** The feed's promises: a snapshot at once for a new viewer, a burst of changes costs one or two builds, nothing after the last viewer goes. */
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus } from '../events/event-bus.js';
import type { BerthEvent } from '../events/types.js';
import { DashboardFeed } from './dashboard-feed.js';
import { PoolLevels } from './pool-levels.js';
import type { DashboardSnapshot, DashboardSources } from './snapshot.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Sources with nothing in them, that count the snapshots built (one metrics collection each). */
function emptySources(buildMs = 0): { counter: { builds: number }; sources: DashboardSources } {
  const counter = { builds: 0 };
  return {
    counter,
    sources: {
      pools: { list: () => Promise.resolve([]) },
      hosts: { summaries: () => Promise.resolve([]) },
      environments: { list: () => Promise.resolve([]) },
      commands: { list: () => Promise.resolve([]) },
      metrics: {
        collect: async () => {
          counter.builds++;
          await sleep(buildMs);
          return [];
        },
      },
      levels: new PoolLevels(),
    },
  };
}

function viewer() {
  const seen = { snapshots: [] as DashboardSnapshot[], events: [] as BerthEvent[], failures: 0 };
  return { seen, viewer: { snapshot: (s: DashboardSnapshot) => seen.snapshots.push(s), event: (e: BerthEvent) => seen.events.push(e), failed: () => seen.failures++ } };
}

const feeds: DashboardFeed[] = [];
afterEach(() => {
  for (const f of feeds.splice(0)) f.close();
});

describe('DashboardFeed', () => {
  it('sends a new viewer a snapshot at once, and a burst of 200 events costs at most two more builds', async () => {
    const events = new EventBus();
    const { sources, counter } = emptySources(20);
    const feed = new DashboardFeed({ sources, events, minIntervalMs: 100, refreshMs: 60_000 });
    feeds.push(feed);
    const a = viewer();
    feed.watch('t1', a.viewer);
    await until('the first snapshot', () => a.seen.snapshots.length === 1);
    for (let i = 0; i < 200; i++) events.emit({ kind: 'host', id: `h-${i}`, tenantId: 't1', state: 'running' });
    events.emit({ kind: 'host', id: 'h-other', tenantId: 't2', state: 'running' });
    await until('the burst built', () => counter.builds >= 2 && a.seen.snapshots.length === counter.builds);
    await sleep(300); // and nothing more is built after it
    expect(a.seen.events).toHaveLength(200); // every change, another tenant's left out
    expect(counter.builds).toBeGreaterThanOrEqual(2);
    expect(counter.builds).toBeLessThanOrEqual(3);
    expect(a.seen.snapshots).toHaveLength(counter.builds);
  });

  it('shares builds between viewers of a tenant, refreshes on its own, and stops when the last viewer goes', async () => {
    const events = new EventBus();
    const { sources, counter } = emptySources();
    const feed = new DashboardFeed({ sources, events, minIntervalMs: 10, refreshMs: 100 });
    feeds.push(feed);
    const a = viewer();
    const b = viewer();
    const stopA = feed.watch('t1', a.viewer);
    const stopB = feed.watch('t1', b.viewer);
    await until('three snapshots', () => a.seen.snapshots.length >= 3 && b.seen.snapshots.length === a.seen.snapshots.length);
    // One build for both at the start, then the refreshes: the same snapshots to each.
    expect(a.seen.snapshots.length).toBeGreaterThanOrEqual(3);
    expect(b.seen.snapshots.map((s) => s.at)).toEqual(a.seen.snapshots.map((s) => s.at));
    expect(counter.builds).toBe(a.seen.snapshots.length);
    stopA();
    stopB();
    const after = counter.builds;
    events.emit({ kind: 'host', id: 'h-1', tenantId: 't1', state: 'running' });
    await sleep(250);
    expect(counter.builds).toBe(after);
    expect(events.subscriberCount).toBe(0);
  });

  it('tells viewers when a snapshot cannot be built, and builds again at the next change', async () => {
    const events = new EventBus();
    const { sources } = emptySources();
    let fail = true;
    const feed = new DashboardFeed({
      sources: { ...sources, metrics: { collect: () => (fail ? Promise.reject(new Error('store down')) : Promise.resolve([])) } },
      events,
      minIntervalMs: 10,
      refreshMs: 60_000,
    });
    feeds.push(feed);
    const a = viewer();
    feed.watch('t1', a.viewer);
    await until('the failure reported', () => a.seen.failures === 1);
    fail = false;
    events.emit({ kind: 'host', id: 'h-1', tenantId: 't1', state: 'running' });
    await until('a snapshot after the change', () => a.seen.snapshots.length === 1);
    expect(a.seen.failures).toBe(1);
  });
});
