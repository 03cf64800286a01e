/**
 * Artifacts a bake needs (app slugs, tarballs, binaries), fetched once per content digest. Each is
 * kept read-only under `<dir>/sha256/<hex>`, so a get that names its sha256 and finds it there does
 * no network or file read at all, and two bakes of the same artifact share one copy.
 *
 * A download or copy streams into a temp file in the cache dir while it is hashed and measured; it
 * is renamed into place only once complete and matching its checksum, so a bad or cut-off download
 * is never cached and concurrent gets of one digest each rename a complete, identical file.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { Readable } from 'node:stream';
import { Readable as NodeReadable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { BerthError, errorMessage, isBerthError } from '../core/errors.js';

/** `url`: http:// or https:// only. `path`: an absolute path on this machine. */
export type ArtifactSource = { url: string } | { path: string };

export interface FetchedArtifact {
  /** In the cache, read-only, named by digest. */
  path: string;
  sha256: string;
  bytes: number;
  cached: boolean;
}

export interface ArtifactGetOptions {
  /** 64 hex digits, optionally prefixed `sha256:`. Required for URLs. */
  sha256?: string;
  maxBytes: number;
  /** A URL without a checksum is fetched (each time) and named by what arrived: environments' slugs. */
  unverified?: boolean;
  signal?: AbortSignal;
  onProgress?: (bytes: number, total?: number) => void;
}

interface Streamed {
  sha256: string;
  bytes: number;
}

/** Thrown inside the stream when the limit is passed; reported with the source's name. */
class TooLarge extends Error {}

export class ArtifactCache {
  constructor(private readonly dir: string) {}

  async get(source: ArtifactSource, opts: ArtifactGetOptions): Promise<FetchedArtifact> {
    const label = 'url' in source ? source.url : source.path;
    const url = 'url' in source ? checkUrl(source.url) : undefined;
    if ('path' in source && !isAbsolute(source.path)) {
      throw invalid(`artifact path ${source.path} is not absolute`, 'Give the artifact as an absolute path on this machine.', { source: label });
    }
    const expected = opts.sha256 === undefined ? undefined : parseSha256(opts.sha256);
    if (url && expected === undefined && !opts.unverified) {
      throw invalid('a fetched URL needs a sha256 checksum', `Add the sha256 of ${label}, e.g. from \`sha256sum\`.`, { source: label });
    }
    if (expected !== undefined) {
      const hit = await this.lookup(expected);
      if (hit) return hit;
    }

    await mkdir(join(this.dir, 'sha256'), { recursive: true });
    await mkdir(join(this.dir, 'tmp'), { recursive: true });
    const temp = join(this.dir, 'tmp', `${randomUUID()}.partial`);
    try {
      const streamed = url ? await this.download(url, label, temp, opts) : await this.copy(label, temp, opts);
      if (expected !== undefined && streamed.sha256 !== expected) {
        throw new BerthError(
          'validation_failed',
          `checksum mismatch for ${label}: expected sha256 ${expected}, got ${streamed.sha256}`,
          'The artifact is not the one the checksum names: fix the checksum, or the source if it was replaced or damaged.',
          { expected, actual: streamed.sha256, source: label },
        );
      }
      const path = this.pathFor(streamed.sha256);
      await chmod(temp, 0o444);
      await rename(temp, path); // atomic; a concurrent get of the same digest renames identical content
      return { path, sha256: streamed.sha256, bytes: streamed.bytes, cached: false };
    } catch (err) {
      await rm(temp, { force: true });
      throw failure(err, label, url ? 'fetching' : 'reading', opts);
    }
  }

  private pathFor(hex: string): string {
    return join(this.dir, 'sha256', hex);
  }

  private async lookup(hex: string): Promise<FetchedArtifact | undefined> {
    const path = this.pathFor(hex);
    try {
      const stats = await stat(path);
      if (!stats.isFile()) return undefined;
      // Its last use, for collect(): an artifact a bake keeps using is kept.
      const now = new Date();
      await utimes(path, now, now).catch(() => undefined);
      return { path, sha256: hex, bytes: stats.size, cached: true };
    } catch {
      return undefined;
    }
  }

  /**
   * Removes the artifacts last fetched or used before `unusedBefore` (ms since the epoch), and
   * downloads left unfinished by then (a crash mid-fetch). What a bake needs again is fetched again,
   * checked against the same checksum.
   */
  async collect(unusedBefore: number): Promise<{ files: number; bytes: number }> {
    let files = 0;
    let bytes = 0;
    for (const sub of ['sha256', 'tmp']) {
      const names = await readdir(join(this.dir, sub)).catch(() => [] as string[]);
      for (const name of names) {
        const path = join(this.dir, sub, name);
        const stats = await stat(path).catch(() => undefined);
        if (!stats?.isFile() || stats.mtimeMs >= unusedBefore) continue;
        await rm(path, { force: true });
        files++;
        bytes += stats.size;
      }
    }
    return { files, bytes };
  }

  private async download(url: URL, label: string, temp: string, opts: ArtifactGetOptions): Promise<Streamed> {
    const response = await fetch(url, { signal: opts.signal ?? null });
    if (response.status !== 200 || !response.body) {
      await response.body?.cancel();
      throw invalid(
        `fetching ${label} failed: HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`,
        'Check that the URL is right and the server serves it.',
        { source: label, status: response.status },
      );
    }
    const declared = Number(response.headers.get('content-length') ?? NaN);
    const total = Number.isFinite(declared) ? declared : undefined;
    if (total !== undefined && total > opts.maxBytes) {
      await response.body.cancel();
      throw new TooLarge();
    }
    const body = NodeReadable.fromWeb(response.body as WebReadableStream<Uint8Array>);
    return this.store(body, temp, opts, total);
  }

  private async copy(path: string, temp: string, opts: ArtifactGetOptions): Promise<Streamed> {
    let size: number;
    try {
      const stats = await stat(path);
      if (!stats.isFile()) throw invalid(`artifact ${path} is not a regular file`, 'Give the path of the artifact file itself.', { source: path });
      size = stats.size;
    } catch (err) {
      if (isBerthError(err)) throw err;
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      throw invalid(missing ? `artifact ${path} does not exist` : `cannot read artifact ${path}: ${errorMessage(err)}`, 'Check the path of the artifact on this machine.', { source: path });
    }
    if (size > opts.maxBytes) throw new TooLarge();
    return this.store(createReadStream(path), temp, opts, size);
  }

  /** Writes `input` to `temp`, hashing and counting it; stops at the size limit. */
  private async store(input: Readable, temp: string, opts: ArtifactGetOptions, total: number | undefined): Promise<Streamed> {
    const hash = createHash('sha256');
    let bytes = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        if (bytes > opts.maxBytes) {
          callback(new TooLarge());
          return;
        }
        hash.update(chunk);
        opts.onProgress?.(bytes, total);
        callback(null, chunk);
      },
    });
    const output = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
    await pipeline(input, meter, output, opts.signal ? { signal: opts.signal } : {});
    return { sha256: hash.digest('hex'), bytes };
  }
}

/** `sha256:<hex>` or `<hex>`, as lowercase hex. */
function parseSha256(value: string): string {
  const hex = value.replace(/^sha256:/i, '');
  if (!/^[0-9a-f]{64}$/i.test(hex)) {
    throw invalid(`"${value}" is not a sha256 checksum`, 'Give 64 hex digits, optionally prefixed with "sha256:".', { sha256: value });
  }
  return hex.toLowerCase();
}

function checkUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(`"${value}" is not a URL`, 'Give an http:// or https:// URL, or an absolute path on this machine.', { source: value });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw invalid(
      `cannot fetch ${value}: only http:// and https:// URLs are supported, not ${url.protocol}//`,
      'Serve the artifact over HTTP(S), or give it as an absolute path on this machine.',
      { source: value },
    );
  }
  return url;
}

/** Any error of a get, told in terms of the source. */
function failure(err: unknown, label: string, verb: 'fetching' | 'reading', opts: ArtifactGetOptions): BerthError {
  if (isBerthError(err)) return err;
  if (err instanceof TooLarge) {
    return invalid(`${label} exceeds the size limit of ${opts.maxBytes} bytes`, 'Use a smaller artifact, or raise the limit if the size is expected.', {
      source: label,
      maxBytes: opts.maxBytes,
    });
  }
  if (opts.signal?.aborted) {
    return new BerthError('deadline_exceeded', `${verb} ${label} was cancelled`, 'Retry if the artifact is still wanted.', { source: label });
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EROFS' || code === 'EDQUOT') {
    return new BerthError('internal', `cannot store ${label} in the artifact cache: ${errorMessage(err)}`, 'Check the disk space and permissions of the artifact cache.', { source: label }, { cause: err });
  }
  // fetch() reports network failures as "fetch failed" with the real reason as its cause.
  const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
  return invalid(`${verb} ${label} failed: ${errorMessage(cause)}`, 'Check that the source is reachable from this machine, then retry.', { source: label }, err);
}

function invalid(message: string, hint: string, details: Record<string, unknown>, cause?: unknown): BerthError {
  return new BerthError('validation_failed', message, hint, details, cause === undefined ? undefined : { cause });
}
