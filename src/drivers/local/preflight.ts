/**
 * Checks that this machine can run local hosts, turning each missing piece into a driver_unavailable
 * error that says what to do, and prepares the /dev template copied into every host.
 */
import { accessSync, constants, lstatSync, mkdirSync, mkdtempSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError } from '../../core/errors.js';
import { TOOL_NAMES, type SystemTools } from './host-scripts.js';
import { describeFailure, runCommand, shQuote, SYSTEM_PATH } from './proc.js';

const PRIVILEGED_HINT =
  'Run berth server as root on Linux (kernel with namespaces, cgroups and overlayfs). Inside a container, run it with --privileged.';

function unavailable(message: string, hint = PRIVILEGED_HINT, details?: Record<string, unknown>): BerthError {
  return new BerthError('driver_unavailable', message, hint, details);
}

export function checkPlatform(): void {
  if (process.platform !== 'linux') {
    throw unavailable(`the local driver needs Linux, this is ${process.platform}`, 'Run berth server on a Linux machine, or use the aws driver.');
  }
  if (process.getuid?.() !== 0) {
    throw unavailable('the local driver needs root to create namespaces, mounts, cgroups and network interfaces', 'Run berth server as root (e.g. with sudo).');
  }
}

/** Absolute path of an executable `name` on the system path, if there is one. */
export function findTool(name: string): string | undefined {
  return SYSTEM_PATH.split(':').map((dir) => join(dir, name)).find((path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export function resolveTools(): SystemTools {
  const missing: string[] = [];
  const resolved: Partial<SystemTools> = {};
  for (const [key, name] of Object.entries(TOOL_NAMES) as [keyof SystemTools, string][]) {
    const found = findTool(name);
    if (found) resolved[key] = found;
    else missing.push(name);
  }
  if (missing.length > 0) {
    throw unavailable(
      `the local driver needs ${missing.join(', ')}, not found in ${SYSTEM_PATH}`,
      'Install util-linux, iproute2 and coreutils (e.g. apt-get install util-linux iproute2 coreutils).',
    );
  }
  return resolved as SystemTools;
}

/**
 * Creates every namespace kind a host uses and mounts an overlay whose upper dir lives in stateDir,
 * exactly as launch will. This catches missing namespace support, seccomp/AppArmor denials and a
 * stateDir on a filesystem that cannot be an overlay upper (e.g. inside another overlay).
 */
export async function probeNamespacesAndOverlay(tools: SystemTools, stateDir: string): Promise<void> {
  const probeDir = mkdtempSync(join(stateDir, '.probe-'));
  try {
    for (const sub of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(probeDir, sub));
    const q = (sub: string): string => shQuote(join(probeDir, sub));
    const script = `${shQuote(tools.mount)} -t overlay overlay -o lowerdir=${join(probeDir, 'lower')},upperdir=${join(probeDir, 'upper')},workdir=${join(probeDir, 'work')} ${q('merged')} || { echo "OVERLAY_FAILED" >&2; exit 1; }`;
    const result = await runCommand(tools.unshare, ['--pid', '--fork', '--mount', '--net', '--uts', '--ipc', '--cgroup', '--propagation', 'private', '--', tools.sh, '-c', script]);
    if (result.code === 0) return;
    if (result.stderr.includes('OVERLAY_FAILED')) {
      throw unavailable(
        `cannot mount overlayfs with its upper dir in ${stateDir}: ${describeFailure('mount', result)}`,
        'Load the overlay module (modprobe overlay) and put the data dir on a local ext4/xfs/btrfs filesystem; inside a container, mount a volume for it (an overlay cannot sit on top of the container\'s own overlay).',
      );
    }
    throw unavailable(`cannot create pid/mount/net/uts/ipc/cgroup namespaces: ${describeFailure('unshare', result)}`);
  } finally {
    // The probe's mount lived in its own mount namespace and died with it; only the dirs remain.
    rmSync(probeDir, { recursive: true, force: true });
  }
}

const DEV_NODES = ['null', 'zero', 'full', 'random', 'urandom', 'tty'];
const DEV_SYMLINKS: [string, string][] = [
  ['ptmx', 'pts/ptmx'],
  ['fd', '/proc/self/fd'],
  ['stdin', '/proc/self/fd/0'],
  ['stdout', '/proc/self/fd/1'],
  ['stderr', '/proc/self/fd/2'],
];

function isCompleteDevTemplate(dir: string): boolean {
  try {
    return (
      DEV_NODES.every((n) => lstatSync(join(dir, n)).isCharacterDevice()) &&
      DEV_SYMLINKS.every(([name, target]) => readlinkSync(join(dir, name)) === target)
    );
  } catch {
    return false;
  }
}

/**
 * Builds the directory whose contents launch copies into each host's /dev tmpfs with a single
 * `cp -a` (cheaper than one mknod or bind mount per device). Kept when already complete, and
 * otherwise built aside and renamed into place, so a launch never copies a half-built template.
 */
export async function prepareDevTemplate(tools: SystemTools, dir: string): Promise<void> {
  if (isCompleteDevTemplate(dir)) return;
  const building = `${dir}.${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(building, { recursive: true, mode: 0o755 });
  const result = await runCommand(tools.cp, ['-a', ...DEV_NODES.map((n) => `/dev/${n}`), `${building}/`]);
  for (const [name, target] of DEV_SYMLINKS) symlinkSync(target, join(building, name));
  if (result.code !== 0 || !isCompleteDevTemplate(building)) {
    rmSync(building, { recursive: true, force: true });
    throw unavailable(`cannot create device nodes for hosts in ${dir}: ${describeFailure('cp', result)}`, 'Run berth server as root with the mknod capability (inside a container add --privileged).');
  }
  rmSync(dir, { recursive: true, force: true });
  renameSync(building, dir);
}

export function checkAgentDir(agentDir: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(agentDir).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) {
    throw unavailable(
      `the agent directory ${agentDir} does not exist`,
      'Build the agent bundle first (npm run build), or point the local driver at the directory that holds it.',
    );
  }
}
