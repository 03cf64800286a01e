import type { StreamCapture } from './types.js';

export const DEFAULT_OUTPUT_LIMIT_BYTES = 64 * 1024;

/**
 * Bounded capture of one output stream: keeps the first half of the limit as the head and the
 * last half in a ring buffer, so memory stays at `limit` bytes however much the stream produces.
 */
export class OutputCapture {
  private readonly headCap: number;
  private readonly tailCap: number;
  private head: Buffer | undefined;
  private headLen = 0;
  private ring: Buffer | undefined;
  /** Next write position in the ring. */
  private ringPos = 0;
  /** Bytes held in the ring (<= tailCap). */
  private ringFilled = 0;
  private total = 0;

  constructor(limitBytes: number = DEFAULT_OUTPUT_LIMIT_BYTES) {
    const limit = Number.isFinite(limitBytes) && limitBytes > 0 ? Math.floor(limitBytes) : 0;
    this.headCap = Math.floor(limit / 2);
    this.tailCap = limit - this.headCap;
  }

  /** Bytes the stream has produced so far. */
  get bytes(): number {
    return this.total;
  }

  /** Bytes of buffer memory this capture holds (bounded by the limit). */
  get retainedBytes(): number {
    return (this.head?.length ?? 0) + (this.ring?.length ?? 0);
  }

  write(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    this.total += n;
    let off = 0;
    if (this.headLen < this.headCap) {
      // Grow the head lazily: small outputs (the common case) allocate only what they use.
      const take = Math.min(this.headCap - this.headLen, n);
      const need = this.headLen + take;
      if (!this.head || this.head.length < need) {
        const size = Math.min(this.headCap, Math.max(need, (this.head?.length ?? 0) * 2, 256));
        const grown = Buffer.allocUnsafe(size);
        if (this.head) this.head.copy(grown, 0, 0, this.headLen);
        this.head = grown;
      }
      chunk.copy(this.head, this.headLen, 0, take);
      this.headLen = need;
      off = take;
      if (off === n) return;
    }
    const cap = this.tailCap;
    if (cap === 0) return;
    const rest = n - off;
    if (rest >= cap) {
      // The chunk alone fills the tail: keep its last `cap` bytes.
      const ring = this.ensureRing(cap);
      chunk.copy(ring, 0, n - cap, n);
      this.ringPos = 0;
      this.ringFilled = cap;
      return;
    }
    if (this.ringFilled + rest < cap) {
      // Not wrapped yet (the ring only wraps once full): append, growing the buffer lazily.
      const grow = Math.max(this.ringFilled + rest, (this.ring?.length ?? 0) * 2, 256);
      const ring = this.ensureRing(Math.min(cap, grow));
      chunk.copy(ring, this.ringFilled, off, n);
      this.ringFilled += rest;
      this.ringPos = this.ringFilled;
      return;
    }
    const ring = this.ensureRing(cap);
    const first = Math.min(rest, cap - this.ringPos);
    chunk.copy(ring, this.ringPos, off, off + first);
    if (first < rest) chunk.copy(ring, 0, off + first, n);
    this.ringPos = (this.ringPos + rest) % cap;
    this.ringFilled = Math.min(cap, this.ringFilled + rest);
  }

  /** The ring, grown to at least `size` bytes (content preserved; only grown before it wraps). */
  private ensureRing(size: number): Buffer {
    if (this.ring && this.ring.length >= size) return this.ring;
    const grown = Buffer.allocUnsafe(size);
    if (this.ring) this.ring.copy(grown, 0, 0, this.ringFilled);
    this.ring = grown;
    return grown;
  }

  private tailBytes(): Buffer {
    const ring = this.ring;
    if (!ring || this.ringFilled === 0) return Buffer.alloc(0);
    if (this.ringFilled < this.tailCap || this.ringPos === 0) return ring.subarray(0, this.ringFilled);
    return Buffer.concat([ring.subarray(this.ringPos, this.tailCap), ring.subarray(0, this.ringPos)]);
  }

  result(): StreamCapture {
    const head = this.head ? this.head.subarray(0, this.headLen) : Buffer.alloc(0);
    const tail = this.tailBytes();
    const kept = head.length + tail.length;
    if (this.total <= kept) {
      const all = tail.length === 0 ? head : Buffer.concat([head, tail]);
      return { text: all.toString('utf8'), truncated: false, bytes: this.total };
    }
    // Do not split a multi-byte UTF-8 character at either cut; the dropped bytes count as omitted.
    const headEnd = utf8SafeEnd(head);
    const tailStart = utf8SafeStart(tail);
    const omitted = this.total - headEnd - (tail.length - tailStart);
    const text =
      head.toString('utf8', 0, headEnd) +
      `\n[berth: ${omitted} bytes omitted]\n` +
      tail.toString('utf8', tailStart);
    return { text, truncated: true, bytes: this.total };
  }
}

/** Length of `buf` without a trailing incomplete UTF-8 sequence. */
export function utf8SafeEnd(buf: Buffer): number {
  const len = buf.length;
  let i = len - 1;
  // Walk back over at most 3 continuation bytes to the lead byte of the last character.
  while (i >= 0 && len - i <= 3 && ((buf[i] ?? 0) & 0xc0) === 0x80) i--;
  if (i < 0) return len;
  const lead = buf[i] ?? 0;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return i + need > len ? i : len;
}

/** Offset of the first byte of `buf` that is not a UTF-8 continuation byte (skips at most 3). */
export function utf8SafeStart(buf: Buffer): number {
  let i = 0;
  while (i < 3 && i < buf.length && ((buf[i] ?? 0) & 0xc0) === 0x80) i++;
  return i;
}
