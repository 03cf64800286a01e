/** The live copy of a running invocation's output: head and tail kept, never half a character. */
import { describe, expect, it } from 'vitest';
import { LiveOutput } from './live-output.js';

describe('LiveOutput', () => {
  it('keeps head and tail within its limit, says how much it left out, and never splits a surrogate pair', () => {
    const live = new LiveOutput(10);
    // Each emoji is two UTF-16 units; the halves of the limit (5) fall inside pairs.
    live.append('c', 'h', 'stdout', 'ab😀😀😀');
    live.append('c', 'h', 'stdout', 'xyz😀😀😀');
    const out = live.snapshot('c', 'h')?.stdout;
    expect(out?.truncated).toBe(true);
    expect(out?.text).not.toContain('\uFFFD');
    expect(out?.text).toMatch(/^ab😀x\n\[berth: \d+ bytes omitted\]\n😀😀$/);
    expect(out?.bytes).toBe(Buffer.byteLength('ab😀😀😀xyz😀😀😀'));
    // Well-formed UTF-16 all through: it survives a round trip through UTF-8 unchanged.
    expect(Buffer.from(out?.text ?? '', 'utf8').toString('utf8')).toBe(out?.text);
  });

  it('keeps short output whole', () => {
    const live = new LiveOutput(100);
    live.append('c', 'h', 'stderr', 'héllo\n');
    expect(live.snapshot('c', 'h')?.stderr).toEqual({ text: 'héllo\n', truncated: false, bytes: 7 });
  });
});
