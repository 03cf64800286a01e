/**
 * Slugs: an app as a tarball (a path on the server's machine or an http(s) URL, optionally
 * `#sha256=HEX`) plus a Procfile inside it or a command. Fetched once per digest (a URL with its
 * checksum is not fetched again) and unpacked safely (images/unpack.ts: no path escapes through
 * `..`, absolute names or links, no device files, size and entry limits; a bad archive is rejected
 * whole, before anything is written). The checked tree is packed again, portable, and that is what
 * hosts download and extract: never the archive as it came.
 */
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { c as createTar } from 'tar';
import { BerthError, isBerthError } from '../core/errors.js';
import { randomUUID } from 'node:crypto';
import { ArtifactCache } from '../images/artifacts.js';
import { fileDigest } from '../images/digests.js';
import { unpackTarSafely } from '../images/unpack.js';
import { parseProcfile } from '../stacks/procfile.js';

export interface Slug {
  digest: string;
  /** The checked tree packed again (what hosts extract). */
  tarPath: string;
  /** `name: command` of the slug's Procfile, or null when it has none. */
  procfile: Array<{ name: string; cmd: string }> | null;
  bytes: number;
}

export interface SlugLimits {
  /** The archive as fetched. */
  maxArchiveBytes: number;
  /** Its contents, unpacked. */
  maxUnpackedBytes: number;
  maxEntries: number;
}

const PUBLISHED_KEEP_MS = 6 * 3600_000;

const DEFAULT_LIMITS: SlugLimits = { maxArchiveBytes: 512 * 2 ** 20, maxUnpackedBytes: 2 * 2 ** 30, maxEntries: 200_000 };

/** A ref that names a slug: an http(s) URL, or an absolute path to a .tar, .tgz or .tar.gz. */
export function isSlugRef(ref: string): boolean {
  return /^https?:\/\//i.test(ref) || (ref.startsWith('/') && /\.(tar|tgz|tar\.gz)$/i.test(ref));
}

export class SlugStore {
  private readonly artifacts: ArtifactCache;
  private readonly preparing = new Map<string, Promise<Slug>>();
  /** Trees published for AMI bakes, and when: a bake's builder downloads its tree while it boots. */
  private readonly published = new Map<string, number>();

  constructor(
    private readonly dir: string,
    private readonly limits: SlugLimits = DEFAULT_LIMITS,
  ) {
    this.artifacts = new ArtifactCache(join(dir, 'archives'));
  }

  /**
   * Fetches, checks and unpacks the slug (once per digest); throws validation_failed with the reason.
   * `pinned`: the digest it must have (an environment's, recorded at its deploy): its tree here is
   * used without reading the source at all, and a source that no longer has it is refused.
   */
  async prepare(ref: string, signal?: AbortSignal, pinned?: string): Promise<Slug> {
    const [location = '', fragment] = ref.split('#', 2);
    const sha256 = fragment?.startsWith('sha256=') ? fragment.slice('sha256='.length) : pinned;
    const known = sha256 === undefined ? undefined : await this.unpacked(sha256.replace(/^sha256:/, '').toLowerCase(), ref);
    if (known) return known;
    const source = /^https?:\/\//i.test(location) ? { url: location } : { path: location };
    const archive = await this.artifacts.get(source, { maxBytes: this.limits.maxArchiveBytes, unverified: true, ...(sha256 ? { sha256 } : {}), ...(signal ? { signal } : {}) }).catch((err: unknown) => {
      if (pinned !== undefined && sha256 === pinned && isBerthError(err) && err.details?.['expected'] !== undefined) {
        throw new BerthError('validation_failed', `slug ${ref} no longer holds the app deployed from it (sha256 ${pinned.slice(0, 12)}), and this server's copy is gone`, 'Deploy it again (berth env deploy NAME --ref REF) to run what it holds now.', err.details, { cause: err });
      }
      throw asSlugError(err, ref);
    });
    const digest = archive.sha256;
    let pending = this.preparing.get(digest);
    if (!pending) {
      pending = this.unpack(digest, archive.path, ref, signal).finally(() => this.preparing.delete(digest));
      this.preparing.set(digest, pending);
    }
    return pending;
  }

  /**
   * A tarball made on this machine from checked inputs (an AMI bake's files), served to hosts as a
   * slug's tree is: moved into the store under its content digest. Returns the URL path.
   */
  async publishTar(tarPath: string): Promise<string> {
    const digest = await fileDigest(tarPath);
    const trees = join(this.dir, 'trees');
    await mkdir(trees, { recursive: true });
    await rename(tarPath, join(trees, `${digest}.tar`));
    this.published.set(digest, Date.now());
    return `/slugs/${digest}.tar`;
  }

  /**
   * Removes slugs no environment runs (`keep`: their digests) and none used since `unusedBefore`
   * (ms since the epoch; a prepare counts as a use), the fetched archives last used before then
   * (a slug's tree is what hosts get; its archive only served the unpacking), and what a crash left
   * half-made. A tree published for an AMI bake is kept for PUBLISHED_KEEP_MS whatever the cut-off.
   */
  async collect(keep: ReadonlySet<string>, unusedBefore: number): Promise<{ slugs: number; bytes: number }> {
    const trees = join(this.dir, 'trees');
    const now = Date.now();
    for (const [digest, at] of this.published) if (now - at > PUBLISHED_KEEP_MS) this.published.delete(digest);
    let slugs = 0;
    let bytes = 0;
    for (const entry of await readdir(trees, { withFileTypes: true }).catch(() => [])) {
      const path = join(trees, entry.name);
      const digest = /^([0-9a-f]{64})(\.tar)?$/.exec(entry.name)?.[1];
      const halfMade = entry.name.startsWith('.') || entry.name.endsWith('.partial');
      if (digest === undefined && !halfMade) continue;
      if (digest !== undefined && (keep.has(digest) || this.published.has(digest) || this.preparing.has(digest))) continue;
      // A slug's last use is its packed tree's time (touched at each prepare); a tree alone goes with it.
      const stats = await stat(digest !== undefined && !halfMade ? join(trees, `${digest}.tar`) : path).catch(() => undefined);
      if (stats && stats.mtimeMs >= unusedBefore) continue;
      bytes += await diskBytes(path);
      await rm(path, { recursive: true, force: true });
      if (entry.name.endsWith('.tar')) slugs++;
    }
    const archives = await this.artifacts.collect(unusedBefore);
    return { slugs, bytes: bytes + archives.bytes };
  }

  /** The packed tree of a prepared slug, for the agent gateway to serve; undefined for any other path. */
  fileFor(urlPath: string): string | undefined {
    const m = /^\/slugs\/([0-9a-f]{64})\.tar$/.exec(urlPath);
    if (!m) return undefined;
    const path = join(this.dir, 'trees', `${m[1] ?? ''}.tar`);
    return existsSync(path) ? path : undefined;
  }

  /** The slug of this digest when its tree is here already (undefined otherwise): its last use is now. */
  private async unpacked(digest: string, ref: string): Promise<Slug | undefined> {
    if (!/^[0-9a-f]{64}$/.test(digest)) return undefined;
    const tarPath = join(this.dir, 'trees', `${digest}.tar`);
    if (!existsSync(tarPath) || !existsSync(join(this.dir, 'trees', digest))) return undefined;
    const now = new Date();
    await utimes(tarPath, now, now).catch(() => undefined);
    return this.slugOf(digest, ref);
  }

  private async unpack(digest: string, archive: string, ref: string, signal?: AbortSignal): Promise<Slug> {
    const trees = join(this.dir, 'trees');
    const tree = join(trees, digest);
    const tarPath = join(trees, `${digest}.tar`);
    await mkdir(trees, { recursive: true });
    if (!existsSync(tarPath)) {
      const staging = join(trees, `.${digest}.${randomUUID()}`);
      const packing = `${tarPath}.${randomUUID()}.partial`;
      try {
        await unpackTarSafely(archive, staging, { maxBytes: this.limits.maxUnpackedBytes, maxEntries: this.limits.maxEntries }, signal);
        await createTar({ cwd: staging, file: packing, portable: true, noMtime: false }, ['.']);
        await rm(tree, { recursive: true, force: true });
        await rename(staging, tree);
        await rename(packing, tarPath);
      } catch (err) {
        await rm(staging, { recursive: true, force: true });
        await rm(packing, { force: true });
        throw asSlugError(err, ref);
      }
    } else {
      const now = new Date();
      await utimes(tarPath, now, now).catch(() => undefined); // its last use, for collect()
    }
    return this.slugOf(digest, ref);
  }

  private async slugOf(digest: string, ref: string): Promise<Slug> {
    const trees = join(this.dir, 'trees');
    const tree = join(trees, digest);
    const tarPath = join(trees, `${digest}.tar`);
    const procfileText = await readFile(join(tree, 'Procfile'), 'utf8').catch(() => undefined);
    let procfile: Slug['procfile'] = null;
    if (procfileText !== undefined) {
      const problems: string[] = [];
      const entries = parseProcfile(procfileText, 'Procfile', (at, message) => problems.push(`Procfile:${at.line}:${at.column}: ${message}`));
      if (problems.length > 0) throw new BerthError('validation_failed', `slug ${ref}: ${problems.join('; ')}`, 'Fix the Procfile in the slug.');
      procfile = entries.map((e) => ({ name: e.name, cmd: e.cmd }));
    }
    return { digest, tarPath, procfile, bytes: (await stat(tarPath)).size };
  }
}

function asSlugError(err: unknown, ref: string): BerthError {
  if (err instanceof BerthError) {
    return new BerthError('validation_failed', `slug ${ref}: ${err.message}`, err.hint, err.details, { cause: err });
  }
  return new BerthError('validation_failed', `slug ${ref}: ${err instanceof Error ? err.message : String(err)}`, 'Check the slug: a tar or tgz archive of the app.', undefined, { cause: err });
}

/** Bytes a file or directory tree takes (its files' sizes; links are not followed). */
async function diskBytes(path: string): Promise<number> {
  const stats = await lstat(path).catch(() => undefined);
  if (!stats?.isDirectory()) return stats?.size ?? 0;
  let total = 0;
  for (const name of await readdir(path).catch(() => [] as string[])) total += await diskBytes(join(path, name));
  return total;
}
