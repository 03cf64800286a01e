import { chmodSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { create } from 'tar';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unpackTarSafely } from './unpack.js';
import { rejection } from '../../test/helpers/errors.js';

interface RawEntry {
  path: string;
  /** USTAR type flag: '0' file, '1' hardlink, '2' symlink, '3' char device, '4' block device, '5' dir, '6' fifo. */
  type?: string;
  mode?: number;
  body?: string;
  linkpath?: string;
  /** Declared size when it should differ from the body (size bombs); the body is then left out. */
  declaredSize?: number;
}

/** A tar archive written header by header, so it can hold what no well-behaved tool writes. */
function rawTar(entries: RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const body = Buffer.from(entry.body ?? '');
    const header = Buffer.alloc(512);
    const put = (offset: number, length: number, value: string): void => {
      header.write(value.slice(0, length), offset, 'utf8');
    };
    const octal = (offset: number, length: number, value: number): void => put(offset, length, value.toString(8).padStart(length - 1, '0') + '\0');
    put(0, 100, entry.path);
    octal(100, 8, entry.mode ?? (entry.type === '5' ? 0o755 : 0o644));
    octal(108, 8, 1000);
    octal(116, 8, 1000);
    octal(124, 12, entry.declaredSize ?? body.length);
    octal(136, 12, 1_700_000_000);
    header.write(entry.type ?? '0', 156, 'ascii');
    put(157, 100, entry.linkpath ?? '');
    header.write('ustar\x0000', 257, 'binary');
    header.fill(' ', 148, 156);
    let sum = 0;
    for (const byte of header) sum += byte;
    put(148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
    blocks.push(header);
    if (entry.declaredSize === undefined && body.length > 0) {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

let base: string;
let sentinel: string;
let work: string;
let target: string;
let secret: string;

beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'berth-unpack-'));
  sentinel = join(base, 'sentinel');
  work = join(base, 'work');
  target = join(work, 'target');
  secret = join(base, 'secret');
  mkdirSync(sentinel);
  mkdirSync(work);
  writeFileSync(secret, 'do not touch\n');
});

afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

function archiveOf(name: string, data: Buffer): string {
  const file = join(base, name);
  writeFileSync(file, data);
  return file;
}


/** Nothing was written: no target, no staging dir, the sentinel empty, the secret intact. */
function expectNothingWritten(): void {
  expect(readdirSync(sentinel)).toEqual([]);
  expect(readdirSync(work)).toEqual([]);
  expect(readFileSync(secret, 'utf8')).toBe('do not touch\n');
  expect(statSync(secret).nlink).toBe(1);
}

describe('unpackTarSafely: archives that try to escape are rejected whole', () => {
  const pwned = (): string => join(sentinel, 'pwned');
  const cases: Array<{ what: string; entries: () => RawEntry[]; entry: string | (() => string); message: RegExp }> = [
    { what: "a '..' path", entries: () => [{ path: '../../sentinel/pwned', body: 'x' }], entry: '../../sentinel/pwned', message: /'\.\.' component/ },
    { what: "a '..' in the middle", entries: () => [{ path: 'a/../../x', body: 'x' }], entry: 'a/../../x', message: /'\.\.' component/ },
    { what: 'an absolute path', entries: () => [{ path: pwned(), body: 'x' }], entry: pwned, message: /absolute path/ },
    {
      what: 'a symlink leading out',
      entries: () => [{ path: 'evil', type: '2', linkpath: '../../sentinel' }, { path: 'evil/pwned', body: 'x' }],
      entry: 'evil',
      message: /symlink to \.\.\/\.\.\/sentinel, which leads outside the target directory/,
    },
    {
      what: 'a symlink to an absolute path',
      entries: () => [{ path: 'evil', type: '2', linkpath: sentinel }, { path: 'evil/pwned', body: 'x' }],
      entry: 'evil',
      message: /symlink to an absolute path/,
    },
    {
      what: 'a symlink made to escape by a later one',
      entries: () => [
        { path: 'd/', type: '5' },
        { path: 'a', type: '2', linkpath: 'd/b/../..' },
        { path: 'd/b', type: '2', linkpath: '..' },
      ],
      entry: 'a',
      message: /leads outside the target directory once the whole archive is unpacked/,
    },
    {
      what: 'a write through a symlink that a later symlink made escape',
      entries: () => [
        { path: 'd/', type: '5' },
        { path: 'a', type: '2', linkpath: 'd/b/../..' },
        { path: 'd/b', type: '2', linkpath: '..' },
        { path: 'a/sentinel/pwned', body: 'x' },
      ],
      entry: 'a/sentinel/pwned',
      message: /its path leads outside the target directory/,
    },
    {
      what: 'a hardlink to an absolute path',
      entries: () => [{ path: 'h', type: '1', linkpath: secret }],
      entry: 'h',
      message: /absolute hardlink target/,
    },
    {
      what: "a hardlink with '..'",
      entries: () => [{ path: 'h', type: '1', linkpath: '../../secret' }],
      entry: 'h',
      message: /'\.\.' component in its hardlink target/,
    },
    {
      what: 'a hardlink to an entry that comes later',
      entries: () => [{ path: 'h', type: '1', linkpath: 'later' }, { path: 'later', body: 'x' }],
      entry: 'h',
      message: /hardlink to "later", which is not a file earlier in the archive/,
    },
    { what: 'a character device', entries: () => [{ path: 'null', type: '3' }], entry: 'null', message: /is a character device/ },
    { what: 'a block device', entries: () => [{ path: 'sda', type: '4' }], entry: 'sda', message: /is a block device/ },
    { what: 'a fifo', entries: () => [{ path: 'pipe', type: '6' }], entry: 'pipe', message: /is a fifo/ },
    { what: 'an unknown entry type', entries: () => [{ path: 'acl', type: 'A' }], entry: 'acl', message: /unsupported type/ },
    {
      what: 'a file replacing a directory',
      entries: () => [{ path: 'd/', type: '5' }, { path: 'd', body: 'x' }],
      entry: 'd',
      message: /would replace a directory/,
    },
  ];

  for (const { what, entries, entry, message } of cases) {
    it(`rejects ${what}, writing nothing`, async () => {
      // Good entries first: they must not be written either.
      const archive = archiveOf('evil.tar', rawTar([{ path: 'ok/', type: '5' }, { path: 'ok/file', body: 'fine' }, ...entries()]));
      const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
      expect(err.code).toBe('validation_failed');
      expect(err.message).toMatch(/^evil\.tar: entry "/);
      expect(err.message).toMatch(message);
      expect(err.details).toMatchObject({ entry: typeof entry === 'string' ? entry : entry() });
      expect(err.hint).not.toBe('');
      expectNothingWritten();
    });
  }

  it('rejects the same archive gzip-compressed', async () => {
    const archive = archiveOf('evil.tgz', gzipSync(rawTar([{ path: 'evil', type: '2', linkpath: '/etc' }])));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
    expect(err.message).toMatch(/evil\.tgz: entry "evil" is a symlink to an absolute path \(\/etc\)/);
    expectNothingWritten();
  });
});

describe('unpackTarSafely: good archives', () => {
  it('unpacks a tgz with nested dirs, relative symlinks, a symlink chain and a hardlink, keeping modes', async () => {
    const src = join(base, 'src');
    mkdirSync(join(src, 'app/lib/v1'), { recursive: true });
    writeFileSync(join(src, 'app/lib/v1/tool'), '#!/bin/sh\necho hi\n');
    chmodSync(join(src, 'app/lib/v1/tool'), 0o750);
    writeFileSync(join(src, 'app/config'), 'a=1\n');
    chmodSync(join(src, 'app/config'), 0o664);
    writeFileSync(join(src, 'app/suid'), 'x');
    chmodSync(join(src, 'app/suid'), 0o4755);
    chmodSync(join(src, 'app/lib'), 0o750);
    symlinkSync('v1', join(src, 'app/lib/current'));
    mkdirSync(join(src, 'app/bin'));
    symlinkSync('../lib/current/tool', join(src, 'app/bin/tool')); // through another symlink
    symlinkSync('tool', join(src, 'app/bin/tool2')); // a chain: tool2 -> tool -> ...
    linkSync(join(src, 'app/lib/v1/tool'), join(src, 'app/hard'));
    const archive = join(base, 'good.tgz');
    await create({ gzip: true, file: archive, cwd: src, portable: false }, ['app']);

    const result = await unpackTarSafely(archive, target, { maxBytes: 1 << 20 });

    expect(result).toEqual({ files: 4, dirs: 4, symlinks: 3, bytes: 18 + 4 + 1 });
    expect(readFileSync(join(target, 'app/bin/tool'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
    expect(readFileSync(join(target, 'app/bin/tool2'), 'utf8')).toBe('#!/bin/sh\necho hi\n');
    expect(readlinkSync(join(target, 'app/lib/current'))).toBe('v1');
    expect(statSync(join(target, 'app/hard')).ino).toBe(statSync(join(target, 'app/lib/v1/tool')).ino);
    expect(statSync(join(target, 'app/lib/v1/tool')).mode & 0o7777).toBe(0o750);
    expect(statSync(join(target, 'app/config')).mode & 0o7777).toBe(0o664);
    expect(statSync(join(target, 'app/lib')).mode & 0o7777).toBe(0o750);
    expect(statSync(join(target, 'app/suid')).mode & 0o7777).toBe(0o755); // setuid stripped
    expect(statSync(join(target, 'app/config')).uid).toBe(process.getuid?.());
    expect(readdirSync(work)).toEqual(['target']); // no staging dir left
    expect(readdirSync(sentinel)).toEqual([]);
  });

  it('writes an entry whose path goes through a symlink of the archive where that symlink leads', async () => {
    const archive = archiveOf(
      'through.tar',
      rawTar([
        { path: './', type: '5', mode: 0o750 },
        { path: 'sub/', type: '5' },
        { path: 'link', type: '2', linkpath: 'sub' },
        { path: 'link/x', body: 'inside', mode: 0o600 },
        { path: 'h', type: '1', linkpath: 'link/x' },
      ]),
    );
    const result = await unpackTarSafely(archive, target, { maxBytes: 100 });
    expect(result).toEqual({ files: 2, dirs: 1, symlinks: 1, bytes: 6 });
    expect(readFileSync(join(target, 'sub/x'), 'utf8')).toBe('inside');
    expect(lstatSync(join(target, 'link')).isSymbolicLink()).toBe(true);
    expect(statSync(join(target, 'h')).ino).toBe(statSync(join(target, 'sub/x')).ino);
    expect(statSync(join(target, 'sub/x')).mode & 0o7777).toBe(0o600);
    expect(statSync(target).mode & 0o7777).toBe(0o750);
  });

  it('unpacks into an existing empty directory, keeping its owner', async () => {
    mkdirSync(target, { mode: 0o711 });
    chmodSync(target, 0o711);
    const archive = archiveOf('a.tar', rawTar([{ path: 'f', body: 'x' }]));
    await unpackTarSafely(archive, target, { maxBytes: 100 });
    expect(readFileSync(join(target, 'f'), 'utf8')).toBe('x');
    expect(statSync(target).mode & 0o7777).toBe(0o711);
  });
});

describe('unpackTarSafely: limits and bad input', () => {
  it('rejects a size bomb by the declared sizes, before reading the data', async () => {
    const archive = archiveOf('bomb.tar', rawTar([{ path: 'small', body: 'x' }, { path: 'huge', declaredSize: 10 * 1024 ** 3 }]));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toBe('bomb.tar: the archive exceeds the size limit of 1048576 bytes');
    expectNothingWritten();
  });

  it('counts the sizes of all entries together', async () => {
    const body = 'x'.repeat(600);
    const archive = archiveOf('two.tar', rawTar([{ path: 'a', body }, { path: 'b', body }]));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1000 }));
    expect(err.message).toMatch(/exceeds the size limit of 1000 bytes/);
    expectNothingWritten();
  });

  it('rejects more entries than allowed', async () => {
    const archive = archiveOf('many.tar', rawTar(['a', 'b', 'c', 'd'].map((path) => ({ path }))));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 100, maxEntries: 3 }));
    expect(err.message).toBe('many.tar: the archive has more than 3 entries');
    expectNothingWritten();
    await expect(unpackTarSafely(archive, target, { maxBytes: 100, maxEntries: 4 })).resolves.toMatchObject({ files: 4 });
  });

  it('says when the file is not a tar archive', async () => {
    const archive = archiveOf('notes.txt', Buffer.from('just some text, not an archive\n'.repeat(40)));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
    expect(err.code).toBe('validation_failed');
    expect(err.message).toBe('notes.txt: not a tar archive (plain or gzip-compressed)');
    expectNothingWritten();
  });

  it('says when a gzip file holds no tar archive', async () => {
    const archive = archiveOf('notes.gz', gzipSync(Buffer.from('just text\n'.repeat(100))));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
    expect(err.message).toBe('notes.gz: not a tar archive (plain or gzip-compressed)');
    expectNothingWritten();
  });

  it('says when the archive is truncated', async () => {
    const whole = rawTar([{ path: 'a', body: 'x'.repeat(2000) }]);
    const archive = archiveOf('cut.tar', whole.subarray(0, 1024));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
    expect(err.message).toBe('cut.tar: the archive is truncated');
    expectNothingWritten();
  });

  it('says when a tgz is truncated', async () => {
    const whole = gzipSync(rawTar([{ path: 'a', body: 'some text '.repeat(2000) }]));
    const archive = archiveOf('cut.tgz', whole.subarray(0, Math.floor(whole.length / 2)));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 1 << 20 }));
    expect(err.message).toMatch(/^cut\.tgz: the archive is (truncated|corrupt)/);
    expectNothingWritten();
  });

  it('says when the archive does not exist', async () => {
    const err = await rejection(unpackTarSafely(join(base, 'missing.tar'), target, { maxBytes: 100 }));
    expect(err.message).toBe('missing.tar: the archive does not exist');
  });

  it('refuses a target that is a symlink, a file or a non-empty directory', async () => {
    const archive = archiveOf('a.tar', rawTar([{ path: 'f', body: 'x' }]));
    symlinkSync(sentinel, target);
    expect((await rejection(unpackTarSafely(archive, target, { maxBytes: 100 }))).message).toMatch(/it is a symlink$/);
    expect(readdirSync(sentinel)).toEqual([]);
    rmSync(target);
    writeFileSync(target, '');
    expect((await rejection(unpackTarSafely(archive, target, { maxBytes: 100 }))).message).toMatch(/it is not a directory$/);
    rmSync(target);
    mkdirSync(target);
    writeFileSync(join(target, 'old'), '');
    expect((await rejection(unpackTarSafely(archive, target, { maxBytes: 100 }))).message).toMatch(/it is not empty$/);
    expect(readdirSync(target)).toEqual(['old']);
  });

  it('stops when the signal is aborted', async () => {
    const archive = archiveOf('a.tar', rawTar([{ path: 'f', body: 'x' }]));
    const err = await rejection(unpackTarSafely(archive, target, { maxBytes: 100 }, AbortSignal.abort()));
    expect(err.code).toBe('deadline_exceeded');
    expect(existsSync(target)).toBe(false);
  });
});
