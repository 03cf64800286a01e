/**
 * Per-host identity in a baked image. Hosts cloned from one image must be told apart (machine-id,
 * SSH host keys, DHCP client ids...) and must not inherit the builder's secrets (authorized_keys,
 * shell history, agent tokens), so the bake strips these from the finished image and each host
 * regenerates what it needs at first boot (src/agent/firstboot.ts). docs/images-identity.md lists
 * the items; keep it in sync with BUILTIN_IDENTITY_ITEMS.
 *
 * `root` is a machine directory showing the image (usually a writable overlay view whose lower
 * layers may be the machine's own files), so every path goes through resolveInRoot: a symlink in
 * the image means a path *of the image*, never of the machine.
 */
import type { Stats } from 'node:fs';
import { constants } from 'node:fs';
import { lstat, open, readdir, rm } from 'node:fs/promises';
import { posix } from 'node:path';
import { BerthError, errorMessage } from '../core/errors.js';
import { isInside, resolveInRoot } from './root-path.js';

export interface IdentityItem {
  /** Stable name, e.g. 'machine-id'. */
  id: string;
  /** Human description. */
  what: string;
  /** Absolute image paths; '*' matches within one component (dotfiles included). */
  paths: string[];
  /**
   * remove: the path goes (a symlink itself, never its target).
   * empty: the directory stays (same mode and owner), everything in it goes.
   * truncate: the tree stays, every regular file in it is cut to size 0.
   */
  action: 'remove' | 'empty' | 'truncate';
  /** Who regenerates it at first boot (for the docs). */
  regenerated: string;
}

const HISTORY_FILES = ['.bash_history', '.zsh_history', '.python_history', '.lesshst', '.viminfo'];
const AGENT_FIRST_BOOT = 'the berth agent writes a new one at first boot';
const BERTH_LAUNCH = 'berth writes a new one when it launches the host';

export const BUILTIN_IDENTITY_ITEMS: readonly IdentityItem[] = [
  // Truncated, not removed: an empty machine-id is the documented "not yet initialised" state
  // (machine-id(5)), which systemd handles even on a read-only /etc.
  { id: 'machine-id', what: 'systemd machine id', paths: ['/etc/machine-id'], action: 'truncate', regenerated: AGENT_FIRST_BOOT },
  { id: 'dbus-machine-id', what: 'D-Bus machine id (usually a symlink to /etc/machine-id)', paths: ['/var/lib/dbus/machine-id'], action: 'remove', regenerated: 'the berth agent links it to /etc/machine-id at first boot' },
  { id: 'hostname', what: 'host name', paths: ['/etc/hostname'], action: 'remove', regenerated: BERTH_LAUNCH },
  { id: 'ssh-host-keys', what: 'SSH host keys', paths: ['/etc/ssh/ssh_host_*'], action: 'remove', regenerated: 'the berth agent makes new keys of the types the image had, in the background at first boot, ed25519 first (the identity layer lists them in /etc/berth/first-boot.json)' },
  { id: 'authorized-keys', what: "the builder's SSH authorized_keys", paths: ['/root/.ssh/authorized_keys', '/home/*/.ssh/authorized_keys'], action: 'remove', regenerated: 'not needed (hosts are reached through berth)' },
  { id: 'dhcp-leases', what: 'DHCP client leases', paths: ['/var/lib/dhcp/*.leases', '/var/lib/dhclient/*', '/var/lib/NetworkManager/*.lease'], action: 'remove', regenerated: 'the DHCP client, when it gets a new lease' },
  // udev's old generator tied interface names to MAC addresses: a clone, on another MAC, got eth1 and no network.
  { id: 'persistent-net', what: 'udev persistent network interface names (tied to MAC addresses)', paths: ['/etc/udev/rules.d/70-persistent-net.rules'], action: 'remove', regenerated: 'udev, when its generator is installed; not needed otherwise' },
  { id: 'cloud-init', what: 'cloud-init state (instance id, which modules ran)', paths: ['/var/lib/cloud'], action: 'remove', regenerated: 'cloud-init at first boot, when installed' },
  { id: 'random-seed', what: 'saved random seeds', paths: ['/var/lib/systemd/random-seed', '/var/lib/urandom/random-seed'], action: 'remove', regenerated: 'systemd-random-seed / urandom service, when installed; not needed otherwise' },
  { id: 'journal', what: 'systemd journal (its files name the machine id)', paths: ['/var/log/journal'], action: 'remove', regenerated: 'journald at first boot, when installed' },
  { id: 'logs', what: 'log files (kept, emptied)', paths: ['/var/log'], action: 'truncate', regenerated: 'not needed (programs append to the empty files)' },
  { id: 'shell-history', what: 'shell and tool history', paths: HISTORY_FILES.flatMap((f) => [`/root/${f}`, `/home/*/${f}`]), action: 'remove', regenerated: 'not needed' },
  { id: 'tmp', what: 'temporary files', paths: ['/tmp', '/var/tmp'], action: 'empty', regenerated: 'not needed' },
  { id: 'docker', what: 'Docker engine identity and runtime files', paths: ['/etc/docker/key.json', '/var/lib/docker/engine-id', '/var/run/docker.pid', '/run/docker.pid', '/var/run/docker.sock', '/run/docker.sock'], action: 'remove', regenerated: 'dockerd at start, when installed' },
  { id: 'berth-agent', what: "the berth agent's identity, token and runtime state", paths: ['/etc/berth/agent.json', '/etc/berth/tags.json', '/run/berth'], action: 'remove', regenerated: BERTH_LAUNCH },
];

/** Image paths (as inside the image) that were acted on. */
export interface StripReport {
  removed: string[];
  emptied: string[];
  truncated: string[];
  skipped: { path: string; reason: string }[];
}

export interface IdentityOptions {
  /** Extra image paths to remove ('*' allowed within a component). */
  strip: string[];
  /** Built-in paths (exactly as listed) to leave alone. */
  keep: string[];
}

/** An error message for bad `identity` options, or undefined when they are fine. */
export function validateIdentityOptions(opts: IdentityOptions): string | undefined {
  const builtin = new Set(BUILTIN_IDENTITY_ITEMS.flatMap((item) => item.paths));
  for (const path of [...opts.strip, ...opts.keep]) {
    if (!path.startsWith('/')) return `identity path ${JSON.stringify(path)} is not absolute`;
    const parts = components(path);
    if (parts.length === 0) return `identity path ${JSON.stringify(path)} names the image root`;
    if (parts.includes('..')) return `identity path ${JSON.stringify(path)} contains '..'`;
  }
  for (const path of opts.keep) {
    if (!builtin.has(path)) {
      return `identity.keep path ${JSON.stringify(path)} is not one of the built-in identity paths (see docs/images-identity.md; use the path exactly as listed)`;
    }
  }
  const kept = new Set(opts.keep);
  const both = opts.strip.find((p) => kept.has(p));
  if (both !== undefined) return `identity path ${JSON.stringify(both)} is both in identity.strip and identity.keep`;
  return undefined;
}

/**
 * Strips per-host identity from the image at `root` (a machine directory). Missing paths are not
 * reported; paths that cannot be handled safely are skipped with a reason. Removals run first so a
 * directory that is removed (/var/log/journal) is not truncated file by file before.
 */
/**
 * Removals and emptied directories left to the caller (`defer`): on an overlay view, removing a
 * tree file by file costs a whiteout per file (the machine's /tmp can hold a million), while one
 * whiteout in the writable layer hides it whole. Machine paths under the root; modes for re-creating
 * emptied directories.
 */
export interface DeferredStrip {
  remove: string[];
  empty: { path: string; mode: number; uid: number; gid: number }[];
}

export async function stripIdentity(root: string, opts: IdentityOptions, deferred?: DeferredStrip): Promise<StripReport> {
  const message = validateIdentityOptions(opts);
  if (message) throw new BerthError('validation_failed', message, 'Fix identity.strip / identity.keep in the image spec.');
  const planned: { path: string; action: IdentityItem['action'] }[] = [];
  for (const item of BUILTIN_IDENTITY_ITEMS) {
    for (const path of item.paths) if (!opts.keep.includes(path)) planned.push({ path, action: item.action });
  }
  for (const path of opts.strip) planned.push({ path, action: 'remove' });
  const order: IdentityItem['action'][] = ['remove', 'empty', 'truncate'];
  planned.sort((a, b) => order.indexOf(a.action) - order.indexOf(b.action));

  const stripper = new Stripper(root, deferred);
  await stripper.keep(opts.keep);
  for (const { path, action } of planned) await stripper.apply(path, action);
  return stripper.report;
}

class Stripper {
  readonly report: StripReport = { removed: [], emptied: [], truncated: [], skipped: [] };
  /** Machine paths of kept image paths: compared after resolution, so /var/run/x and /run/x are one. */
  private readonly kept: string[] = [];

  constructor(
    private readonly root: string,
    private readonly deferred?: DeferredStrip,
  ) {}

  async keep(patterns: string[]): Promise<void> {
    for (const pattern of patterns) {
      for (const path of await this.expand(pattern)) this.kept.push(resolveInRoot(this.root, path, { followLast: false }));
    }
  }

  async apply(pattern: string, action: IdentityItem['action']): Promise<void> {
    let paths: string[];
    try {
      paths = await this.expand(pattern);
    } catch (err) {
      this.skip(pattern, errorMessage(err));
      return;
    }
    for (const path of paths) {
      try {
        await this.applyOne(path, action);
      } catch (err) {
        this.skip(path, errorMessage(err));
      }
    }
  }

  private async applyOne(path: string, action: IdentityItem['action']): Promise<void> {
    const target = resolveInRoot(this.root, path, { followLast: false });
    if (!isInside(this.root, target) || target === this.root) return this.skip(path, 'resolves to the image root or outside it');
    const stat = await lstatOrUndefined(target);
    if (!stat) return;
    const protection = this.protection(target);
    if (protection === 'kept') return;
    if (action === 'remove') {
      if (protection === 'holds-kept') return this.skip(path, 'holds a path in identity.keep');
      if (this.deferred) this.deferred.remove.push(target);
      else await rm(target, { recursive: true, force: true });
      this.report.removed.push(path);
      return;
    }
    // Following a final symlink could land anywhere in the image; leave such trees alone.
    if (stat.isSymbolicLink()) return this.skip(path, `is a symlink; not ${action === 'empty' ? 'emptied' : 'truncated'}`);
    if (action === 'empty') {
      if (!stat.isDirectory()) return this.skip(path, 'is not a directory; not emptied');
      if (this.deferred && protection === 'free') this.deferred.empty.push({ path: target, mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid });
      else await this.emptyDir(path, target);
      this.report.emptied.push(path);
      return;
    }
    if (stat.isDirectory()) await this.truncateTree(target);
    else if (stat.isFile()) await truncateFile(target);
    else return this.skip(path, 'is not a file or directory; not truncated');
    this.report.truncated.push(path);
  }

  /** Removes everything in `dir` except kept paths (descending into directories that hold some). */
  private async emptyDir(path: string, dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const child = posix.join(dir, entry.name);
      const protection = this.protection(child);
      if (protection === 'kept') continue;
      const childPath = posix.join(path, entry.name);
      if (protection === 'holds-kept' && entry.isDirectory()) await this.emptyDir(childPath, child);
      else await rm(child, { recursive: true, force: true });
    }
  }

  /** Cuts every regular file under `dir` to size 0; symlinks and kept paths are left alone. */
  private async truncateTree(dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const child = posix.join(dir, entry.name);
      if (this.protection(child) === 'kept') continue;
      if (entry.isDirectory()) await this.truncateTree(child);
      else if (entry.isFile()) await truncateFile(child);
    }
  }

  /**
   * The image paths matching `pattern`: '*' components are expanded by listing the directory they
   * are in, resolved inside the image (so /home -> /data/home lists the image's /data/home).
   */
  private async expand(pattern: string): Promise<string[]> {
    let paths = ['/'];
    for (const part of components(pattern)) {
      if (!part.includes('*')) {
        paths = paths.map((p) => posix.join(p, part));
        continue;
      }
      const matcher = globMatcher(part);
      const next: string[] = [];
      for (const parent of paths) {
        const dir = resolveInRoot(this.root, parent);
        if (!isInside(this.root, dir)) continue;
        const names = await readdir(dir).catch(() => [] as string[]);
        for (const name of names.sort()) if (matcher.test(name)) next.push(posix.join(parent, name));
      }
      paths = next;
    }
    return paths;
  }

  /** Whether the machine path `target` is kept (or inside a kept path), holds a kept path, or neither. */
  private protection(target: string): 'kept' | 'holds-kept' | 'free' {
    if (this.kept.some((keep) => isInside(keep, target))) return 'kept';
    return this.kept.some((keep) => isInside(target, keep)) ? 'holds-kept' : 'free';
  }

  private skip(path: string, reason: string): void {
    this.report.skipped.push({ path, reason });
  }
}

function components(path: string): string[] {
  return path.split('/').filter((p) => p !== '' && p !== '.');
}

function globMatcher(component: string): RegExp {
  const source = component.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${source}$`, 's');
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/**
 * Truncates through a descriptor opened without following a symlink. Empty files are left alone:
 * on an overlay, opening one for writing would copy it up into the strip layer for nothing.
 */
async function truncateFile(path: string): Promise<void> {
  const stat = await lstat(path);
  if (!stat.isFile() || stat.size === 0) return;
  const handle = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW);
  try {
    await handle.truncate(0);
  } finally {
    await handle.close();
  }
}
