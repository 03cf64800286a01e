/**
 * Recordings of shell sessions, for audit (as SSM Session Manager logs sessions to S3): each
 * session's terminal output, timed, in asciicast v2 — the asciinema format, so `asciinema play`
 * replays one as it was seen. One file per session, `<dir>/<session>.cast`: a JSON header line (its
 * `berth` key says whose session it was, where, what ran and how it ended, once it has), then one
 * `[seconds, "o", text]` line per output chunk and `[seconds, "r", "COLSxROWS"]` per resize.
 *
 * What is typed is not recorded (it may be a password typed with echo off); what the terminal shows
 * is. A session records at most `maxBytesPerSession` of output, then a marker says it stopped. The
 * newest `keep` recordings are kept; older ones are removed as new ones start.
 */
import { closeSync, createWriteStream, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { BerthError } from '../core/errors.js';

export interface RecordingInfo {
  session: string;
  tenantId: string;
  hostId: string;
  command?: string;
  user?: string;
  /** The name of the API token that opened it. */
  openedBy?: string;
  startedAt: string;
  /** Set when the session ended (from a line the recorder appends then). */
  ended?: { at: string; how: string };
  bytes: number;
}

interface Header {
  version: 2;
  width: number;
  height: number;
  timestamp: number;
  env: { TERM: string };
  title: string;
  berth: Omit<RecordingInfo, 'ended' | 'bytes' | 'session'> & { session: string };
}

interface Recording {
  stream: WriteStream;
  decoder: StringDecoder;
  started: number;
  outputBytes: number;
  stopped: boolean;
}

export interface ShellRecorderOptions {
  dir: string;
  maxBytesPerSession?: number;
  keep?: number;
}

const SESSION_FILE = /^(sh-[0-9a-f]+)\.cast$/;
/** What a listing reads of a recording's start: its header line. */
const HEAD_BYTES = 64 * 1024;

export class ShellRecorder {
  private readonly live = new Map<string, Recording>();
  private readonly maxBytes: number;
  private readonly keep: number;

  constructor(private readonly opts: ShellRecorderOptions) {
    mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    this.maxBytes = opts.maxBytesPerSession ?? 64 * 1024 * 1024;
    this.keep = opts.keep ?? 1000;
  }

  start(info: { session: string; tenantId: string; hostId: string; command?: string; user?: string; openedBy?: string; term: string; cols: number; rows: number }): void {
    this.prune();
    const now = new Date();
    const header: Header = {
      version: 2,
      width: info.cols,
      height: info.rows,
      timestamp: Math.floor(now.getTime() / 1000),
      env: { TERM: info.term },
      title: `berth shell ${info.session} on ${info.hostId}`,
      berth: {
        session: info.session,
        tenantId: info.tenantId,
        hostId: info.hostId,
        // At most 8 KiB (shell-endpoint.ts), so even escaped the header fits in HEAD_BYTES.
        ...(info.command !== undefined ? { command: info.command } : {}),
        ...(info.user !== undefined ? { user: info.user } : {}),
        ...(info.openedBy !== undefined ? { openedBy: info.openedBy } : {}),
        startedAt: now.toISOString(),
      },
    };
    const stream = createWriteStream(this.pathOf(info.session), { flags: 'wx', mode: 0o600 });
    stream.on('error', () => this.live.delete(info.session)); // a full disk ends the recording, not the session
    stream.write(`${JSON.stringify(header)}\n`);
    this.live.set(info.session, { stream, decoder: new StringDecoder('utf8'), started: performance.now(), outputBytes: 0, stopped: false });
  }

  output(session: string, data: Buffer): void {
    const r = this.live.get(session);
    if (!r || r.stopped) return;
    r.outputBytes += data.length;
    if (r.outputBytes > this.maxBytes) {
      r.stopped = true;
      this.line(r, 'm', `recording stopped: the session's output passed ${this.maxBytes} bytes`);
      return;
    }
    const text = r.decoder.write(data);
    if (text) this.line(r, 'o', text);
  }

  resize(session: string, cols: number, rows: number): void {
    const r = this.live.get(session);
    if (r && !r.stopped) this.line(r, 'r', `${cols}x${rows}`);
  }

  /** The session ended: a last marker line says how, and the file is closed. */
  end(session: string, how: string): void {
    const r = this.live.get(session);
    if (!r) return;
    this.live.delete(session);
    if (!r.stopped) {
      const rest = r.decoder.end();
      if (rest) this.line(r, 'o', rest);
    }
    this.line(r, 'm', `ended: ${how}`);
    r.stream.end();
  }

  /** Closes every open recording (the server stops). */
  close(): void {
    for (const session of [...this.live.keys()]) this.end(session, 'the berth server stopped');
  }

  /** A recording's text (asciicast v2), if it is the tenant's. */
  read(tenantId: string, session: string): string {
    const text = SESSION_FILE.test(`${session}.cast`) ? readIfExists(this.pathOf(session)) : undefined;
    const info = text === undefined ? undefined : parseInfo(session, headAndTail(text), Buffer.byteLength(text));
    if (!text || info?.tenantId !== tenantId) {
      throw new BerthError('not_found', `no recording of shell session ${session}`, 'List recordings with `berth shell recordings`; sessions are recorded when the server runs with --record-shells.', { sessionId: session });
    }
    return text;
  }

  /** The tenant's recordings, newest first. */
  list(tenantId: string, hostId?: string): RecordingInfo[] {
    const out: RecordingInfo[] = [];
    for (const name of this.files()) {
      const session = SESSION_FILE.exec(name)?.[1];
      const ends = session ? readEnds(join(this.opts.dir, name)) : undefined;
      const info = session && ends ? parseInfo(session, ends, ends.size) : undefined;
      if (info && info.tenantId === tenantId && (hostId === undefined || info.hostId === hostId)) out.push(info);
    }
    return out.sort((a, b) => b.startedAt.localeCompare(a.startedAt));
  }

  private line(r: Recording, kind: 'o' | 'r' | 'm', data: string): void {
    const t = Math.round(performance.now() - r.started) / 1000;
    r.stream.write(`${JSON.stringify([t, kind, data])}\n`);
  }

  private pathOf(session: string): string {
    return join(this.opts.dir, `${session}.cast`);
  }

  private files(): string[] {
    try {
      return readdirSync(this.opts.dir).filter((n) => SESSION_FILE.test(n));
    } catch {
      return [];
    }
  }

  /** Removes the oldest recordings beyond `keep - 1`, so the one about to start fits. */
  private prune(): void {
    const files = this.files();
    if (files.length < this.keep) return;
    const byAge = files
      .map((name) => ({ name, mtime: statSync(join(this.opts.dir, name), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
      .filter((f) => !this.live.has(f.name.slice(0, -'.cast'.length)))
      .sort((a, b) => a.mtime - b.mtime);
    for (const f of byAge.slice(0, files.length - this.keep + 1)) rmSync(join(this.opts.dir, f.name), { force: true });
  }
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A recording's first and last lines. */
interface Ends {
  first: string;
  last: string;
}

function headAndTail(text: string): Ends {
  return { first: text.slice(0, text.indexOf('\n')), last: text.trimEnd().split('\n').at(-1) ?? '' };
}

/** The first and last lines of a file, reading only its ends (a recording may be 64 MiB). */
function readEnds(path: string): (Ends & { size: number }) | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(Math.min(size, HEAD_BYTES));
    readSync(fd, head, 0, head.length, 0);
    const tail = Buffer.alloc(Math.min(size, 16 * 1024));
    readSync(fd, tail, 0, tail.length, size - tail.length);
    const headText = head.toString('utf8');
    return { first: headText.slice(0, headText.indexOf('\n')), last: tail.toString('utf8').trimEnd().split('\n').at(-1) ?? '', size };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function parseInfo(session: string, ends: Ends, bytes: number): RecordingInfo | undefined {
  try {
    const header = JSON.parse(ends.first) as Header;
    const last = ends.last;
    const ending = last.startsWith('[') ? (JSON.parse(last) as [number, string, string]) : undefined;
    const ended = ending?.[1] === 'm' && ending[2].startsWith('ended: ') ? { at: new Date(Date.parse(header.berth.startedAt) + ending[0] * 1000).toISOString(), how: ending[2].slice(7) } : undefined;
    return { ...header.berth, session, ...(ended ? { ended } : {}), bytes };
  } catch {
    return undefined;
  }
}
