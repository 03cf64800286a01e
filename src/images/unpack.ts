/**
 * Unpacking an untrusted tar archive (an app build's slug, a downloaded artifact) into a directory
 * that becomes part of an image. An archive that tries to reach outside its target (absolute or
 * '..' paths, symlinks or hardlinks leading out, writes through such links, device nodes) is
 * rejected as a whole, before anything is written.
 *
 * Two passes over the file, both streaming: the first only reads the headers and checks every entry
 * (unpack-plan.ts); the second, run only when all passed, extracts into a fresh staging directory
 * next to the target and renames it into place. The staging directory starts empty, so the checks
 * model exactly what is on disk, and a failure half-way leaves nothing at the target. The second pass
 * repeats the checks in case the file changed in between.
 */
import type { Stats } from 'node:fs';
import { createReadStream } from 'node:fs';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Parser, ReadEntry, Unpack } from 'tar';
import { BerthError, errorMessage, isBerthError } from '../core/errors.js';
import { UnpackPlan } from './unpack-plan.js';

export interface UnpackLimits {
  /** Sum of the entries' declared sizes. */
  maxBytes: number;
  /** Default 1_000_000. */
  maxEntries?: number;
}

export interface UnpackResult {
  /** Regular files, hardlinks included. */
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

const DEFAULT_MAX_ENTRIES = 1_000_000;
// Slugs come from app builds, not from trusted images: a setuid-root binary in one would hand
// root to whoever runs it on the host. Every other mode bit is kept as archived.
const SETUID_SETGID = 0o6000;

export async function unpackTarSafely(
  archive: string,
  targetDir: string,
  limits: UnpackLimits,
  signal?: AbortSignal,
): Promise<UnpackResult> {
  const name = basename(archive);
  const target = resolve(targetDir);
  const maxEntries = limits.maxEntries ?? DEFAULT_MAX_ENTRIES;
  if (signal?.aborted) throw cancelled(name);
  const existing = await checkTarget(target);

  const check = new UnpackPlan(name, limits.maxBytes, maxEntries);
  await feed(archive, name, check, signal, (fail) => {
    const parser = new Parser({ strict: true });
    const admit = (entry: ReadEntry): void => {
      try {
        check.admit(entry);
        entry.resume();
      } catch (err) {
        fail(err);
      }
    };
    parser.on('entry', admit);
    parser.on('ignoredEntry', admit); // entries of types node-tar skips: admit refuses them
    return parser;
  });
  check.finish();

  await mkdir(dirname(target), { recursive: true });
  const staging = await mkdtemp(join(dirname(target), `.${basename(target)}.unpack-`));
  try {
    const result = await extract(archive, name, staging, limits.maxBytes, maxEntries, existing, signal);
    await rename(staging, target); // replaces the target when it is an empty directory
    return result;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    if (isBerthError(err)) throw err;
    throw new BerthError('internal', `${name}: unpacking into ${target} failed: ${errorMessage(err)}`, 'Check the disk space and permissions of the target, then retry.', undefined, { cause: err });
  }
}

/** The target must be missing or an empty real directory; a symlink there could lead anywhere. */
async function checkTarget(target: string): Promise<Stats | undefined> {
  let stats: Stats;
  try {
    stats = await lstat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const refuse = (what: string): BerthError =>
    new BerthError('validation_failed', `cannot unpack into ${target}: it ${what}`, 'Unpack into a new or empty directory.', { target });
  if (stats.isSymbolicLink()) throw refuse('is a symlink');
  if (!stats.isDirectory()) throw refuse('is not a directory');
  if ((await readdir(target)).length > 0) throw refuse('is not empty');
  return stats;
}

async function extract(
  archive: string,
  name: string,
  staging: string,
  maxBytes: number,
  maxEntries: number,
  existing: Stats | undefined,
  signal: AbortSignal | undefined,
): Promise<UnpackResult> {
  const plan = new UnpackPlan(name, maxBytes, maxEntries);
  const result: UnpackResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  // node-tar applies the process umask and forces dirs to u+rwx; modes are set exactly at the end.
  const modes = new Map<string, number>();
  let rootMode = existing ? existing.mode & 0o7777 : 0o755;
  const skipped = new WeakSet<ReadEntry>();

  await feed(archive, name, plan, signal, (fail) => {
    const unpack = new Unpack({
      cwd: staging,
      strict: true,
      // The checks above replace node-tar's own: they follow the archive's symlinks the way the
      // kernel will (node-tar refuses any symlink chain), and the staging dir holds nothing else.
      preservePaths: true,
      preserveOwner: false, // everything belongs to the unpacking user (root), whatever the archive says
      dmode: 0o755,
      fmode: 0o644,
      filter: (_path, entry) => {
        if (!(entry instanceof ReadEntry)) return false;
        try {
          const admitted = plan.admit(entry);
          const mode = typeof entry.mode === 'number' ? entry.mode & 0o7777 & ~SETUID_SETGID : undefined;
          if (admitted.path === '') {
            if (mode !== undefined) rootMode = mode;
            skipped.add(entry);
            return false;
          }
          entry.path = admitted.path;
          if (admitted.kind === 'hardlink') entry.linkpath = admitted.linkpath;
          if (mode !== undefined) entry.mode = mode;
          if ((admitted.kind === 'file' || admitted.kind === 'dir') && mode !== undefined) modes.set(admitted.path, mode);
          else modes.delete(admitted.path);
          if (admitted.kind === 'dir') result.dirs++;
          else if (admitted.kind === 'symlink') result.symlinks++;
          else result.files++;
          return true;
        } catch (err) {
          fail(err);
          return false;
        }
      },
    });
    unpack.on('ignoredEntry', (entry: ReadEntry) => {
      if (!skipped.has(entry)) fail(new Error(`entry "${entry.path}" (${entry.type}) changed since it was checked`));
    });
    return unpack;
  });
  plan.finish();
  result.bytes = plan.bytes;

  for (const [path, mode] of modes) {
    const file = join(staging, path);
    if (!(await lstat(file)).isSymbolicLink()) await chmod(file, mode);
  }
  await chmod(staging, rootMode);
  if (existing) await chown(staging, existing.uid, existing.gid);
  return result;
}

/**
 * Streams the archive into a parser made by `make` and settles when it is done. `make` gets the
 * function that stops everything with an error, for its own event handlers: a throw inside one
 * would escape into the read stream instead.
 */
function feed(
  archive: string,
  name: string,
  plan: UnpackPlan,
  signal: AbortSignal | undefined,
  make: (fail: (err: unknown) => void) => Parser,
): Promise<void> {
  return new Promise<void>((resolvePromise, reject) => {
    const input = createReadStream(archive);
    let settled = false;
    const settle = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (err === undefined) {
        resolvePromise();
        return;
      }
      input.unpipe();
      input.destroy();
      // abort() reports through the 'error' event, which is ignored once settled.
      parser.abort(new Error('unpack stopped'));
      // fs errors from the parser are the extraction's writes: not the archive's fault.
      reject(isBerthError(err) || (err instanceof Error && hasSyscall(err)) ? err : archiveError(name, err, plan.entries === 0));
    };
    const onAbort = (): void => settle(cancelled(name));
    const parser = make(settle);
    parser.on('error', settle);
    parser.on('close', () => settle());
    input.on('error', (err) => settle(readError(name, err)));
    signal?.addEventListener('abort', onAbort, { once: true });
    input.pipe(parser);
  });
}

/** node-tar's and zlib's errors, told in terms of the artifact. */
function archiveError(name: string, err: unknown, atStart: boolean): BerthError {
  const message = errorMessage(err);
  let what: string;
  let hint = 'Check that the artifact is a complete tar or tar.gz archive.';
  // A bad checksum in the very first header means the file is no tar archive at all.
  if (/Unrecognized archive format/.test(message) || (atStart && /checksum failure/.test(message))) {
    what = 'not a tar archive (plain or gzip-compressed)';
  } else if (/Truncated input|unexpected end of file/i.test(message)) {
    what = 'the archive is truncated';
  } else if (/max decompression ratio/.test(message)) {
    what = `the archive decompresses suspiciously well (${message})`;
    hint = 'Archives that expand more than 1000-fold are refused as likely decompression bombs.';
  } else {
    what = `the archive is corrupt or unreadable: ${message}`;
  }
  return new BerthError('validation_failed', `${name}: ${what}`, hint, { archive: name }, { cause: err });
}

function readError(name: string, err: Error): BerthError {
  const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
  const what = missing ? 'the archive does not exist' : `cannot read the archive: ${err.message}`;
  return new BerthError('validation_failed', `${name}: ${what}`, 'Check the path of the archive.', { archive: name }, { cause: err });
}

function hasSyscall(err: Error): boolean {
  return typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

function cancelled(name: string): BerthError {
  return new BerthError('deadline_exceeded', `${name}: unpacking was cancelled`, 'Retry if the image is still wanted.');
}
