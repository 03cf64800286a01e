/**
 * A host's writable layer as a layer of a new image. The upper dir of a host holds exactly what
 * the host changed (overlays are mounted self-contained, see overlay.ts), plus what the driver wrote
 * at boot; the latter is taken out so an image never carries one host's boot files.
 */
import { existsSync, readdirSync, readFileSync, realpathSync, rmdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError } from '../../core/errors.js';
import type { HostNames } from './config.js';
import { hasOwnDisk } from './disk.js';
import { bootFiles } from './host-launch.js';
import { describeFailure, type CommandRunner } from './proc.js';

/** Mount points the host's fstab creates in the upper dir when the image lacks them. */
const MOUNT_POINTS = ['proc', 'dev', 'sys', 'tmp', 'run'];

export interface CaptureInput {
  names: HostNames;
  hostname: string;
  ip: string;
  /** The bridge's gateway: the name server a host with egress was given. */
  gateway: string;
  dest: string;
  /** Move the layer (the host is stopped) rather than copy it (the host keeps running). */
  move: boolean;
  cp: string;
  run: CommandRunner;
}

export async function captureUpperDir({ names, hostname, ip, gateway, dest, move, cp, run }: CaptureInput): Promise<void> {
  if (existsSync(dest)) throw new BerthError('conflict', `${dest} already exists`, 'Capture into a new directory.');
  if (!existsSync(names.upperDir)) throw new BerthError('invalid_state', `host ${names.id} has no writable layer on this machine`, 'Capture a running host.');
  // A layer on the host's own disk (disk.ts) goes when the host does: it is copied, never moved.
  if (move && !hasOwnDisk(names)) {
    await rename(names.upperDir, dest);
  } else {
    // cp -a keeps modes, owners, times, device nodes (whiteouts) and xattrs (opaque directories).
    const result = await run(cp, ['-a', '--', realpathSync(names.upperDir), dest]);
    if (result.code !== 0) {
      await rm(dest, { recursive: true, force: true });
      throw new BerthError('internal', `copying the writable layer of host ${names.id} failed: ${describeFailure('cp', result)}`, 'Check free disk space in the data dir and retry.');
    }
  }
  await removeBootFiles(dest, hostname, ip, gateway);
}

/** Takes out what the driver wrote at boot, where the host left it as written. */
async function removeBootFiles(layer: string, hostname: string, ip: string, gateway: string): Promise<void> {
  await rm(join(layer, '.berth'), { recursive: true, force: true });
  for (const [path, content] of Object.entries(bootFiles(hostname, ip, gateway))) {
    const file = join(layer, path);
    if (content === undefined || readText(file) === content) await rm(file, { force: true });
  }
  for (const dir of ['etc/berth', ...MOUNT_POINTS]) removeIfEmptyDir(join(layer, dir));
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function removeIfEmptyDir(path: string): void {
  try {
    if (readdirSync(path).length === 0) rmdirSync(path);
  } catch {
    // Not there, or not a directory: nothing of ours.
  }
}
