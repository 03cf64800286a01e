/**
 * The Prometheus text exposition format (0.0.4), and the router's responses counted in this
 * process (the store has no record of them). Written here rather than with prom-client: see
 * metrics.ts.
 */

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Record<string, string>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface Sample {
  /** Appended to the family's name (`_bucket`, `_sum`, `_count` for a histogram). */
  suffix?: string;
  labels: Labels;
  value: number;
}

export interface MetricFamily {
  name: string;
  type: MetricType;
  help: string;
  samples: Sample[];
}

/** The samples of one histogram series: cumulative buckets (`bounds` ascending), +Inf, sum, count. */
export function histogramSamples(labels: Labels, bounds: readonly number[], cumulative: readonly number[], sum: number, count: number): Sample[] {
  return [
    ...bounds.map((le, i) => ({ suffix: '_bucket', labels: { ...labels, le: formatValue(le) }, value: cumulative[i] ?? count })),
    { suffix: '_bucket', labels: { ...labels, le: '+Inf' }, value: count },
    { suffix: '_sum', labels, value: sum },
    { suffix: '_count', labels, value: count },
  ];
}

export function formatExposition(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${family.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const sample of family.samples) {
      // A scrape writes thousands of samples: a plain loop, and escaping only values that need it.
      let labels = '';
      for (const k in sample.labels) {
        const v = sample.labels[k] ?? '';
        labels += `${labels ? ',' : ''}${k}="${NEEDS_ESCAPE.test(v) ? v.replace(ESCAPED, (c) => (c === '\n' ? '\\n' : `\\${c}`)) : v}"`;
      }
      lines.push(`${family.name}${sample.suffix ?? ''}${labels ? `{${labels}}` : ''} ${formatValue(sample.value)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

const NEEDS_ESCAPE = /[\\"\n]/;
const ESCAPED = /[\\"\n]/g;

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/**
 * Responses the environment router sent, by environment and status. Give `observe` to the router
 * (`onResponse`); the names it passes are those of routes it has, so the keys stay few (requests
 * for unknown names all count under the empty name).
 */
export class RouterRequestCounts {
  private readonly counts = new Map<string, Map<number, number>>();

  readonly observe = (environment: string | null, status: number): void => {
    const key = environment ?? '';
    let byStatus = this.counts.get(key);
    if (!byStatus) {
      byStatus = new Map();
      this.counts.set(key, byStatus);
    }
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  };

  snapshot(): { environment: string; status: number; responses: number }[] {
    const out: { environment: string; status: number; responses: number }[] = [];
    for (const [environment, byStatus] of this.counts) for (const [status, responses] of byStatus) out.push({ environment, status, responses });
    return out.sort((a, b) => a.environment.localeCompare(b.environment) || a.status - b.status);
  }
}
