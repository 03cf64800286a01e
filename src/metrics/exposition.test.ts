import { describe, expect, it } from 'vitest';
import { formatExposition } from './exposition.js';

describe('formatExposition', () => {
  it('escapes backslashes, quotes and newlines in label values, and leaves other values as they are', () => {
    const text = formatExposition([
      {
        name: 'berth_x',
        type: 'gauge',
        help: 'a help\nwith a newline and a \\',
        samples: [
          { labels: { a: 'plain', b: 'say "hi"\\now\nthen' }, value: 1 },
          { labels: {}, value: Number.POSITIVE_INFINITY },
          { suffix: '_sum', labels: { a: 'ünïcode ✓' }, value: 0.25 },
        ],
      },
    ]);
    expect(text).toBe(
      '# HELP berth_x a help\\nwith a newline and a \\\\\n' +
        '# TYPE berth_x gauge\n' +
        'berth_x{a="plain",b="say \\"hi\\"\\\\now\\nthen"} 1\n' +
        'berth_x +Inf\n' +
        'berth_x_sum{a="ünïcode ✓"} 0.25\n',
    );
  });
});
