import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildSource, gitHead } from './provenance.js';

const root = mkdtempSync(join(tmpdir(), 'berth-provenance-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const write = (path: string, text: string): void => {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
};

describe('gitHead: the commit a project is at, read from its repository files', () => {
  it('a branch with a loose ref, found from a subdirectory of the project', () => {
    const repo = join(root, 'loose');
    write(join(repo, '.git/HEAD'), 'ref: refs/heads/main\n');
    write(join(repo, '.git/refs/heads/main'), `${A}\n`);
    mkdirSync(join(repo, 'deploy/images'), { recursive: true });
    expect(gitHead(join(repo, 'deploy/images'))).toEqual({ commit: A, ref: 'main' });
  });

  it('a branch only in packed-refs, and a detached HEAD', () => {
    const repo = join(root, 'packed');
    write(join(repo, '.git/HEAD'), 'ref: refs/heads/release/2\n');
    write(join(repo, '.git/packed-refs'), `# pack-refs with: peeled fully-peeled sorted\n${B} refs/heads/main\n${A} refs/heads/release/2\n`);
    expect(gitHead(repo)).toEqual({ commit: A, ref: 'release/2' });
    write(join(repo, '.git/HEAD'), `${B}\n`);
    expect(gitHead(repo)).toEqual({ commit: B });
  });

  it('a worktree: .git names its git dir, whose refs live in the main repository', () => {
    const main = join(root, 'main-repo');
    write(join(main, '.git/refs/heads/feature'), `${B}\n`);
    write(join(main, '.git/worktrees/wt/HEAD'), 'ref: refs/heads/feature\n');
    write(join(main, '.git/worktrees/wt/commondir'), '../..\n');
    const worktree = join(root, 'wt');
    write(join(worktree, '.git'), `gitdir: ${join(main, '.git/worktrees/wt')}\n`);
    expect(gitHead(worktree)).toEqual({ commit: B, ref: 'feature' });
  });

  it('nothing for a directory outside any repository, or a repository without a commit yet', () => {
    const plain = join(root, 'plain');
    mkdirSync(plain, { recursive: true });
    expect(gitHead(plain)).toBeUndefined();
    const fresh = join(root, 'fresh');
    write(join(fresh, '.git/HEAD'), 'ref: refs/heads/main\n');
    expect(gitHead(fresh)).toBeUndefined();
    expect(buildSource('berth.yaml', plain, undefined)).toEqual({ file: 'berth.yaml' });
    expect(buildSource('berth.yaml', join(root, 'loose'), 'ci-bot')).toEqual({ file: 'berth.yaml', commit: A, ref: 'main', builtBy: 'ci-bot' });
  });
});
