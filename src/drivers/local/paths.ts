import { posix } from 'node:path';

/** Whether machine path `path` is `dir` itself or lies below it. */
export function isInsideDir(dir: string, path: string): boolean {
  const rel = posix.relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !posix.isAbsolute(rel));
}
