/**
 * Where a bake came from, for its manifest (`berth image inspect`): the berth.yaml, the commit its
 * project was at (read from the repository's files: no git binary needed on the server's machine)
 * and the token that asked. A worktree or submodule (`.git` a file naming its git dir) is followed.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';

export interface BuildSource {
  file: string;
  /** The commit HEAD named when the bake started (uncommitted changes are not in it). */
  commit?: string;
  /** The branch (or other ref) HEAD was on; absent when it was detached. */
  ref?: string;
  /** The token that asked for the bake. */
  builtBy?: string;
}

const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

export function buildSource(file: string, projectDir: string, builtBy: string | undefined): BuildSource {
  return { file, ...gitHead(projectDir), ...(builtBy ? { builtBy } : {}) };
}

/** HEAD of the repository that holds `dir`, if any; nothing when it cannot be read. */
export function gitHead(dir: string): { commit: string; ref?: string } | undefined {
  try {
    const gitDir = findGitDir(dir);
    if (!gitDir) return undefined;
    const head = readFileSync(join(gitDir, 'HEAD'), 'utf8').trim();
    if (SHA.test(head)) return { commit: head };
    const ref = /^ref: (refs\/\S+)$/.exec(head)?.[1];
    if (!ref) return undefined;
    const commit = resolveRef(commonDir(gitDir), gitDir, ref);
    return commit ? { commit, ref: ref.replace(/^refs\/heads\//, '') } : undefined;
  } catch {
    return undefined;
  }
}

function findGitDir(start: string): string | undefined {
  for (let dir = resolve(start); ; dir = dirname(dir)) {
    const dotGit = join(dir, '.git');
    if (existsSync(dotGit)) {
      if (statSync(dotGit).isDirectory()) return dotGit;
      const pointer = /^gitdir: (.+)$/m.exec(readFileSync(dotGit, 'utf8'))?.[1]?.trim();
      return pointer ? (isAbsolute(pointer) ? pointer : resolve(dir, pointer)) : undefined;
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/** A worktree's git dir keeps HEAD; its refs live in the main repository's (`commondir`). */
function commonDir(gitDir: string): string {
  const file = join(gitDir, 'commondir');
  if (!existsSync(file)) return gitDir;
  return resolve(gitDir, readFileSync(file, 'utf8').trim());
}

function resolveRef(common: string, gitDir: string, ref: string): string | undefined {
  for (const dir of [gitDir, common]) {
    const loose = join(dir, ref);
    if (existsSync(loose)) {
      const value = readFileSync(loose, 'utf8').trim();
      if (SHA.test(value)) return value;
    }
  }
  const packed = join(common, 'packed-refs');
  if (!existsSync(packed)) return undefined;
  for (const line of readFileSync(packed, 'utf8').split('\n')) {
    const [sha, name] = line.split(' ');
    if (name === ref && sha && SHA.test(sha)) return sha;
  }
  return undefined;
}
