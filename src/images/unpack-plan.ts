/**
 * The checking half of unpackTarSafely (unpack.ts): a model of the tree an archive would create,
 * fed one entry header at a time, in archive order. Every entry is checked against the tree as the
 * earlier entries left it, so a symlink the archive itself created (`link -> sub`) is followed the
 * way the kernel would follow it when a later entry (`link/x`) is written. Anything that would
 * read or write outside the target, or is not a plain file, directory, symlink or hardlink, throws a
 * BerthError naming the entry; the caller rejects the whole archive.
 *
 * The model is exact only for a directory that starts empty, which is why unpack.ts extracts into a
 * fresh staging directory: the checks here are then the complete truth about what lands on disk.
 */
import { BerthError } from '../core/errors.js';

/** What the extraction needs to know about an admitted entry. */
export interface AdmittedEntry {
  kind: 'file' | 'dir' | 'symlink' | 'hardlink';
  /** Where it is written, relative to the target, with every symlink on the way resolved; '' is the target itself. */
  path: string;
  /** Hardlinks: the resolved path of the file linked to. Symlinks: the target as written. */
  linkpath?: string;
}

/** The parts of a tar header (node-tar's ReadEntry) the checks read. */
export interface EntryHeader {
  path: string;
  type: string;
  linkpath?: string | undefined;
  size?: number | undefined;
}

type TreeNode = { kind: 'dir' } | { kind: 'file' } | { kind: 'symlink'; target: string };

type Resolution = { parts: string[] } | { problem: 'escapes' | 'loop' } | { problem: 'through-file'; at: string };

const MAX_SYMLINK_HOPS = 40; // as the kernel's ELOOP limit
const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
const TYPE_NAMES: Record<string, string> = {
  CharacterDevice: 'a character device',
  BlockDevice: 'a block device',
  FIFO: 'a fifo',
  GNUDumpDir: 'a GNU dump directory',
  SparseFile: 'a sparse file',
};
const DIR: TreeNode = { kind: 'dir' };
const FILE: TreeNode = { kind: 'file' };

export class UnpackPlan {
  entries = 0;
  bytes = 0;
  private readonly nodes = new Map<string, TreeNode>([['', DIR]]);

  constructor(
    private readonly name: string,
    private readonly maxBytes: number,
    private readonly maxEntries: number,
  ) {}

  /** Checks the next entry of the archive and records it in the model; throws if it is not allowed. */
  admit(header: EntryHeader): AdmittedEntry {
    const entry = header.path;
    if (++this.entries > this.maxEntries) {
      throw this.limitError(`has more than ${this.maxEntries} entries`, { maxEntries: this.maxEntries });
    }
    this.bytes += Math.max(0, header.size ?? 0);
    if (this.bytes > this.maxBytes) {
      throw this.limitError(`exceeds the size limit of ${this.maxBytes} bytes`, { maxBytes: this.maxBytes, entry });
    }
    const kind = entryKind(header.type);
    if (!kind) {
      const what = TYPE_NAMES[header.type] ?? `of unsupported type "${header.type}"`;
      throw this.reject(entry, `is ${what}; only files, directories, symlinks and hardlinks are allowed`);
    }
    const parts = this.checkedParts(entry, entry, 'path');
    const name = parts.pop();
    if (name === undefined) {
      if (kind !== 'dir') throw this.reject(entry, 'would replace the target directory itself');
      return { kind, path: '' };
    }
    const parent = this.resolve([], parts, true);
    if (!('parts' in parent)) throw this.reject(entry, this.describe(parent, 'its path'));
    this.makeDirs(parent.parts);
    const path = [...parent.parts, name].join('/');
    const existing = this.nodes.get(path);
    if (existing?.kind === 'dir' && kind !== 'dir') throw this.reject(entry, 'would replace a directory');

    if (kind === 'symlink') {
      const target = header.linkpath ?? '';
      if (target.startsWith('/')) throw this.reject(entry, `is a symlink to an absolute path (${target})`);
      if (target === '') throw this.reject(entry, 'is a symlink without a target');
      this.nodes.set(path, { kind: 'symlink', target });
      const problem = this.symlinkProblem(path, target);
      if (problem) throw this.reject(entry, problem);
      return { kind, path, linkpath: target };
    }
    if (kind === 'hardlink') {
      const linkpath = this.hardlinkTarget(entry, header.linkpath ?? '');
      this.nodes.set(path, FILE);
      return { kind, path, linkpath };
    }
    this.nodes.set(path, kind === 'dir' ? DIR : FILE);
    return { kind, path };
  }

  /**
   * Checks every symlink against the finished tree: a later entry can change where an earlier,
   * valid symlink leads (`a -> d/b/../..` is inside until `d/b -> ..` arrives).
   */
  finish(): void {
    for (const [path, node] of this.nodes) {
      if (node.kind !== 'symlink') continue;
      const problem = this.symlinkProblem(path, node.target);
      if (problem) throw this.reject(path, `${problem} once the whole archive is unpacked`);
    }
  }

  private hardlinkTarget(entry: string, linkpath: string): string {
    const parts = this.checkedParts(entry, linkpath, 'hardlink target');
    const resolved = this.resolve([], parts, false);
    const path = 'parts' in resolved ? resolved.parts.join('/') : undefined;
    if (path === undefined || this.nodes.get(path)?.kind !== 'file') {
      throw this.reject(entry, `is a hardlink to "${linkpath}", which is not a file earlier in the archive`);
    }
    return path;
  }

  /** Why the symlink at `path` (resolved) with `target` is not allowed, or undefined. */
  private symlinkProblem(path: string, target: string): string | undefined {
    const dir = path.split('/').slice(0, -1);
    const resolved = this.resolve(dir, splitPath(target), true);
    if ('problem' in resolved && resolved.problem !== 'through-file') {
      return this.describe(resolved, `is a symlink to ${target}, which`);
    }
    return undefined; // leading to a missing path or through a file is dangling, not dangerous
  }

  /** The components of an archive path; absolute paths and '..' are refused outright. */
  private checkedParts(entry: string, path: string, what: string): string[] {
    if (path === '') throw this.reject(entry, `has an empty ${what}`);
    if (path.startsWith('/')) throw this.reject(entry, `has an absolute ${what}`);
    const parts = splitPath(path);
    if (parts.includes('..')) throw this.reject(entry, `has a '..' component in its ${what}`);
    return parts;
  }

  /**
   * Walks `parts` from the resolved directory `start` through the model, following symlinks (the
   * last component only with followLast). Missing components are taken literally; '..' above the
   * target is an escape.
   */
  private resolve(start: string[], parts: string[], followLast: boolean): Resolution {
    const pending = [...parts];
    const resolved = [...start];
    let hops = 0;
    for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
      if (part === '..') {
        if (resolved.length === 0) return { problem: 'escapes' };
        resolved.pop();
        continue;
      }
      const here = [...resolved, part].join('/');
      const node = this.nodes.get(here);
      const isLast = pending.length === 0;
      if (node?.kind === 'symlink' && (!isLast || followLast)) {
        if (++hops > MAX_SYMLINK_HOPS) return { problem: 'loop' };
        if (node.target.startsWith('/')) return { problem: 'escapes' };
        pending.unshift(...splitPath(node.target));
        continue;
      }
      if (node?.kind === 'file' && !isLast) return { problem: 'through-file', at: here };
      resolved.push(part);
    }
    return { parts: resolved };
  }

  /** Parent directories the extraction creates implicitly. */
  private makeDirs(parts: string[]): void {
    for (let i = 1; i <= parts.length; i++) {
      const path = parts.slice(0, i).join('/');
      if (!this.nodes.has(path)) this.nodes.set(path, DIR);
    }
  }

  private describe(resolution: Exclude<Resolution, { parts: string[] }>, subject: string): string {
    switch (resolution.problem) {
      case 'escapes':
        return `${subject} leads outside the target directory`;
      case 'loop':
        return `${subject} goes through a symlink loop`;
      case 'through-file':
        return `${subject} goes through "${resolution.at}", which is a file`;
    }
  }

  private reject(entry: string, reason: string): BerthError {
    return new BerthError(
      'validation_failed',
      `${this.name}: entry "${entry}" ${reason}`,
      'The archive was not unpacked. Rebuild it with paths relative to its root and only files, directories and links that stay inside it.',
      { entry, reason },
    );
  }

  private limitError(what: string, details: Record<string, unknown>): BerthError {
    return new BerthError(
      'validation_failed',
      `${this.name}: the archive ${what}`,
      'The archive was not unpacked. Make it smaller, or raise the limit if the size is expected.',
      { ...details, reason: what },
    );
  }
}

function entryKind(type: string): AdmittedEntry['kind'] | undefined {
  if (FILE_TYPES.has(type)) return 'file';
  if (type === 'Directory') return 'dir';
  if (type === 'SymbolicLink') return 'symlink';
  if (type === 'Link') return 'hardlink';
  return undefined;
}

function splitPath(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}
