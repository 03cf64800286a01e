/**
 * A service's log file, written by the agent: `<name>.log`, rotated to `<name>.log.1` … `.log.<keep>`
 * before it would grow past maxBytes, each line prefixed with the ISO time it was read. Writes are
 * synchronous and small (one read from the service's FIFO at a time), which keeps ordering trivial and
 * lets a reader snapshot the files and subscribe to new data with no gap and no overlap.
 */
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { ServiceLogPolicy } from '../../protocol/messages.js';

/** Receives every byte written to the log, in order; null once the log is closed. */
export type LogListener = (data: Buffer | null) => void;

const NEWLINE = 0x0a;

export class RotatingLog {
  /** Undefined while the file cannot be opened (its directory removed, no inodes): output is dropped meanwhile. */
  private fd: number | undefined;
  private size: number;
  /** False while the service is in the middle of a line (its next bytes get no timestamp). */
  private atLineStart: boolean;
  private closed = false;
  private writeErrorReported = false;
  private readonly listeners = new Set<LogListener>();

  constructor(
    readonly path: string,
    private policy: ServiceLogPolicy,
    private readonly clock: () => number,
    private readonly onError: (message: string) => void,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a+');
    this.size = fstatSync(this.fd).size;
    this.atLineStart = this.size === 0 || lastByte(this.fd, this.size) === NEWLINE;
    this.pruneBeyondKeep();
  }

  setPolicy(policy: ServiceLogPolicy): void {
    this.policy = policy;
    this.pruneBeyondKeep();
  }

  /** The retained files, oldest first; the current file last. */
  files(): string[] {
    const rotated: string[] = [];
    for (let i = this.policy.keep; i >= 1; i--) rotated.push(`${this.path}.${i}`);
    return [...rotated.filter((path) => existsSync(path)), this.path];
  }

  /** Output of the service, as read from its FIFO. */
  write(chunk: Buffer): void {
    if (this.closed || chunk.length === 0) return;
    const stamp = this.policy.timestamps ? Buffer.from(`${new Date(this.clock()).toISOString()} `) : undefined;
    const batch: Buffer[] = [];
    let batchBytes = 0;
    let pos = 0;
    while (pos < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, pos);
      const end = newline < 0 ? chunk.length : newline + 1;
      const prefix = stamp && this.atLineStart ? stamp : undefined;
      const bytes = (prefix?.length ?? 0) + end - pos;
      const pending = this.size + batchBytes;
      // Rotate between lines; in the middle of a line only once the file is full (a service that never
      // writes a newline must not grow the file without bound).
      if (pending > 0 && pending + bytes > this.policy.maxBytes && (this.atLineStart || pending >= this.policy.maxBytes)) {
        this.append(batch);
        batch.length = 0;
        batchBytes = 0;
        this.rotate();
      }
      if (prefix) batch.push(prefix);
      batch.push(chunk.subarray(pos, end));
      batchBytes += bytes;
      this.atLineStart = newline >= 0;
      pos = end;
    }
    this.append(batch);
  }

  /** A line from the supervisor itself ("berth: started (pid 42)"), on a line of its own. */
  note(text: string): void {
    if (!this.atLineStart) this.write(Buffer.from('\n'));
    this.write(Buffer.from(`berth: ${text}\n`));
  }

  subscribe(listener: LogListener): () => void {
    if (this.closed) {
      listener(null);
      return () => undefined;
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.fd !== undefined) closeSync(this.fd);
    for (const listener of this.listeners) listener(null);
    this.listeners.clear();
  }

  private append(parts: Buffer[]): void {
    if (parts.length === 0) return;
    const data = parts.length === 1 && parts[0] ? parts[0] : Buffer.concat(parts);
    const fd = this.fd ?? this.reopen();
    if (fd === undefined) return;
    try {
      let off = 0;
      while (off < data.length) off += writeSync(fd, data, off, data.length - off);
      this.size += data.length;
      this.writeErrorReported = false;
    } catch (e) {
      // Disk full or the like: drop this output (the service must not block on its log), say so once.
      if (!this.writeErrorReported) this.onError(`cannot write ${this.path}: ${(e as Error).message}`);
      this.writeErrorReported = true;
      return;
    }
    for (const listener of this.listeners) listener(data);
  }

  /** <name>.log.<keep-1> -> .<keep> (dropping the oldest), …, <name>.log -> .1, then a new <name>.log. */
  private rotate(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    const keep = this.policy.keep;
    try {
      if (keep === 0) {
        rmSync(this.path, { force: true });
      } else {
        for (let i = keep - 1; i >= 1; i--) renameIfExists(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        renameSync(this.path, `${this.path}.1`);
      }
    } catch (e) {
      this.onError(`cannot rotate ${this.path}: ${(e as Error).message}`);
    }
    this.reopen();
  }

  /**
   * A new file at the path (its directory made again if someone removed it). When that fails the
   * output is dropped, said once, and tried again at the next write: the agent must not die of it.
   */
  private reopen(): number | undefined {
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      this.fd = openSync(this.path, 'a+');
      this.size = fstatSync(this.fd).size;
      return this.fd;
    } catch (e) {
      this.fd = undefined;
      if (!this.writeErrorReported) this.onError(`cannot open ${this.path}: ${(e as Error).message}; its output is dropped until it can be`);
      this.writeErrorReported = true;
      return undefined;
    }
  }

  /** Rotated files numbered past `keep` (left by a policy that kept more). */
  private pruneBeyondKeep(): void {
    const base = basename(this.path);
    let names: string[];
    try {
      names = readdirSync(dirname(this.path));
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.startsWith(`${base}.`)) continue;
      const n = Number(name.slice(base.length + 1));
      if (Number.isInteger(n) && n > this.policy.keep) rmSync(join(dirname(this.path), name), { force: true });
    }
  }
}

function renameIfExists(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

function lastByte(fd: number, size: number): number | undefined {
  const buf = Buffer.alloc(1);
  return readSync(fd, buf, 0, 1, size - 1) === 1 ? buf[0] : undefined;
}
