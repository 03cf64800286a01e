/**
 * Overlay stacks of image layers. A host (or a bake step's view) sees its image as read-only layers
 * over a base root filesystem, under its own writable layer:
 *
 *   lowerdir = layerN : ... : layer1 : base      upperdir = the host's own
 *
 * The kernel refuses lower layers inside one another ("overlapping lowerdir path"), and the base is
 * often the machine's own root, which contains the layer store. So when the base contains a layer,
 * the base is replaced by a *base view*: a read-only overlay of the base over an empty tmpfs,
 * mounted once per base and shared. It is its own filesystem, so nothing overlaps any more; it shows
 * the base's files only (mounts below the base, such as /proc, are not part of it).
 *
 * Every overlay berth mounts uses index=off, redirect_dir=off and metacopy=off, so a writable layer
 * is self-contained: whiteouts and opaque directories only, never a reference into a lower layer.
 * That is what lets a host's writable layer become a layer of a new image (bake steps, capture).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError } from '../../core/errors.js';
import { isInsideDir } from './paths.js';
import { describeFailure, type CommandRunner } from './proc.js';

/** The options that keep a writable layer self-contained (see the header). */
export const SELF_CONTAINED_OPTIONS = 'index=off,redirect_dir=off,metacopy=off';

/**
 * Overlay options are one page (4096 bytes) at most; past this many layers a stack cannot be
 * mounted with absolute paths of usual length, so images are limited to it.
 */
export const MAX_LAYERS = 32;

export interface LayerStack {
  /** Root filesystem directory at the bottom ('/' for the machine's own). */
  base: string;
  /** Layer directories, top first. */
  layers: readonly string[];
}

export interface MountTools {
  mount: string;
  umount: string;
}

/** Whether any layer lies inside the base (then the base must be mounted as a view; see header). */
export function needsBaseView(stack: LayerStack): boolean {
  return stack.layers.some((layer) => isInsideDir(stack.base, layer));
}

/** The overlay `lowerdir=` value for a stack whose base is reachable at `basePath`. */
export function lowerDirOption(stack: LayerStack, basePath: string): string {
  return [...stack.layers, basePath].join(':');
}

export function checkStack(stack: LayerStack): void {
  if (stack.layers.length > MAX_LAYERS) {
    throw new BerthError('validation_failed', `the image has ${stack.layers.length} layers; at most ${MAX_LAYERS} can be mounted`, 'Bake fewer steps (combine run steps), or build from a parent image with fewer layers.');
  }
}

/** Read-only views of base root filesystems, mounted on first use and kept (see the header). */
export class BaseViews {
  private readonly pending = new Map<string, Promise<string>>();

  /** `dir` holds one mount point per base; it must not be inside any image a host can see. */
  constructor(
    private readonly dir: string,
    private readonly tools: () => MountTools,
    private readonly run: CommandRunner,
  ) {}

  /** Where a stack's base is to be found by its overlay: the base itself, or its view. */
  async basePathFor(stack: LayerStack): Promise<string> {
    if (!needsBaseView(stack)) return stack.base;
    let view = this.pending.get(stack.base);
    if (!view) {
      view = this.mountView(stack.base);
      this.pending.set(stack.base, view);
      view.catch(() => this.pending.delete(stack.base));
    }
    return view;
  }

  private async mountView(base: string): Promise<string> {
    const name = createHash('sha256').update(base).digest('hex').slice(0, 16);
    const empty = join(this.dir, `${name}.empty`);
    const view = join(this.dir, name);
    const mounted = mountPoints();
    const { mount } = this.tools();
    mkdirSync(empty, { recursive: true, mode: 0o700 });
    mkdirSync(view, { recursive: true, mode: 0o700 });
    // A restarted server finds the views of its previous life still mounted: reuse them.
    if (!mounted.has(empty)) await this.mustRun(mount, ['-t', 'tmpfs', '-o', 'ro,size=4k,mode=755', 'berth-empty', empty], `an empty tmpfs at ${empty}`);
    if (!mounted.has(view)) await this.mustRun(mount, ['-t', 'overlay', '-o', `ro,lowerdir=${empty}:${base}`, 'berth-base', view], `a view of ${base} at ${view}`);
    return view;
  }

  /** Unmounts every view under the directory (hosts' mounts keep what they use alive). */
  async unmountAll(): Promise<void> {
    const { umount } = this.tools();
    const prefix = `${this.dir}/`;
    const ours = [...mountPoints()].filter((p) => p.startsWith(prefix)).sort((a, b) => b.length - a.length);
    // Views before the empty dirs under them.
    ours.sort((a, b) => Number(a.endsWith('.empty')) - Number(b.endsWith('.empty')));
    for (const point of ours) await this.mustRun(umount, ['-l', point], `unmounting ${point}`);
    this.pending.clear();
  }

  private async mustRun(file: string, args: string[], what: string): Promise<void> {
    const result = await this.run(file, args);
    if (result.code !== 0) throw new BerthError('internal', `mounting ${what} failed: ${describeFailure(file, result)}`, 'Check that overlayfs and tmpfs can be mounted on this machine (berth runs as root).');
  }
}

/** Mount points of this process's mount namespace (octal escapes of mountinfo decoded). */
export function mountPoints(): Set<string> {
  const points = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))));
  }
  return points;
}
