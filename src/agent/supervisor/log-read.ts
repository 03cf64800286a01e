/**
 * Reading a service's log as lines: what the retained files hold (optionally only the last N lines),
 * then, when following, every line written afterwards. The files are opened and the subscription
 * taken in one synchronous step, and the writer is synchronous on the same thread, so nothing is
 * missed or repeated; rotation does not matter (open descriptors survive renames, and new data comes
 * from the writer itself, not from a file name).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import type { RotatingLog } from './log-file.js';

export interface LogReadOptions {
  /** Keep yielding new lines until the signal aborts or the service's log is closed (service removed). */
  follow?: boolean;
  /** Start with only the last N lines of what is retained (0: only new lines). Default: everything. */
  tailLines?: number;
  signal?: AbortSignal;
}

/** A follower that falls this far behind loses the backlog (and is told so) instead of growing the agent. */
const MAX_FOLLOW_BACKLOG_BYTES = 4 * 1024 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;

interface OpenFile {
  fd: number;
  /** Size at snapshot time: later bytes arrive through the subscription. */
  size: number;
}

export async function* readLogLines(log: RotatingLog, opts: LogReadOptions = {}): AsyncGenerator<string, void, undefined> {
  // Nothing above this line may await: the snapshot below must be atomic with respect to writes.
  const files = openAll(log.files());
  const live = opts.follow ? new LiveTail(log, opts.signal) : undefined;
  const lines = new LineSplitter();
  try {
    const start = opts.tailLines === undefined ? { file: 0, offset: 0 } : tailStart(files, opts.tailLines);
    const buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    for (let i = start.file; i < files.length; i++) {
      const file = files[i];
      if (!file) continue;
      let pos = i === start.file ? start.offset : 0;
      while (pos < file.size) {
        if (opts.signal?.aborted) return;
        const n = readSync(file.fd, buf, 0, Math.min(buf.length, file.size - pos), pos);
        if (n <= 0) break;
        pos += n;
        yield* lines.push(buf.subarray(0, n));
      }
    }
    if (live) {
      for (;;) {
        const data = await live.next();
        if (data === null) break;
        yield* lines.push(data);
      }
    }
    const rest = lines.end();
    if (rest !== undefined && !opts.signal?.aborted) yield rest;
  } finally {
    live?.close();
    for (const file of files) closeSync(file.fd);
  }
}

function openAll(paths: string[]): OpenFile[] {
  const files: OpenFile[] = [];
  for (const path of paths) {
    try {
      const fd = openSync(path, 'r');
      files.push({ fd, size: fstatSync(fd).size });
    } catch {
      // Rotated away between listing and opening: its lines are in the next file or dropped.
    }
  }
  return files;
}

/** Where the last `count` lines begin, scanning backwards across the files. */
function tailStart(files: OpenFile[], count: number): { file: number; offset: number } {
  if (count <= 0) return { file: files.length, offset: 0 };
  const buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  let remaining = count;
  let first = true;
  for (let f = files.length - 1; f >= 0; f--) {
    const file = files[f];
    if (!file) continue;
    let pos = file.size;
    while (pos > 0) {
      const len = Math.min(buf.length, pos);
      pos -= len;
      readSync(file.fd, buf, 0, len, pos);
      for (let i = len - 1; i >= 0; i--) {
        const isNewline = buf[i] === 0x0a;
        // The newline that ends the very last line does not begin another one.
        if (first) {
          first = false;
          if (isNewline) continue;
        }
        if (isNewline && --remaining === 0) return { file: f, offset: pos + i + 1 };
      }
    }
  }
  return { file: 0, offset: 0 };
}

class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';

  *push(data: Buffer): Generator<string, void, undefined> {
    const parts = (this.partial + this.decoder.write(data)).split('\n');
    this.partial = parts.pop() ?? '';
    yield* parts;
  }

  /** The last line when it has no newline yet. */
  end(): string | undefined {
    const rest = this.partial + this.decoder.end();
    this.partial = '';
    return rest === '' ? undefined : rest;
  }
}

/** Data written to the log after the snapshot, queued for one reader. */
class LiveTail {
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private droppedBytes = 0;
  private ended = false;
  private wake: (() => void) | undefined;
  private readonly unsubscribe: () => void;
  private readonly onAbort = (): void => this.end();

  constructor(
    log: RotatingLog,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.unsubscribe = log.subscribe((data) => (data === null ? this.end() : this.push(data)));
    if (signal?.aborted) this.end();
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  async next(): Promise<Buffer | null> {
    while (this.queue.length === 0 && this.droppedBytes === 0 && !this.ended) {
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.signal?.aborted) return null;
    if (this.droppedBytes > 0) {
      const note = Buffer.from(`\n[berth: ${this.droppedBytes} bytes of log skipped: the reader fell behind]\n`);
      this.droppedBytes = 0;
      return note;
    }
    const data = this.queue.shift();
    if (!data) return null;
    this.queuedBytes -= data.length;
    return data;
  }

  close(): void {
    this.end();
    this.unsubscribe();
  }

  private push(data: Buffer): void {
    if (this.queuedBytes + data.length > MAX_FOLLOW_BACKLOG_BYTES) {
      this.droppedBytes += this.queuedBytes + data.length;
      this.queue.length = 0;
      this.queuedBytes = 0;
    } else {
      // Copy: the writer's buffer may be reused by the stream it came from.
      this.queue.push(Buffer.from(data));
      this.queuedBytes += data.length;
    }
    this.notify();
  }

  private end(): void {
    this.ended = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
