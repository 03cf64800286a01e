/** Slugs pinned by digest, and the store's collection: real archives in a temp directory. */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { c as createTar } from 'tar';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SlugStore } from './slug-store.js';

let dir: string;
let store: SlugStore;
let source: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'berth-slugs-'));
  store = new SlugStore(join(dir, 'store'));
  source = join(dir, 'app.tgz');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Writes the slug at `source`: a Procfile whose web command names the version. */
async function build(version: string): Promise<void> {
  const app = join(dir, `app-${version}`);
  mkdirSync(app, { recursive: true });
  writeFileSync(join(app, 'Procfile'), `web: echo ${version}\n`);
  await createTar({ gzip: true, file: source, cwd: app, portable: true }, ['.']);
}

const dayAgo = () => new Date(Date.now() - 86_400_000);
const trees = () => readdirSync(join(dir, 'store', 'trees')).sort();

describe('SlugStore', () => {
  it('gives the pinned slug without reading its source, and refuses a source that no longer holds it', async () => {
    await build('v1');
    const v1 = await store.prepare(source);
    expect(v1.procfile).toEqual([{ name: 'web', cmd: 'echo v1' }]);
    copyFileSync(source, join(dir, 'v1.tgz'));
    await build('v2');
    expect(await store.prepare(source, undefined, v1.digest)).toEqual(v1);
    expect((await store.prepare(source)).procfile).toEqual([{ name: 'web', cmd: 'echo v2' }]);

    // Its copy here gone (collected, or removed by hand): the source must still hold it.
    await store.collect(new Set(), Date.now() + 1);
    await expect(store.prepare(source, undefined, v1.digest)).rejects.toThrow(/no longer holds the app deployed from it \(sha256 [0-9a-f]{12}\)/);
    copyFileSync(join(dir, 'v1.tgz'), source);
    expect((await store.prepare(source, undefined, v1.digest)).digest).toBe(v1.digest);
  });

  it('collects slugs no environment runs once unused past the cut-off, with archives and half-made files', async () => {
    await build('kept');
    const kept = await store.prepare(source);
    await build('old');
    const old = await store.prepare(source);
    await build('recent');
    const recent = await store.prepare(source);
    const half = join(dir, 'store', 'trees', `.${old.digest}.crashed`);
    mkdirSync(half);
    for (const path of [join(dir, 'store', 'trees', `${kept.digest}.tar`), join(dir, 'store', 'trees', `${old.digest}.tar`), half]) utimesSync(path, dayAgo(), dayAgo());
    for (const name of readdirSync(join(dir, 'store', 'archives', 'sha256'))) {
      if (name !== recent.digest) utimesSync(join(dir, 'store', 'archives', 'sha256', name), dayAgo(), dayAgo());
    }

    const done = await store.collect(new Set([kept.digest]), Date.now() - 3_600_000);
    expect(done.slugs).toBe(1);
    expect(done.bytes).toBeGreaterThan(0);
    expect(trees()).toEqual([kept.digest, `${kept.digest}.tar`, recent.digest, `${recent.digest}.tar`].sort());
    expect(readdirSync(join(dir, 'store', 'archives', 'sha256'))).toEqual([recent.digest]);
    // An environment's slug serves its hosts from its tree, its archive gone.
    expect(await store.prepare(source, undefined, kept.digest)).toEqual(kept);
    expect(existsSync(half)).toBe(false);
  });

  it('keeps a tree published for an AMI bake, however old', async () => {
    const tar = join(dir, 'inputs.tar');
    writeFileSync(tar, 'not really a tar, only bytes to serve');
    const url = await store.publishTar(tar);
    const published = join(dir, 'store', 'trees', url.slice('/slugs/'.length));
    utimesSync(published, dayAgo(), dayAgo());
    expect((await store.collect(new Set(), Date.now())).slugs).toBe(0);
    expect(store.fileFor(url)).toBe(published);
  });
});
