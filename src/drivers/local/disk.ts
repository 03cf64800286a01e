/**
 * A host's own disk (HostResources.diskMiB). Without one, a host writes to the machine's disk
 * through its overlay's upper dir, without bound: one host could fill the disk the store and every
 * other host live on. With one, its upper and work dirs live on an ext4 filesystem of that size in
 * a sparse file of the host's directory, loop-mounted at `<hostDir>/disk`; `<hostDir>/upper` and
 * `<hostDir>/work` (and its console log) are symlinks into it (the overlay follows them), so
 * everything else finds the layer where it always does. A host that fills its disk gets ENOSPC; the machine gives it at most
 * its size. Making one costs ~20 ms at launch (mkfs without a journal, lazily initialised inodes:
 * nothing about it needs to survive a crash of the machine), which a pool pays before any claim.
 *
 * The filesystem is mounted in the machine's mount namespace, before the host's namespaces are made,
 * so the host's copy of the mount table has it; it is unmounted when the host goes (the loop device
 * is released with its last mount: mount -o loop sets autoclear).
 */
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../../core/errors.js';
import type { HostNames } from './config.js';
import { describeFailure, shQuote, type CommandRunner } from './proc.js';

export function diskPaths(names: HostNames): { image: string; mountPoint: string } {
  return { image: join(names.hostDir, 'disk.img'), mountPoint: join(names.hostDir, 'disk') };
}

/** Whether the host's writable layer is on a disk of its own (its upper dir is a link into it). */
export function hasOwnDisk(names: HostNames): boolean {
  try {
    return lstatSync(names.upperDir).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Makes the host's disk and its upper and work dirs on it. */
export async function createHostDisk(names: HostNames, sizeMiB: number, sh: string, run: CommandRunner): Promise<void> {
  const { image, mountPoint } = diskPaths(names);
  const script = [
    'set -e',
    `truncate -s ${Math.floor(sizeMiB)}M ${shQuote(image)}`,
    // No reserved blocks (root in the host may use all of it anyway); an inode per 8 KiB, since a
    // host's writes are often many small files (dependencies).
    `mkfs.ext4 -q -F -m 0 -i 8192 -O ^has_journal -E lazy_itable_init=1,nodiscard ${shQuote(image)}`,
    `mkdir -m 0700 ${shQuote(mountPoint)}`,
    `mount -o loop ${shQuote(image)} ${shQuote(mountPoint)}`,
    `rmdir ${shQuote(join(mountPoint, 'lost+found'))}`,
    `mkdir -m 0755 ${shQuote(join(mountPoint, 'upper'))}`,
    `mkdir -m 0700 ${shQuote(join(mountPoint, 'work'))}`,
    `ln -s disk/upper ${shQuote(names.upperDir)}`,
    `ln -s disk/work ${shQuote(names.workDir)}`,
    // Its console log too (the init's output, which anything in the host can write to through
    // /proc/1/fd/1): on the machine's disk it would hold more than the host's size.
    `ln -sfn disk/console.log ${shQuote(names.consoleLog)}`,
  ].join('\n');
  const result = await run(sh, ['-c', script]);
  if (result.code !== 0) {
    await removeHostDisk(names, run).catch(() => undefined);
    throw new BerthError(
      'launch_failed',
      `cannot give host ${names.id} a disk of ${sizeMiB} MiB: ${describeFailure('sh', result)}`,
      'The machine needs loop devices (modprobe loop; in a container, --privileged) and mkfs.ext4 (e2fsprogs); or launch without diskMiB.',
      { hostId: names.id },
    );
  }
}

/** Unmounts and deletes the host's disk, if it has one (its processes must be gone). Idempotent. */
export async function removeHostDisk(names: HostNames, run: CommandRunner): Promise<void> {
  const { image, mountPoint } = diskPaths(names);
  const links = hasOwnDisk(names);
  if (!links && !existsSync(image) && !existsSync(mountPoint)) return; // the common case: no disk
  if (isMounted(mountPoint)) {
    const result = await run('umount', [mountPoint]);
    if (result.code !== 0 && isMounted(mountPoint)) {
      throw new BerthError('internal', `cannot unmount the disk of host ${names.id}: ${describeFailure('umount', result)}`, `Unmount ${mountPoint} by hand, then terminate the host again.`, { hostId: names.id });
    }
  }
  await Promise.all([
    rm(image, { force: true }),
    rm(mountPoint, { recursive: true, force: true }),
    ...(links ? [rm(names.upperDir, { force: true }), rm(names.workDir, { force: true }), rm(names.consoleLog, { force: true })] : []),
  ]);
}

function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === path);
}

/** Loop devices whose backing file is under `dir` (for leftover checks): /dev names. */
export function loopDevicesUnder(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync('/sys/block').filter((n) => n.startsWith('loop'));
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      return readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim().startsWith(`${dir}/`);
    } catch {
      return false;
    }
  });
}
