/**
 * Histograms over history that only grows (hosts that became ready, environments' creates and
 * deploys), read from the store a little at a time: rows older than the settle horizon are added
 * up once for good and never read again; newer ones are read at each scrape. The claims' tally in
 * metrics.ts works the same way.
 */
import type { StoreTime } from './metrics-repo.js';

export interface HistogramRow {
  /** The series' labels (the tenant's is added by the caller). */
  labels: Record<string, string>;
  /** Older than the horizon the rows were read up to: final. */
  settled: boolean;
  count: number;
  sumMs: number;
  /** Cumulative counts per bucket bound. */
  buckets: number[];
}

export type HistogramSeries = Omit<HistogramRow, 'settled'>;

export class HistogramHistory {
  private readonly settled = new Map<string, HistogramSeries>();

  constructor(
    /** The rows at or after `since` (null: all), with `settled` for those before `upto`. */
    private readonly read: (since: StoreTime | null, upto: StoreTime) => Promise<HistogramRow[]>,
  ) {}

  /**
   * Reads the rows since the last call's `upto` (the caller passes it back as `since`); returns
   * every series as it stands now.
   */
  async collect(since: StoreTime | null, upto: StoreTime): Promise<HistogramSeries[]> {
    const rows = await this.read(since, upto);
    const recent = new Map<string, HistogramSeries>();
    for (const r of rows) add(r.settled ? this.settled : recent, r);
    const all = new Map<string, HistogramSeries>();
    for (const s of [...this.settled.values(), ...recent.values()]) add(all, s);
    return [...all.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, s]) => s);
  }
}

function add(into: Map<string, HistogramSeries>, h: HistogramSeries): void {
  const key = JSON.stringify(Object.entries(h.labels).sort(([a], [b]) => a.localeCompare(b)));
  const t = into.get(key);
  if (!t) into.set(key, { labels: { ...h.labels }, count: h.count, sumMs: h.sumMs, buckets: [...h.buckets] });
  else {
    t.count += h.count;
    t.sumMs += h.sumMs;
    t.buckets = t.buckets.map((n, i) => n + (h.buckets[i] ?? 0));
  }
}
