/**
 * Layers on disk: `<dir>/layers/<id>/diff` (the files, in overlayfs format) and `layer.json` (how it
 * was made). A layer is immutable once in place: it is built in a workspace under `<dir>/tmp` and
 * moved into place with one rename, so a crash never leaves half a layer, and a layer whose id
 * exists is complete. Workspaces left by a crash are removed at start (unmounted first).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage } from '../core/errors.js';
import { mountPoints } from '../drivers/local/overlay.js';
import type { CommandRunner } from '../drivers/local/proc.js';

export interface LayerMeta {
  id: string;
  /** Id of the layer below, or null for the first one over the base. */
  parent: string | null;
  base: string;
  kind: string;
  /** One line for people, e.g. `run apt-get install -y nginx`. */
  title: string;
  /** The step as defined (no source positions), inputs' digests included. */
  definition: Record<string, unknown>;
  createdAt: string;
  durationMs: number;
  sizeBytes: number;
  files: number;
}

export interface Workspace {
  dir: string;
  /** Becomes the layer's diff. */
  upper: string;
  work: string;
  /** Where a view of the image is mounted while a step works on it. */
  mnt: string;
}

export class LayerStore {
  readonly layersDir: string;
  private readonly tmpDir: string;

  constructor(
    readonly dir: string,
    private readonly umount: (target: string) => Promise<void>,
  ) {
    this.layersDir = join(dir, 'layers');
    this.tmpDir = join(dir, 'tmp');
  }

  has(id: string): boolean {
    return existsSync(join(this.layersDir, id, 'layer.json'));
  }

  diffDir(id: string): string {
    return join(this.layersDir, id, 'diff');
  }

  meta(id: string): LayerMeta | undefined {
    try {
      return JSON.parse(readFileSync(join(this.layersDir, id, 'layer.json'), 'utf8')) as LayerMeta;
    } catch {
      return undefined;
    }
  }

  async workspace(): Promise<Workspace> {
    const dir = join(this.tmpDir, randomBytes(8).toString('hex'));
    const ws = { dir, upper: join(dir, 'upper'), work: join(dir, 'work'), mnt: join(dir, 'mnt') };
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await Promise.all([mkdir(ws.upper, { mode: 0o755 }), mkdir(ws.work, { mode: 0o700 }), mkdir(ws.mnt, { mode: 0o700 })]);
    return ws;
  }

  /** Removes a workspace (its view must be unmounted; this makes sure). */
  async dispose(ws: Workspace): Promise<void> {
    if (mountPoints().has(ws.mnt)) await this.umount(ws.mnt);
    await rm(ws.dir, { recursive: true, force: true, maxRetries: 3 });
  }

  /**
   * Moves `diff` into place as layer `meta.id`. If another build committed the same id meanwhile,
   * theirs stays (same content by construction) and ours is dropped.
   */
  async commit(diff: string, meta: Omit<LayerMeta, 'sizeBytes' | 'files'>): Promise<LayerMeta> {
    const { bytes, files } = await treeSize(diff);
    const full: LayerMeta = { ...meta, sizeBytes: bytes, files };
    const staging = join(this.tmpDir, `commit-${randomBytes(8).toString('hex')}`);
    await mkdir(staging, { recursive: true, mode: 0o755 });
    await rename(diff, join(staging, 'diff'));
    await writeFile(join(staging, 'layer.json'), `${JSON.stringify(full, null, 2)}\n`);
    await mkdir(this.layersDir, { recursive: true, mode: 0o755 });
    try {
      await rename(staging, join(this.layersDir, meta.id));
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      if (!this.has(meta.id)) throw err;
    }
    return full;
  }

  async list(): Promise<string[]> {
    try {
      return (await readdir(this.layersDir)).filter((id) => /^[0-9a-f]{64}$/.test(id));
    } catch {
      return [];
    }
  }

  /**
   * Removes every layer not in `keep` (with `createdBefore`, only those made before that time, ms
   * since the epoch; one whose record cannot be read counts as old); returns what went.
   */
  async removeExcept(keep: ReadonlySet<string>, opts: { createdBefore?: number } = {}): Promise<{ layers: number; bytes: number }> {
    let layers = 0;
    let bytes = 0;
    for (const id of await this.list()) {
      if (keep.has(id)) continue;
      const meta = this.meta(id);
      if (opts.createdBefore !== undefined && meta && !(Date.parse(meta.createdAt) < opts.createdBefore)) continue;
      bytes += meta?.sizeBytes ?? 0;
      // Renamed away first, so a half-removed layer is never taken for a complete one.
      const doomed = join(this.tmpDir, `gc-${id}`);
      await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
      await rename(join(this.layersDir, id), doomed);
      await rm(doomed, { recursive: true, force: true, maxRetries: 3 });
      layers++;
    }
    return { layers, bytes };
  }

  /** At start: views a crashed bake left mounted are unmounted, its workspaces removed. */
  async recover(log: (line: string) => void): Promise<void> {
    const prefix = `${this.tmpDir}/`;
    for (const point of [...mountPoints()].filter((p) => p.startsWith(prefix))) {
      await this.umount(point).catch((err: unknown) => log(`unmounting ${point}: ${errorMessage(err)}`));
    }
    await rm(this.tmpDir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** Bytes and regular files under a directory (whiteouts and directories count as no bytes). */
export async function treeSize(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  const walk = async (path: string): Promise<void> => {
    for (const entry of await readdir(path, { withFileTypes: true })) {
      const full = join(path, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        bytes += (await lstat(full)).size;
        files++;
      }
    }
  };
  await walk(dir);
  return { bytes, files };
}

/** Unmounts through `umount` (Node has no mount API). */
export function umountWith(run: CommandRunner, umountTool: string): (target: string) => Promise<void> {
  return async (target) => {
    const result = await run(umountTool, [target]);
    if (result.code !== 0) throw new Error(`umount ${target}: ${result.stderr.trim() || `exit ${result.code}`}`);
  };
}
