/**
 * Content addresses. A layer's id is the hash of its parent's id, its step's definition and the
 * digests of the step's inputs; an image's id is the hash of its base and layer ids. Definitions are
 * hashed as canonical JSON (sorted keys), so formatting and key order in berth.yaml never matter.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Where a chain of layers starts: a hash of the base root filesystem's path. */
export function baseChainId(base: string): string {
  return sha256(canonicalJson({ base }));
}

export function layerId(parentChainId: string, definition: Record<string, unknown>): string {
  return sha256(canonicalJson({ parent: parentChainId, step: definition }));
}

export function imageId(base: string, layers: readonly string[]): string {
  return sha256(canonicalJson({ base, layers }));
}

/**
 * Digests of files already read, by what stat says of them (as git's index does): a file whose
 * inode, size, mtime and ctime are unchanged is not read again. ctime cannot be set from user
 * space, so a rewrite that restores the mtime still changes the key.
 */
const digestsByStat = new Map<string, string>();
const MAX_REMEMBERED = 200_000;

export async function fileDigest(path: string): Promise<string> {
  const st = await stat(path, { bigint: true });
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  const known = digestsByStat.get(key);
  if (known) return known;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  const digest = hash.digest('hex');
  if (digestsByStat.size >= MAX_REMEMBERED) digestsByStat.clear();
  digestsByStat.set(key, digest);
  return digest;
}

/**
 * Digest of a file or directory tree as a copy step sees it: relative paths, types, permission
 * bits, file contents and symlink targets (not times or owners, which a copy does not keep).
 */
export async function treeDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  const visit = async (full: string, rel: string): Promise<void> => {
    const st = await lstat(full);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) {
      hash.update(`l ${rel} ${await readlink(full)}\n`);
    } else if (st.isDirectory()) {
      hash.update(`d ${rel} ${mode}\n`);
      const names = (await readdir(full)).sort();
      for (const name of names) await visit(join(full, name), rel ? `${rel}/${name}` : name);
    } else if (st.isFile()) {
      hash.update(`f ${rel} ${mode} ${await fileDigest(full)}\n`);
    } else {
      hash.update(`o ${rel} ${mode}\n`);
    }
  };
  await visit(path, '');
  return hash.digest('hex');
}
