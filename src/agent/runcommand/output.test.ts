import { describe, expect, it } from 'vitest';
import { OutputCapture, utf8SafeEnd, utf8SafeStart } from './output.js';

function feed(capture: OutputCapture, data: Buffer, chunkSize: number): void {
  for (let i = 0; i < data.length; i += chunkSize) capture.write(data.subarray(i, i + chunkSize));
}

describe('OutputCapture', () => {
  it('keeps a short stream whole', () => {
    const c = new OutputCapture(16);
    c.write(Buffer.from('hello '));
    c.write(Buffer.from('world'));
    expect(c.result()).toEqual({ text: 'hello world', truncated: false, bytes: 11 });
  });

  it('keeps exactly `limit` bytes without truncating', () => {
    const data = Buffer.from('0123456789abcdef');
    for (const chunk of [1, 3, 5, 16]) {
      const c = new OutputCapture(16);
      feed(c, data, chunk);
      expect(c.result()).toEqual({ text: data.toString(), truncated: false, bytes: 16 });
    }
  });

  it('keeps the head and the tail around a marker, for any chunking', () => {
    const data = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789');
    for (const chunk of [1, 2, 3, 7, 8, 9, 15, 36]) {
      const c = new OutputCapture(10);
      feed(c, data, chunk);
      expect(c.result(), `chunk ${chunk}`).toEqual({
        text: 'abcde\n[berth: 26 bytes omitted]\n56789',
        truncated: true,
        bytes: 36,
      });
    }
  });

  it('an odd limit gives the extra byte to the tail', () => {
    const c = new OutputCapture(5);
    c.write(Buffer.from('abcdefghij'));
    expect(c.result().text).toBe('ab\n[berth: 5 bytes omitted]\nhij');
  });

  it('holds bounded memory however much is written', () => {
    const limit = 64 * 1024;
    const c = new OutputCapture(limit);
    const chunk = Buffer.alloc(64 * 1024, 'x');
    for (let i = 0; i < 3200; i++) c.write(chunk); // 200 MiB
    c.write(Buffer.from('END'));
    expect(c.retainedBytes).toBeLessThanOrEqual(limit);
    const r = c.result();
    expect(r.bytes).toBe(3200 * 64 * 1024 + 3);
    expect(r.truncated).toBe(true);
    expect(r.text.endsWith('xxxEND')).toBe(true);
    expect(r.text.length).toBeLessThan(limit + 100);
  });

  it('allocates little for small outputs', () => {
    const c = new OutputCapture(64 * 1024);
    c.write(Buffer.from('hi\n'));
    expect(c.retainedBytes).toBeLessThanOrEqual(256);
  });

  it('does not split multi-byte characters at the cuts', () => {
    // 'é' is 2 bytes, '€' 3, '😀' 4: cuts at any position must never produce U+FFFD.
    const text = 'é€😀'.repeat(50);
    const data = Buffer.from(text);
    for (let limit = 4; limit < 40; limit++) {
      const c = new OutputCapture(limit);
      feed(c, data, 7);
      const r = c.result();
      expect(r.truncated).toBe(true);
      expect(r.text).not.toContain('\uFFFD');
      const m = /\n\[berth: (\d+) bytes omitted\]\n/.exec(r.text);
      expect(m).not.toBeNull();
      const [head, tail] = r.text.split(m![0]);
      expect(text.startsWith(head!)).toBe(true);
      expect(text.endsWith(tail!)).toBe(true);
      expect(Buffer.byteLength(head!) + Buffer.byteLength(tail!) + Number(m![1])).toBe(data.length);
    }
  });

  it('utf8 cut helpers', () => {
    const euro = Buffer.from('a€'); // 61 e2 82 ac
    expect(utf8SafeEnd(euro.subarray(0, 2))).toBe(1);
    expect(utf8SafeEnd(euro.subarray(0, 3))).toBe(1);
    expect(utf8SafeEnd(euro)).toBe(4);
    expect(utf8SafeStart(euro.subarray(2))).toBe(2);
    expect(utf8SafeStart(euro)).toBe(0);
  });
});
