/**
 * Live snapshots for the dashboard's viewers, one feed per tenant however many viewers it has: a
 * snapshot is built when one of the tenant's events arrives (at most one build at a time and one per
 * `minIntervalMs`, so a burst of events costs one or two builds), and every `refreshMs` for what
 * changes with time alone (idle seconds, agents' last-seen).
 */
import type { EventBus } from '../events/event-bus.js';
import type { BerthEvent } from '../events/types.js';
import { buildSnapshot, type DashboardSnapshot, type DashboardSources } from './snapshot.js';

export interface DashboardViewer {
  snapshot(snapshot: DashboardSnapshot): void;
  event(event: BerthEvent): void;
  /** A snapshot could not be built; the next attempt follows at the next change or refresh. */
  failed(err: unknown): void;
}

export interface DashboardFeedOptions {
  sources: DashboardSources;
  events: EventBus;
  /** Least time between two builds of one tenant's snapshot (default 500 ms). */
  minIntervalMs?: number;
  /** A snapshot at least this often while someone watches (default 5 s). */
  refreshMs?: number;
}

interface TenantFeed {
  viewers: Set<DashboardViewer>;
  unsubscribe: () => void;
  timer: NodeJS.Timeout;
  building: boolean;
  dirty: boolean;
  pending: NodeJS.Timeout | undefined;
  lastBuildAt: number;
}

export class DashboardFeed {
  private readonly feeds = new Map<string, TenantFeed>();
  private readonly minIntervalMs: number;
  private readonly refreshMs: number;

  constructor(private readonly opts: DashboardFeedOptions) {
    this.minIntervalMs = opts.minIntervalMs ?? 500;
    this.refreshMs = opts.refreshMs ?? 5000;
  }

  /** One snapshot now (the page's first load). */
  snapshot(tenantId: string): Promise<DashboardSnapshot> {
    return buildSnapshot(this.opts.sources, tenantId);
  }

  /** The tenant's last `limit` buffered events, oldest first (a new viewer's activity list). */
  recentEvents(tenantId: string, limit: number): BerthEvent[] {
    const all = this.opts.events.since(0, { tenantId });
    return all.slice(Math.max(0, all.length - limit));
  }

  /** Sends `viewer` a snapshot at once, then one per change; returns the unsubscribe. */
  watch(tenantId: string, viewer: DashboardViewer): () => void {
    let feed = this.feeds.get(tenantId);
    if (!feed) {
      const created: TenantFeed = {
        viewers: new Set(),
        unsubscribe: () => {},
        timer: setInterval(() => this.schedule(tenantId, created), this.refreshMs),
        building: false,
        dirty: false,
        pending: undefined,
        lastBuildAt: 0,
      };
      created.timer.unref();
      created.unsubscribe = this.opts.events.subscribe(
        (event) => {
          for (const v of created.viewers) v.event(event);
          this.schedule(tenantId, created);
        },
        { filter: { tenantId } },
      );
      this.feeds.set(tenantId, created);
      feed = created;
    }
    const f = feed;
    f.viewers.add(viewer);
    // A new viewer needs a snapshot now, not at the next change: build one for everyone.
    f.lastBuildAt = 0;
    this.schedule(tenantId, f);
    return () => {
      f.viewers.delete(viewer);
      if (f.viewers.size === 0 && this.feeds.get(tenantId) === f) this.closeFeed(tenantId, f);
    };
  }

  close(): void {
    for (const [tenantId, feed] of [...this.feeds]) this.closeFeed(tenantId, feed);
  }

  private closeFeed(tenantId: string, feed: TenantFeed): void {
    clearInterval(feed.timer);
    clearTimeout(feed.pending);
    feed.unsubscribe();
    this.feeds.delete(tenantId);
  }

  private schedule(tenantId: string, feed: TenantFeed): void {
    if (this.feeds.get(tenantId) !== feed) return;
    if (feed.building) {
      feed.dirty = true;
      return;
    }
    if (feed.pending) return;
    const wait = Math.max(0, feed.lastBuildAt + this.minIntervalMs - Date.now());
    feed.pending = setTimeout(() => {
      feed.pending = undefined;
      void this.build(tenantId, feed);
    }, wait);
  }

  private async build(tenantId: string, feed: TenantFeed): Promise<void> {
    feed.building = true;
    feed.dirty = false;
    try {
      const snapshot = await buildSnapshot(this.opts.sources, tenantId);
      for (const v of feed.viewers) v.snapshot(snapshot);
    } catch (err) {
      for (const v of feed.viewers) v.failed(err);
    } finally {
      feed.building = false;
      feed.lastBuildAt = Date.now();
    }
    if (feed.dirty) this.schedule(tenantId, feed);
  }
}
