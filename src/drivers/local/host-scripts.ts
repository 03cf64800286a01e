/**
 * The shell scripts that bring a host up. Launch is on the hot path, so the whole host is started
 * by ONE process spawned from Node, which execs its way through the steps (no fork per step):
 *
 *   launcher  (sh, in the machine's namespaces, detached from the server)
 *     1. `ip -batch` in the background: named netns + veth pair (eth0 created directly inside the netns)
 *        on the bridge;
 *     2. meanwhile joins the host's cgroups, so everything from here on is accounted to the host;
 *     3. waits for the server's go-ahead on stdin (it writes the host's files in the meantime);
 *     4. exec nsenter --net=<netns> unshare --pid --fork --mount --uts --ipc --cgroup  sh -c SETUP
 *   setup     (sh as PID 1 of the new pid namespace, private mount namespace, machine's root still visible)
 *     5. starts `ip -batch` for eth0/lo/route in the background, overlapping with the mounts;
 *     6. sets the hostname, notes its global pid (the machine's /proc is still mounted);
 *     7. `mount -a -T <fstab>`: overlay root, masks, /proc, /dev, /dev/pts, /dev/shm, /tmp, /sys, agent dir;
 *     8. `cp -a` device nodes and /dev symlinks from a template into the new /dev;
 *     9. pivot_root into the overlay and lazily unmount the old root with the image's umount (the
 *        machine's binaries cannot run once the root changed): the machine's files are gone;
 *    10. execs the image's /bin/sh running INIT (seeded at /.berth/init.sh), passing its global pid.
 *   init      (the image's /bin/sh, PID 1 for the host's lifetime)
 *     sets its TERM trap, reports "ready <global pid>" on fd 3 and closes it; then
 *     runs the agent command, restarts it when it exits, reaps orphans (every `wait` reaps any child),
 *     forwards TERM to the agent and exits, which makes the kernel kill the rest of the host.
 */
import { join } from 'node:path';
import type { CgroupJoin } from './cgroups.js';
import type { HostNames } from './config.js';
import { SELF_CONTAINED_OPTIONS } from './overlay.js';
import { shQuote } from './proc.js';
import { procProtectionEntries, TOOLS_MOUNT } from './confinement.js';

/** Absolute paths of the system tools we run, resolved once by preflight (no PATH lookups at launch). */
export interface SystemTools {
  sh: string;
  ip: string;
  nsenter: string;
  unshare: string;
  mount: string;
  pivotRoot: string;
  cp: string;
  umount: string;
}

export const TOOL_NAMES: Record<keyof SystemTools, string> = {
  sh: 'sh',
  ip: 'ip',
  nsenter: 'nsenter',
  unshare: 'unshare',
  mount: 'mount',
  pivotRoot: 'pivot_root',
  cp: 'cp',
  umount: 'umount',
};

export interface FstabInput {
  /** Base root filesystem of the image on the machine ('/' for the machine's own root filesystem). */
  image: string;
  /** The overlay's lowerdir: the image's layers over its base (see overlay.ts). Default: the base alone. */
  lowerDir?: string;
  names: HostNames;
  agentDir: string;
  /** The machine directory that holds setpriv and its libraries (see confinement.ts). */
  toolsDir: string;
  /** Whether the kernel has /proc/sysrq-trigger, to be made read-only (see confinement.ts). */
  sysrqTrigger: boolean;
  /** Machine paths that must not be visible inside the host when the image contains them. */
  hiddenPaths: string[];
}

/** Where `path` (a machine path) appears inside a host built from `image`, or undefined if it does not. */
export function pathInsideImage(image: string, path: string): string | undefined {
  if (image === '/') return path;
  if (path === image) return '/';
  return path.startsWith(`${image}/`) ? path.slice(image.length) : undefined;
}

/**
 * The mount table of a host, applied by one `mount -a -T` in its mount namespace. Order matters:
 * the overlay first, then everything on top of it. X-mount.mkdir creates missing mount points
 * (in the upper dir or a tmpfs, never in the image).
 */
export function buildFstab({ image, lowerDir, names, agentDir, toolsDir, sysrqTrigger, hiddenPaths }: FstabInput): string {
  const root = names.rootDir;
  const entries: string[] = [`overlay ${root} overlay lowerdir=${lowerDir ?? image},upperdir=${names.upperDir},workdir=${names.workDir},${SELF_CONTAINED_OPTIONS} 0 0`];
  for (const hidden of hiddenPaths) {
    const inside = pathInsideImage(image, hidden);
    // An empty read-only tmpfs over e.g. the state dir keeps hosts from reading each other's upper dirs.
    if (inside !== undefined && inside !== '/') entries.push(`berth-hidden ${join(root, inside)} tmpfs ro,nosuid,nodev,noexec,size=4k,mode=700,X-mount.mkdir 0 0`);
  }
  entries.push(
    `proc ${root}/proc proc nosuid,nodev,noexec,X-mount.mkdir 0 0`,
    ...procProtectionEntries(root, sysrqTrigger),
    `tmpfs ${root}/dev tmpfs nosuid,noexec,mode=755,size=1m,X-mount.mkdir 0 0`,
    `devpts ${root}/dev/pts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,X-mount.mkdir 0 0`,
    `shm ${root}/dev/shm tmpfs nosuid,nodev,mode=1777,X-mount.mkdir 0 0`,
    `tmpfs ${root}/tmp tmpfs nosuid,nodev,mode=1777,X-mount.mkdir 0 0`,
    // Runtime state (the agent's journal among it) lives in memory, as on any modern Linux.
    `tmpfs ${root}/run tmpfs nosuid,nodev,mode=755,X-mount.mkdir 0 0`,
    `sysfs ${root}/sys sysfs ro,nosuid,nodev,noexec,X-mount.mkdir 0 0`,
    `${agentDir} ${root}/.berth/agent none bind,ro,X-mount.mkdir 0 0`,
    `${toolsDir} ${root}${TOOLS_MOUNT} none bind,ro,X-mount.mkdir 0 0`,
    '',
  );
  return entries.join('\n');
}

/** Where pivot_root puts the machine's root inside the host, until it is lazily unmounted. */
export const OLD_ROOT = '/.berth/oldroot';

/** Where the init script is seeded in the upper dir, so `ps` in a host shows a short command line. */
export const INIT_PATH = '/.berth/init.sh';

/**
 * PID 1 of a host. Arguments: its pid as seen from the machine, then the agent command.
 * It reports ready only once its TERM trap is set: the kernel drops signals to a namespace's init
 * that has no handler, so a terminate right after launch would otherwise hang for the whole grace.
 */
export const INIT_SCRIPT = `
stop=
child=
trap 'stop=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT HUP
echo "ready $1" >&3
exec 3>&-
shift
while [ -z "$stop" ]; do
  "$@" &
  child=$!
  # TERM may have arrived before $child was known to the trap.
  [ -z "$stop" ] || kill -TERM "$child" 2>/dev/null
  # wait returns early when a trapped signal arrives; keep waiting until the agent is really gone.
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=
  [ -z "$stop" ] || break
  echo "berth-init: agent exited with status $rc; restarting in 1s" >&2
  sleep 1 &
  wait $!
done
exit 0
`;

export interface SetupInput {
  tools: SystemTools;
  names: HostNames;
  hostname: string;
  innerNetworkBatch: string;
  devTemplateDir: string;
  agentCommand: string[];
  /** Words that exec the init with the host's capabilities (CapabilityTool.prefix). */
  confine: string[];
}

/** Runs as PID 1 of the new pid namespace until it execs the init. */
export function buildSetupScript({ tools, names, hostname, innerNetworkBatch, devTemplateDir, agentCommand, confine }: SetupInput): string {
  const root = shQuote(names.rootDir);
  return `set -e
${shQuote(tools.ip)} -batch - 3>&- <<'BERTH_NET' &
${innerNetworkBatch}BERTH_NET
netpid=$!
# Unprivileged ping (ICMP datagram sockets): hosts have no CAP_NET_RAW (confinement.ts).
echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range 2>/dev/null || true
printf '%s' ${shQuote(hostname)} > /proc/sys/kernel/hostname
read -r gpid rest < /proc/self/stat
${shQuote(tools.mount)} -a -T ${shQuote(names.fstabFile)} 3>&-
${shQuote(tools.cp)} -a ${shQuote(`${devTemplateDir}/.`)} ${root}/dev/ 3>&-
wait "$netpid" || { echo "berth-setup: configuring eth0 inside the host failed" >&2; exit 1; }
cd ${root}
${shQuote(tools.pivotRoot)} . ${OLD_ROOT.slice(1)} 3>&-
cd /
# From here on paths resolve in the image: a dynamically linked machine binary cannot run any more.
umount -l ${OLD_ROOT} 3>&- || { echo "berth-setup: cannot detach the machine's root; the image needs umount (util-linux or busybox)" >&2; exit 1; }
[ -x /bin/sh ] || { echo "berth-setup: the image has no /bin/sh to run as init" >&2; exit 1; }
# The init, and everything it starts, with the host's capabilities only (confinement.ts).
exec ${confine.map(shQuote).join(' ')} /bin/sh ${INIT_PATH} "$gpid" ${agentCommand.map(shQuote).join(' ')}
`;
}

export interface LauncherInput {
  tools: SystemTools;
  names: HostNames;
  cgroupJoins: CgroupJoin[];
  outerNetworkBatch: string;
  setupScript: string;
}

/**
 * Runs in the machine's namespaces. Joining cgroups can be slow (see CgroupJoin), so the netns/veth
 * creation runs meanwhile in the background; that `ip` is a short-lived helper, not part of the host,
 * so it need not be accounted to the host's cgroups. No `set -e`: on failure we must first wait for
 * that `ip`, or cleanup could race with it.
 */
export function buildLauncherScript({ tools, names, cgroupJoins, outerNetworkBatch, setupScript }: LauncherInput): string {
  const joins = cgroupJoins.map(({ file, value }) => `echo ${value} > ${shQuote(file)} || fail "cannot join cgroup "${shQuote(file)}`);
  return `fail() { wait; echo "berth-launch: $*" >&2; exit 1; }
${shQuote(tools.ip)} -batch - 3>&- <<'BERTH_NET' &
${outerNetworkBatch}BERTH_NET
netpid=$!
${joins.join('\n')}
wait "$netpid" || fail "creating network namespace ${names.netns} and veth ${names.veth} failed"
# Gate: the server writes the host's files meanwhile and sends a line when they are in place.
read -r gate || fail "the server gave up on this launch"
exec </dev/null
exec ${shQuote(tools.nsenter)} --net=${shQuote(`/run/netns/${names.netns}`)} -- ${shQuote(tools.unshare)} --pid --fork --mount --uts --ipc --cgroup --propagation private -- ${shQuote(tools.sh)} -c ${shQuote(setupScript)} berth-setup
`;
}
