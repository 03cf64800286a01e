import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ArtifactCache } from './artifacts.js';
import { rejection } from '../../test/helpers/errors.js';

const ARTIFACT = Buffer.from('slug contents '.repeat(5000));
const DIGEST = createHash('sha256').update(ARTIFACT).digest('hex');
const OTHER_DIGEST = createHash('sha256').update('something else').digest('hex');

let server: Server;
let baseUrl: string;
const requests: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (req.url === '/slug.tgz') {
      res.writeHead(200, { 'content-length': ARTIFACT.length });
      res.end(ARTIFACT);
    } else if (req.url === '/chunked.tgz') {
      // No content-length: the limit can only be enforced while streaming.
      res.writeHead(200);
      for (let i = 0; i < 10; i++) res.write(ARTIFACT);
      res.end();
    } else {
      res.writeHead(404);
      res.end('not here');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

let dir: string;
let cache: ArtifactCache;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'berth-artifacts-'));
  cache = new ArtifactCache(join(dir, 'cache'));
  requests.length = 0;
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});


function cacheFiles(): string[] {
  const names: string[] = [];
  for (const sub of ['sha256', 'tmp']) {
    const path = join(dir, 'cache', sub);
    if (existsSync(path)) names.push(...readdirSync(path).map((name) => `${sub}/${name}`));
  }
  return names;
}

describe('ArtifactCache: URLs', () => {
  it('downloads once, then serves the digest from the cache without a request', async () => {
    const progress: Array<[number, number | undefined]> = [];
    const first = await cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20, onProgress: (b, t) => progress.push([b, t]) });
    expect(first).toEqual({ path: join(dir, 'cache', 'sha256', DIGEST), sha256: DIGEST, bytes: ARTIFACT.length, cached: false });
    expect(readFileSync(first.path).equals(ARTIFACT)).toBe(true);
    expect(statSync(first.path).mode & 0o777).toBe(0o444);
    expect(progress.at(-1)).toEqual([ARTIFACT.length, ARTIFACT.length]);

    const second = await cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: `sha256:${DIGEST.toUpperCase()}`, maxBytes: 1 << 20 });
    expect(second).toEqual({ ...first, cached: true });
    expect(requests).toEqual(['/slug.tgz']);
    expect(cacheFiles()).toEqual([`sha256/${DIGEST}`]);
  });

  it('keeps concurrent gets of one digest safe', async () => {
    const gets = [1, 2, 3].map(() => cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20 }));
    const results = await Promise.all(gets);
    for (const result of results) expect(readFileSync(result.path).equals(ARTIFACT)).toBe(true);
    expect(cacheFiles()).toEqual([`sha256/${DIGEST}`]);
  });

  it('refuses a wrong checksum, naming both digests, and caches nothing', async () => {
    const err = await rejection(cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: OTHER_DIGEST, maxBytes: 1 << 20 }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toBe(`checksum mismatch for ${baseUrl}/slug.tgz: expected sha256 ${OTHER_DIGEST}, got ${DIGEST}`);
    expect(err.details).toEqual({ expected: OTHER_DIGEST, actual: DIGEST, source: `${baseUrl}/slug.tgz` });
    expect(cacheFiles()).toEqual([]);
  });

  it('reports an HTTP error with the URL and status', async () => {
    const err = await rejection(cache.get({ url: `${baseUrl}/missing.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20 }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toBe(`fetching ${baseUrl}/missing.tgz failed: HTTP 404 Not Found`);
    expect(cacheFiles()).toEqual([]);
  });

  it('stops at the size limit, declared or streamed, and leaves no temp file', async () => {
    for (const path of ['/slug.tgz', '/chunked.tgz']) {
      const err = await rejection(cache.get({ url: `${baseUrl}${path}` }, { sha256: DIGEST, maxBytes: 1000 }));
      expect(err.message).toBe(`${baseUrl}${path} exceeds the size limit of 1000 bytes`);
      expect(cacheFiles()).toEqual([]);
    }
  });

  it('reports a network error with its cause', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await rejection(cache.get({ url: `http://127.0.0.1:${port}/x` }, { sha256: DIGEST, maxBytes: 1000 }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toMatch(new RegExp(`^fetching http://127.0.0.1:${port}/x failed: .*ECONNREFUSED`));
  });

  it('refuses other schemes, a URL without a checksum, and a malformed checksum', async () => {
    for (const url of ['ftp://example.com/slug.tgz', 'file:///etc/passwd']) {
      const err = await rejection(cache.get({ url }, { sha256: DIGEST, maxBytes: 1000 }));
      expect(err.code).toBe('validation_failed');
      expect(err.message).toMatch(/only http:\/\/ and https:\/\/ URLs are supported/);
    }
    const noSum = await rejection(cache.get({ url: `${baseUrl}/slug.tgz` }, { maxBytes: 1 << 20 }));
    expect(noSum.message).toBe('a fetched URL needs a sha256 checksum');
    for (const sha256 of ['abc', `md5:${DIGEST}`, `${DIGEST}0`, 'z'.repeat(64)]) {
      const bad = await rejection(cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256, maxBytes: 1 << 20 }));
      expect(bad.code).toBe('validation_failed');
      expect(bad.message).toMatch(/is not a sha256 checksum/);
    }
    expect(requests).toEqual([]);
  });

  it('reports a cancelled download', async () => {
    const err = await rejection(cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20, signal: AbortSignal.abort() }));
    expect(err.code).toBe('deadline_exceeded');
    expect(cacheFiles()).toEqual([]);
  });
});

describe('ArtifactCache: local paths', () => {
  it('copies a local file into the cache by its digest, with or without a checksum', async () => {
    const source = join(dir, 'slug.tgz');
    writeFileSync(source, ARTIFACT);
    const unchecked = await cache.get({ path: source }, { maxBytes: 1 << 20 });
    expect(unchecked).toEqual({ path: join(dir, 'cache', 'sha256', DIGEST), sha256: DIGEST, bytes: ARTIFACT.length, cached: false });
    expect(readFileSync(unchecked.path).equals(ARTIFACT)).toBe(true);

    rmSync(source); // a get naming the digest does not read the source
    expect(await cache.get({ path: source }, { sha256: DIGEST, maxBytes: 1 << 20 })).toEqual({ ...unchecked, cached: true });
  });

  it('refuses a wrong checksum for a local file', async () => {
    const source = join(dir, 'slug.tgz');
    writeFileSync(source, ARTIFACT);
    const err = await rejection(cache.get({ path: source }, { sha256: OTHER_DIGEST, maxBytes: 1 << 20 }));
    expect(err.details).toEqual({ expected: OTHER_DIGEST, actual: DIGEST, source });
    expect(cacheFiles()).toEqual([]);
  });

  it('names a missing or relative path and refuses a file over the limit', async () => {
    const missing = join(dir, 'nope.tgz');
    expect((await rejection(cache.get({ path: missing }, { maxBytes: 1000 }))).message).toBe(`artifact ${missing} does not exist`);
    expect((await rejection(cache.get({ path: 'slug.tgz' }, { maxBytes: 1000 }))).message).toBe('artifact path slug.tgz is not absolute');
    const big = join(dir, 'big.tgz');
    writeFileSync(big, ARTIFACT);
    expect((await rejection(cache.get({ path: big }, { maxBytes: 1000 }))).message).toBe(`${big} exceeds the size limit of 1000 bytes`);
    expect(cacheFiles()).toEqual([]);
  });
});

describe('ArtifactCache: retention', () => {
  it('collects what was last used before the cut-off, keeps what a get used since, and fetches it again after', async () => {
    const old = await cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20 });
    const source = join(dir, 'other.bin');
    writeFileSync(source, 'another artifact');
    const other = await cache.get({ path: source }, { maxBytes: 1 << 20 });
    mkdirSync(join(dir, 'cache', 'tmp'), { recursive: true });
    writeFileSync(join(dir, 'cache', 'tmp', 'left-by-a-crash.partial'), 'half');
    const dayAgo = new Date(Date.now() - 86_400_000);
    for (const path of [old.path, other.path, join(dir, 'cache', 'tmp', 'left-by-a-crash.partial')]) utimesSync(path, dayAgo, dayAgo);
    // A bake uses the first one again: its use counts from now.
    expect((await cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20 })).cached).toBe(true);

    expect(await cache.collect(Date.now() - 3_600_000)).toEqual({ files: 2, bytes: 'another artifact'.length + 'half'.length });
    expect(cacheFiles()).toEqual([`sha256/${DIGEST}`]);
    expect(await cache.collect(Date.now() + 1)).toEqual({ files: 1, bytes: ARTIFACT.length });
    expect(cacheFiles()).toEqual([]);
    const again = await cache.get({ url: `${baseUrl}/slug.tgz` }, { sha256: DIGEST, maxBytes: 1 << 20 });
    expect(again.cached).toBe(false);
    expect(requests).toEqual(['/slug.tgz', '/slug.tgz']);
  });
});
