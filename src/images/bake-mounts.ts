/**
 * Writable views of an image for the steps that only put files into it: the image's layers (over
 * its base, or the base's view; see drivers/local/overlay.ts) mounted under a workspace's upper
 * dir, which then holds exactly the step's changes — removals included, as whiteouts the kernel
 * writes. The views live in the server's mount namespace, under the (hidden) data dir, only while a
 * step runs; LayerStore.recover unmounts any a crash left behind.
 */
import { BerthError } from '../core/errors.js';
import { BaseViews, checkStack, lowerDirOption, SELF_CONTAINED_OPTIONS, type LayerStack, type MountTools } from '../drivers/local/overlay.js';
import { describeFailure, type CommandRunner } from '../drivers/local/proc.js';
import type { Workspace } from './layer-store.js';

export class BakeMounts {
  private readonly bases: BaseViews;

  constructor(
    basesDir: string,
    private readonly tools: MountTools,
    private readonly run: CommandRunner,
  ) {
    this.bases = new BaseViews(basesDir, () => tools, run);
  }

  /** Mounts the stack, writable into `ws.upper`, at `ws.mnt`. */
  async mount(stack: LayerStack, ws: Workspace): Promise<void> {
    checkStack(stack);
    const lower = lowerDirOption(stack, await this.bases.basePathFor(stack));
    const options = `lowerdir=${lower},upperdir=${ws.upper},workdir=${ws.work},${SELF_CONTAINED_OPTIONS}`;
    const result = await this.run(this.tools.mount, ['-t', 'overlay', '-o', options, 'berth-bake', ws.mnt]);
    if (result.code !== 0) {
      throw new BerthError('internal', `mounting a view of the image failed: ${describeFailure('mount', result)}`, 'Check that overlayfs works on this machine (berth runs as root) and that the data dir is on a local filesystem.');
    }
  }

  /**
   * Unmounts a view. The kernel refuses ("target is busy") for a moment while anything holds the
   * mount, e.g. a host being launched at that instant copies every mount of the machine into its
   * new namespace; so busy is retried for up to ~2 s before it is an error.
   */
  async unmount(ws: Workspace): Promise<void> {
    let result = await this.run(this.tools.umount, [ws.mnt]);
    for (let delay = 10; result.code !== 0 && /busy/i.test(result.stderr) && delay <= 640; delay *= 2) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      result = await this.run(this.tools.umount, [ws.mnt]);
    }
    if (result.code !== 0) throw new BerthError('internal', `unmounting ${ws.mnt} failed: ${describeFailure('umount', result)}`, 'Something still uses the view; it is cleaned up at the next server start.');
  }

  async close(): Promise<void> {
    await this.bases.unmountAll();
  }
}
