/**
 * Paths inside an image's root filesystem, as seen from the machine. A bake or capture works on an
 * image mounted at some machine directory; a symlink inside it (`/srv -> /data`) means `/data` *of the
 * image*, never of the machine. Following it with the machine's path resolution would read or write
 * the machine's own files, so every image path goes through resolveInRoot (what openat2's
 * RESOLVE_IN_ROOT does in the kernel): symlinks are resolved against the image root and `..` stops
 * at it.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';

const MAX_SYMLINKS = 40; // as the kernel's ELOOP limit

export class PathLoopError extends Error {}

/**
 * The machine path of `path` (absolute, as inside the image) under `root`. Symlinks on the way are
 * followed inside the root; with `followLast: false` a symlink as the last component is returned
 * itself (for removing or replacing it). Components that do not exist are taken literally.
 */
export function resolveInRoot(root: string, path: string, opts: { followLast?: boolean } = {}): string {
  const followLast = opts.followLast ?? true;
  const pending = splitPath(path);
  const resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = posix.join(root, ...resolved, part);
    const isLast = pending.length === 0;
    let target: string | undefined;
    try {
      if (lstatSync(candidate).isSymbolicLink() && (!isLast || followLast)) target = readlinkSync(candidate);
    } catch {
      // Missing: literal from here on (a later create makes it a plain directory or file).
    }
    if (target === undefined) {
      resolved.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINKS) throw new PathLoopError(`too many symlinks resolving ${path} inside the image`);
    if (target.startsWith('/')) resolved.length = 0;
    pending.unshift(...splitPath(target));
  }
  return posix.join(root, ...resolved);
}

/** Components of a path without empty parts and '.', keeping '..' for the resolver. */
function splitPath(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}

/** Whether `path` (a machine path) is `root` or inside it. */
export { isInsideDir as isInside } from '../drivers/local/paths.js';
