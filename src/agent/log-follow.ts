/**
 * `berth svc logs -f` on the host: prints a service's log and follows it across the supervisor's
 * rotations without losing a line. `tail -F` cannot promise that here: GNU tail treats overlayfs
 * (every host's root) as remote and polls once a second, so files rotated in between are skipped.
 * This follower keeps the file it reads open (a renamed file is still the same file), drains it
 * when the name moves on, reads any rotated file it never opened (<log>.1, .2, …, oldest first),
 * then goes on with the new file from its start.
 *
 * Runs as `node berth-agent.cjs follow [-n LINES] FILE` (see entry.ts): commands get the agent's
 * node and bundle as BERTH_NODE and BERTH_AGENT_BUNDLE.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FollowOptions {
  /** Lines of the current file printed first. */
  lines: number;
  pollMs?: number;
  signal?: AbortSignal;
  write: (chunk: Buffer) => Promise<void> | void;
}

interface Reading {
  handle: FileHandle;
  ino: number;
  pos: number;
}

const CHUNK = 64 * 1024;

export async function followLog(path: string, opts: FollowOptions): Promise<void> {
  const pollMs = opts.pollMs ?? 100;
  let current = await openAt(path, 'tail', opts.lines, opts.write);
  try {
    while (!opts.signal?.aborted) {
      if (current) await drain(current, opts.write);
      const now = await stat(path).catch(() => undefined);
      if (now && (!current || now.ino !== current.ino)) {
        // Rotated (or created). The new file is opened before the rotated files between them are
        // read, so a rotation meanwhile moves a file we hold. The old one is drained once more:
        // lines written to it after the drain above and before it was renamed are only there.
        const finished = current;
        current = await openAt(path, 'start', 0, opts.write);
        if (finished) {
          await drain(finished, opts.write);
          await finished.handle.close();
          await readMissed(path, finished.ino, current?.ino, opts.write);
        }
        continue;
      }
      await sleep(pollMs, undefined, { signal: opts.signal }).catch(() => undefined);
    }
  } finally {
    await current?.handle.close();
  }
}

/** Opens `path` at its start, or with its last `lines` lines printed; undefined when it is not there yet. */
async function openAt(path: string, from: 'start' | 'tail', lines: number, write: FollowOptions['write']): Promise<Reading | undefined> {
  const handle = await open(path, 'r').catch(() => undefined);
  if (!handle) return undefined;
  const st = await handle.stat();
  if (from === 'start') return { handle, ino: st.ino, pos: 0 };
  const start = await tailStart(handle, st.size, lines);
  const reading = { handle, ino: st.ino, pos: start };
  await drain(reading, write);
  return reading;
}

/** The offset where the last `lines` lines of the file begin. */
async function tailStart(handle: FileHandle, size: number, lines: number): Promise<number> {
  if (lines <= 0) return size;
  let end = size;
  let newlines = 0;
  const buf = Buffer.alloc(CHUNK);
  // A file that ends in a newline: that newline ends the last line rather than starting a new one.
  let skipLast = true;
  while (end > 0) {
    const start = Math.max(0, end - CHUNK);
    const { bytesRead } = await handle.read(buf, 0, end - start, start);
    for (let i = bytesRead - 1; i >= 0; i--) {
      if (buf[i] !== 0x0a) {
        skipLast = false;
        continue;
      }
      if (skipLast) {
        skipLast = false;
        continue;
      }
      if (++newlines === lines) return start + i + 1;
    }
    end = start;
  }
  return 0;
}

async function drain(reading: Reading, write: FollowOptions['write']): Promise<void> {
  const buf = Buffer.alloc(CHUNK);
  for (;;) {
    const { bytesRead } = await reading.handle.read(buf, 0, CHUNK, reading.pos);
    if (bytesRead === 0) return;
    reading.pos += bytesRead;
    await write(Buffer.from(buf.subarray(0, bytesRead)));
  }
}

/**
 * The rotated files between the one just finished and the one now held, each read whole, oldest
 * first: <log>.1, .2, … newer than the finished file (or all left, when it was rotated past the
 * count kept), without the held file and what is newer than it (rotated since it was opened).
 */
async function readMissed(path: string, finishedIno: number, heldIno: number | undefined, write: FollowOptions['write']): Promise<void> {
  const newer: Array<{ file: string; ino: number }> = [];
  for (let k = 1; ; k++) {
    const st = await stat(`${path}.${k}`).catch(() => undefined);
    if (!st || st.ino === finishedIno) break;
    newer.push({ file: `${path}.${k}`, ino: st.ino });
  }
  const held = newer.findIndex((f) => f.ino === heldIno);
  const missed = (held >= 0 ? newer.slice(held + 1) : newer).map((f) => f.file);
  for (const file of missed.reverse()) {
    const reading = await openAt(file, 'start', 0, write);
    if (!reading) continue;
    try {
      await drain(reading, write);
    } finally {
      await reading.handle.close();
    }
  }
}

/** `follow [-n LINES] FILE` from the command line; resolves when stdin closes or on TERM/INT. */
export async function followMain(args: string[]): Promise<number> {
  let lines = 10;
  let file: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '-n') lines = Number(args[++i]);
    else file = arg;
  }
  if (file === undefined || !Number.isInteger(lines) || lines < 0) {
    process.stderr.write('usage: follow [-n LINES] FILE\n');
    return 2;
  }
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  process.once('SIGINT', () => stop.abort());
  const write = (chunk: Buffer) =>
    new Promise<void>((resolve, reject) => {
      process.stdout.write(chunk, (err) => (err ? reject(err) : resolve()));
    });
  await followLog(file, { lines, signal: stop.signal, write });
  return 0;
}
