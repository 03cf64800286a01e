/**
 * What keeps a host's root from being the machine's root. Namespaces alone do not: a host's
 * processes run as uid 0 in the machine's user namespace, and with every capability they could
 * mknod the machine's disk and mount it, load kernel modules, set the machine's clock, or write
 * /proc/sys/kernel/core_pattern (which makes the kernel run a program of their choosing on the
 * machine) — each of which ends every other host's isolation. So, as container runtimes do:
 *
 *   - the capability bounding set of everything in a host (init, agent, commands, services) is
 *     cut to HOST_CAPABILITIES at the exec of its init, by util-linux's setpriv;
 *   - /proc/sys and /proc/sysrq-trigger are read-only in the host, and /sys was already. (Its
 *     own network namespace's settings need CAP_NET_ADMIN to change, which it does not have.)
 *
 * setpriv comes from the machine, but runs after pivot_root, when the machine's files are gone
 * from the host: it is copied, with the shared libraries it needs and their loader, into a
 * directory bind-mounted read-only at /.berth/tools, and started through that loader.
 */
import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BerthError } from '../../core/errors.js';
import { describeFailure, runCommand, SYSTEM_PATH } from './proc.js';

/**
 * The capabilities a host keeps: Docker's default set less CAP_MKNOD (no device cgroup is
 * guaranteed here, so a device node it made could be opened) and less CAP_NET_RAW, plus
 * CAP_SYS_PTRACE (debuggers; a host's processes see only their own pid namespace). Without
 * NET_RAW and NET_ADMIN a host cannot forge frames or take another host's address on the shared
 * bridge (ARP or MAC spoofing would let it answer for another environment behind the router);
 * ping still works, through ICMP datagram sockets (ping_group_range, set for every host at
 * setup). Gone, among others: SYS_ADMIN (mounts), SYS_MODULE, SYS_RAWIO, SYS_TIME, SYS_BOOT,
 * DAC_READ_SEARCH (open_by_handle_at reaches the machine's files), SYSLOG, MAC_*, BPF, PERFMON.
 */
export const HOST_CAPABILITIES = [
  'chown',
  'dac_override',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'setpcap',
  'setfcap',
  'net_bind_service',
  'sys_chroot',
  'sys_ptrace',
  'audit_write',
] as const;

/** Where the tools directory appears inside every host. */
export const TOOLS_MOUNT = '/.berth/tools';

export interface CapabilityTool {
  /** The machine directory bind-mounted at TOOLS_MOUNT. */
  dir: string;
  /** The words that exec a command with the host's capabilities, as seen inside the host. */
  prefix: string[];
}

/**
 * Copies setpriv and what it links against into `dir` (rebuilt at every start, aside and renamed
 * into place, so a launch never sees it half-made) and returns how hosts run it.
 */
export async function prepareCapabilityTool(dir: string): Promise<CapabilityTool> {
  const setpriv = SYSTEM_PATH.split(':')
    .map((d) => join(d, 'setpriv'))
    .find((p) => existsSync(p));
  if (!setpriv) {
    throw new BerthError(
      'driver_unavailable',
      `the local driver needs setpriv (util-linux) to limit what root in a host can do; not found in ${SYSTEM_PATH}`,
      'Install util-linux (e.g. apt-get install util-linux).',
    );
  }
  // glibc's loader lists a program's libraries instead of running it when asked to (what ldd does).
  const listed = await runCommand(setpriv, [], undefined, { LD_TRACE_LOADED_OBJECTS: '1' });
  const libraries = [...listed.stdout.matchAll(/=> (\/\S+)/g)].map((m) => m[1] ?? '');
  const loader = /^\s*(\/\S+) \(0x/m.exec(listed.stdout)?.[1];
  if (listed.code !== 0 || !loader) {
    throw new BerthError(
      'driver_unavailable',
      `cannot find the shared libraries of ${setpriv}: ${describeFailure('setpriv', listed)}`,
      'berth copies setpriv into hosts with its libraries; it needs a glibc-based machine (Debian, Ubuntu, Fedora, …).',
    );
  }
  const building = `${dir}.${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(building, { recursive: true, mode: 0o755 });
  for (const file of [setpriv, loader, ...libraries]) copyFileSync(file, join(building, basename(file)));
  rmSync(dir, { recursive: true, force: true });
  renameSync(building, dir);
  const inside = (name: string) => `${TOOLS_MOUNT}/${name}`;
  return {
    dir,
    prefix: [
      inside(basename(loader)),
      '--library-path',
      TOOLS_MOUNT,
      inside('setpriv'),
      '--bounding-set',
      `-all,${HOST_CAPABILITIES.map((c) => `+${c}`).join(',')}`,
      '--inh-caps',
      '-all',
      '--',
    ],
  };
}

/**
 * fstab lines (inside the host's root) that make the kernel's global knobs read-only.
 * `sysrqTrigger`: whether this kernel has /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ); where it does,
 * one write to it can reboot the machine.
 */
export function procProtectionEntries(root: string, sysrqTrigger: boolean): string[] {
  return [
    `${root}/proc/sys ${root}/proc/sys none bind,ro,nosuid,nodev,noexec 0 0`,
    ...(sysrqTrigger ? [`${root}/proc/sysrq-trigger ${root}/proc/sysrq-trigger none bind,ro 0 0`] : []),
  ];
}

/** Whether this kernel has /proc/sysrq-trigger (see procProtectionEntries). */
export function hasSysrqTrigger(): boolean {
  return existsSync('/proc/sysrq-trigger');
}
