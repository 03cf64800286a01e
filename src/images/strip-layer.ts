/**
 * The identity layer of an image. stripIdentity (identity.ts) decides what goes; removals and
 * emptied directories are then made as single whiteouts in the layer rather than one per file
 * (on a view of the machine's root, /tmp alone can hold a million files):
 *   1. on the view: files are truncated, and the directories holding what goes are copied up (a file
 *      created and deleted in each), so they keep their modes and owners in the layer;
 *   2. unmounted: each path that goes becomes a whiteout (a 0/0 character device) in the layer;
 *   3. on the view again: each emptied directory is made anew over its whiteout, which overlayfs
 *      records as an opaque directory (nothing below shows through), with its old mode and owner.
 */
import { chmod, chown, mkdir, open, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { BerthError } from '../core/errors.js';
import { describeFailure, type CommandRunner } from '../drivers/local/proc.js';
import type { BakeMounts } from './bake-mounts.js';
import { stripIdentity, type DeferredStrip, type IdentityOptions, type StripReport } from './identity.js';
import type { Workspace } from './layer-store.js';
import type { LayerStack } from '../drivers/local/overlay.js';
import { FIRST_BOOT_PATH, type FirstBootPlan } from '../protocol/messages.js';
import { resolveInRoot } from './root-path.js';

export async function stripIntoLayer(mounts: BakeMounts, ws: Workspace, stack: LayerStack, identity: IdentityOptions, run: CommandRunner): Promise<StripReport> {
  const deferred: DeferredStrip = { remove: [], empty: [] };
  await mounts.mount(stack, ws);
  let report: StripReport;
  try {
    report = await stripIdentity(ws.mnt, identity, deferred);
    await planFirstBoot(ws.mnt, report);
    const going = [...deferred.remove, ...deferred.empty.map((e) => e.path)];
    for (const parent of new Set(going.map((p) => dirname(p)))) if (parent !== ws.mnt) await copyUp(parent);
  } finally {
    await mounts.unmount(ws);
  }
  const going = [...deferred.remove, ...deferred.empty.map((e) => e.path)].map((p) => join(ws.upper, posix.relative(ws.mnt, p)));
  if (going.length === 0) return report;
  await Promise.all(going.map((p) => rm(p, { recursive: true, force: true })));
  const result = await run('/bin/sh', ['-c', 'for p do mknod "$p" c 0 0 || exit 1; done', 'berth-strip', ...going]);
  if (result.code !== 0) throw new BerthError('internal', `writing whiteouts into the identity layer failed: ${describeFailure('mknod', result)}`, 'Check that the data dir is on a filesystem that allows device nodes (not mounted nodev).');
  if (deferred.empty.length > 0) {
    await mounts.mount(stack, ws);
    try {
      for (const dir of deferred.empty) {
        await mkdir(dir.path);
        await chown(dir.path, dir.uid, dir.gid);
        await chmod(dir.path, dir.mode); // after chown, which clears the sticky and set-id bits
      }
    } finally {
      await mounts.unmount(ws);
    }
  }
  return report;
}

/**
 * Tells hosts of the image what to make at first boot (see FIRST_BOOT_PATH): the SSH host key
 * types the image had and lost here. An image that had none asks for none.
 */
async function planFirstBoot(root: string, report: StripReport): Promise<void> {
  const types = new Set(report.removed.flatMap((path) => /^\/etc\/ssh\/ssh_host_([a-z0-9]+)_key(\.pub)?$/.exec(path)?.[1] ?? []));
  if (types.size === 0) return;
  const plan: FirstBootPlan = { sshHostKeyTypes: [...types].sort() };
  const file = resolveInRoot(root, FIRST_BOOT_PATH);
  await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  await writeFile(file, `${JSON.stringify(plan)}\n`, { mode: 0o644 });
}

/** Copies a directory of the view up into the writable layer, attributes and all. */
async function copyUp(dir: string): Promise<void> {
  const probe = join(dir, `.berth-copy-up-${process.pid}`);
  const handle = await open(probe, 'wx');
  await handle.close();
  await unlink(probe);
}
