import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BUILTIN_IDENTITY_ITEMS, stripIdentity, validateIdentityOptions } from './identity.js';

let root: string;
let outside: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'berth-identity-root-'));
  // A directory of the machine that a symlink inside the image names: it must never be touched.
  outside = mkdtempSync(join(tmpdir(), 'berth-identity-machine-'));
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

function put(path: string, content = 'data\n', mode = 0o644): void {
  const full = join(root, path);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, content, { mode });
}

function exists(path: string): boolean {
  try {
    lstatSync(join(root, path));
    return true;
  } catch {
    return false;
  }
}

function size(path: string): number {
  return statSync(join(root, path)).size;
}

/** A rootfs with every built-in item in it, plus files that must survive. */
function buildFakeRootfs(): void {
  put('etc/machine-id', '0123456789abcdef0123456789abcdef\n', 0o444);
  mkdirSync(join(root, 'var/lib/dbus'), { recursive: true });
  symlinkSync('/etc/machine-id', join(root, 'var/lib/dbus/machine-id'));
  put('etc/hostname', 'builder\n');
  for (const type of ['rsa', 'ecdsa', 'ed25519']) {
    put(`etc/ssh/ssh_host_${type}_key`, 'PRIVATE', 0o600);
    put(`etc/ssh/ssh_host_${type}_key.pub`, 'PUBLIC');
  }
  put('etc/ssh/sshd_config', 'PermitRootLogin no\n');
  put('root/.ssh/authorized_keys', 'ssh-ed25519 AAAA builder');
  put('root/.ssh/known_hosts', 'keep me');
  put('home/alice/.ssh/authorized_keys', 'ssh-ed25519 AAAA alice');
  put('home/bob/.ssh/authorized_keys', 'ssh-ed25519 AAAA bob');
  put('var/lib/dhcp/dhclient.eth0.leases', 'lease {}');
  put('var/lib/dhcp/keep.conf', 'not a lease');
  put('var/lib/dhclient/dhclient--eth0.lease', 'lease {}');
  put('var/lib/NetworkManager/internal-abc-eth0.lease', 'ADDRESS=10.0.0.5');
  put('var/lib/NetworkManager/NetworkManager.state', 'state');
  put('var/lib/cloud/instance/obj.pkl', 'pickle');
  put('var/lib/cloud/data/instance-id', 'i-123');
  put('var/lib/systemd/random-seed', 'seed');
  put('var/lib/urandom/random-seed', 'seed');
  put('var/log/syslog', 'lots of logs\n');
  put('var/log/apt/history.log', 'installed things\n');
  put('var/log/journal/0123/system.journal', 'journal');
  symlinkSync('/etc/hostname', join(root, 'var/log/link-to-hostname'));
  for (const home of ['root', 'home/alice']) {
    for (const f of ['.bash_history', '.zsh_history', '.python_history', '.lesshst', '.viminfo']) put(`${home}/${f}`, 'secret history');
    put(`${home}/.bashrc`, 'alias ll="ls -l"');
  }
  put('tmp/build.log', 'x');
  put('tmp/sub/dir/file', 'x');
  mkdirSync(join(root, 'var/tmp/cache'), { recursive: true, mode: 0o1777 });
  put('var/tmp/cache/x', 'x');
  put('etc/docker/key.json', '{}');
  put('etc/docker/daemon.json', '{}');
  put('var/lib/docker/engine-id', 'e');
  mkdirSync(join(root, 'run'), { recursive: true });
  symlinkSync('/run', join(root, 'var/run'));
  put('run/docker.pid', '1');
  put('run/docker.sock', '');
  put('etc/berth/agent.json', '{"hostId":"h-x","token":"t","serverUrl":"ws://x"}', 0o600);
  put('etc/berth/tags.json', '{}');
  put('run/berth/agent/invocations/a.json', '{}');
}

describe('stripIdentity', () => {
  it('removes, empties and truncates every built-in item and nothing else', async () => {
    buildFakeRootfs();
    const tmpMode = statSync(join(root, 'tmp')).mode;
    const report = await stripIdentity(root, { strip: [], keep: [] });

    expect(size('etc/machine-id')).toBe(0);
    for (const gone of [
      'var/lib/dbus/machine-id', 'etc/hostname', 'etc/ssh/ssh_host_rsa_key', 'etc/ssh/ssh_host_ed25519_key.pub', 'root/.ssh/authorized_keys',
      'home/alice/.ssh/authorized_keys', 'home/bob/.ssh/authorized_keys', 'var/lib/dhcp/dhclient.eth0.leases', 'var/lib/dhclient/dhclient--eth0.lease',
      'var/lib/NetworkManager/internal-abc-eth0.lease', 'var/lib/cloud', 'var/lib/systemd/random-seed', 'var/lib/urandom/random-seed',
      'var/log/journal', 'root/.bash_history', 'root/.viminfo', 'home/alice/.zsh_history', 'home/alice/.lesshst', 'home/alice/.python_history',
      'etc/docker/key.json', 'var/lib/docker/engine-id', 'run/docker.pid', 'run/docker.sock', 'etc/berth/agent.json', 'etc/berth/tags.json', 'run/berth',
    ]) {
      expect(exists(gone), gone).toBe(false);
    }
    for (const kept of ['etc/ssh/sshd_config', 'root/.ssh/known_hosts', 'var/lib/dhcp/keep.conf', 'var/lib/NetworkManager/NetworkManager.state', 'root/.bashrc', 'home/alice/.bashrc', 'etc/docker/daemon.json', 'var/lib/dbus', 'var/run']) {
      expect(exists(kept), kept).toBe(true);
    }
    expect([size('var/log/syslog'), size('var/log/apt/history.log')]).toEqual([0, 0]);
    // A symlink in a truncated tree is left alone, and so is its target.
    expect(lstatSync(join(root, 'var/log/link-to-hostname')).isSymbolicLink()).toBe(true);
    expect(readdirSync(join(root, 'tmp'))).toEqual([]);
    expect(statSync(join(root, 'tmp')).mode).toBe(tmpMode);
    expect(readdirSync(join(root, 'var/tmp'))).toEqual([]);

    expect(report.emptied).toEqual(['/tmp', '/var/tmp']);
    expect(report.truncated).toEqual(['/etc/machine-id', '/var/log']);
    expect(report.removed).toContain('/home/bob/.ssh/authorized_keys');
    expect(report.removed).toContain('/var/run/docker.sock');
    expect(report.removed).not.toContain('/run/docker.sock'); // the same file, already gone
    expect(report.skipped).toEqual([]);
  });

  it('reports nothing on an empty image', async () => {
    expect(await stripIdentity(root, { strip: [], keep: [] })).toEqual({ removed: [], emptied: [], truncated: [], skipped: [] });
  });

  it('leaves kept built-in paths alone, also inside a truncated tree', async () => {
    buildFakeRootfs();
    const report = await stripIdentity(root, { strip: [], keep: ['/etc/hostname', '/home/*/.ssh/authorized_keys', '/var/log/journal'] });
    expect(readFileSync(join(root, 'etc/hostname'), 'utf8')).toBe('builder\n');
    expect(exists('home/alice/.ssh/authorized_keys')).toBe(true);
    expect(exists('root/.ssh/authorized_keys')).toBe(false);
    expect(readFileSync(join(root, 'var/log/journal/0123/system.journal'), 'utf8')).toBe('journal');
    expect(size('var/log/syslog')).toBe(0);
    expect(report.removed).not.toContain('/etc/hostname');
  });

  it('removes extra strip paths, with globs', async () => {
    buildFakeRootfs();
    put('opt/app/cache/a.bin', 'a');
    put('opt/app/cache/b.bin', 'b');
    put('opt/app/cache/c.txt', 'c');
    put('home/alice/.npm/_cacache/x', 'x');
    put('srv/state/id', 'x');
    const report = await stripIdentity(root, { strip: ['/opt/app/cache/*.bin', '/home/*/.npm', '/srv/state', '/does/not/exist'], keep: [] });
    expect(readdirSync(join(root, 'opt/app/cache'))).toEqual(['c.txt']);
    expect(exists('home/alice/.npm')).toBe(false);
    expect(exists('srv/state')).toBe(false);
    expect(report.removed).toEqual(expect.arrayContaining(['/opt/app/cache/a.bin', '/opt/app/cache/b.bin', '/home/alice/.npm', '/srv/state']));
    expect(report.removed.some((p) => p.startsWith('/does'))).toBe(false);
  });

  it('never touches the machine through symlinks in the image', async () => {
    // On the machine, `outside` holds logs, a journal, keys and a home; inside the image each of
    // these paths is a symlink to that same absolute path, which does not exist in the image.
    const sentinels = ['syslog', 'journal/0123/system.journal', 'secret_key', 'ssh/authorized_keys', 'home/carol/.bash_history', 'tmp/file'];
    for (const s of sentinels) {
      mkdirSync(dirname(join(outside, s)), { recursive: true });
      writeFileSync(join(outside, s), 'machine data\n');
    }
    mkdirSync(join(root, 'var'), { recursive: true });
    mkdirSync(join(root, 'etc/ssh'), { recursive: true });
    mkdirSync(join(root, 'root'), { recursive: true });
    symlinkSync(outside, join(root, 'var/log'));
    symlinkSync(join(outside, 'secret_key'), join(root, 'etc/ssh/ssh_host_rsa_key'));
    symlinkSync(join(outside, 'ssh'), join(root, 'root/.ssh'));
    symlinkSync(join(outside, 'home'), join(root, 'home'));
    symlinkSync(join(outside, 'tmp'), join(root, 'var/tmp'));
    // The image does have its own copy of one of those paths: that one is the image's to strip.
    put(join(outside, 'journal/0123/system.journal'), 'image journal');

    const report = await stripIdentity(root, { strip: ['/var/log/*', '/home/*/.bash_history'], keep: [] });

    for (const s of sentinels) expect(readFileSync(join(outside, s), 'utf8'), s).toBe('machine data\n');
    expect(exists(join(outside, 'journal'))).toBe(false); // the image's /<outside>/journal
    expect(existsSync(join(root, 'etc/ssh/ssh_host_rsa_key'))).toBe(false); // the link itself went
    expect(lstatSync(join(root, 'var/log')).isSymbolicLink()).toBe(true);
    expect(report.skipped).toEqual([
      { path: '/var/tmp', reason: 'is a symlink; not emptied' },
      { path: '/var/log', reason: 'is a symlink; not truncated' },
    ]);
  });
});

describe('validateIdentityOptions', () => {
  it('accepts built-in keep paths and absolute strip paths', () => {
    expect(validateIdentityOptions({ strip: ['/opt/app/*.cache'], keep: ['/etc/hostname', '/home/*/.bash_history'] })).toBeUndefined();
    for (const item of BUILTIN_IDENTITY_ITEMS) expect(validateIdentityOptions({ strip: [], keep: item.paths })).toBeUndefined();
  });

  it('explains what is wrong', () => {
    expect(validateIdentityOptions({ strip: ['var/cache'], keep: [] })).toBe('identity path "var/cache" is not absolute');
    expect(validateIdentityOptions({ strip: ['/'], keep: [] })).toBe('identity path "/" names the image root');
    expect(validateIdentityOptions({ strip: ['/opt/../etc'], keep: [] })).toBe(`identity path "/opt/../etc" contains '..'`);
    expect(validateIdentityOptions({ strip: [], keep: ['/etc/ssh'] })).toMatch(/^identity\.keep path "\/etc\/ssh" is not one of the built-in identity paths/);
    expect(validateIdentityOptions({ strip: [], keep: ['etc/hostname'] })).toBe('identity path "etc/hostname" is not absolute');
    expect(validateIdentityOptions({ strip: ['/etc/hostname'], keep: ['/etc/hostname'] })).toBe('identity path "/etc/hostname" is both in identity.strip and identity.keep');
  });

  it('is enforced by stripIdentity', async () => {
    await expect(stripIdentity(root, { strip: ['relative'], keep: [] })).rejects.toMatchObject({ code: 'validation_failed' });
  });
});
