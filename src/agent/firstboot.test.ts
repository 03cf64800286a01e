import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { regenerateIdentity } from './firstboot.js';

let root: string;
let logged: string[];
const log = (line: string): void => {
  logged.push(line);
};

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'berth-firstboot-'));
  mkdirSync(join(root, 'etc'));
  logged = [];
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('regenerateIdentity: machine-id', () => {
  it('writes a fresh random id when /etc/machine-id is missing', () => {
    expect(regenerateIdentity({ log, root })).toEqual({ machineId: 'written', sshHostKeys: 'not-applicable' });
    const id = readFileSync(join(root, 'etc/machine-id'), 'utf8');
    expect(id).toMatch(/^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}\n$/);
    expect(statSync(join(root, 'etc/machine-id')).mode & 0o777).toBe(0o444);
    expect(readdirSync(join(root, 'etc'))).toEqual(['machine-id']);
    rmSync(join(root, 'etc/machine-id'));
    regenerateIdentity({ log, root });
    expect(readFileSync(join(root, 'etc/machine-id'), 'utf8')).not.toBe(id);
    expect(logged).toEqual([]);
  });

  it('replaces an empty (stripped, read-only) /etc/machine-id', () => {
    writeFileSync(join(root, 'etc/machine-id'), '');
    chmodSync(join(root, 'etc/machine-id'), 0o444);
    expect(regenerateIdentity({ log, root }).machineId).toBe('written');
    expect(readFileSync(join(root, 'etc/machine-id'), 'utf8')).toMatch(/^[0-9a-f]{32}\n$/);
  });

  it('keeps an existing id', () => {
    writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
    expect(regenerateIdentity({ log, root }).machineId).toBe('kept');
    expect(readFileSync(join(root, 'etc/machine-id'), 'utf8')).toBe('0123456789abcdef0123456789abcdef\n');
  });

  it('logs instead of throwing when it cannot write', () => {
    rmSync(join(root, 'etc'), { recursive: true });
    expect(regenerateIdentity({ log, root }).machineId).toBe('kept');
    expect(logged).toEqual([expect.stringMatching(/^first boot: could not write \/etc\/machine-id: ENOENT/)]);
  });
});

describe('regenerateIdentity: D-Bus machine-id', () => {
  it('links it to /etc/machine-id when /var/lib/dbus exists and it is missing', () => {
    mkdirSync(join(root, 'var/lib/dbus'), { recursive: true });
    regenerateIdentity({ log, root });
    expect(readlinkSync(join(root, 'var/lib/dbus/machine-id'))).toBe('/etc/machine-id');
  });

  it('leaves an existing one and a missing /var/lib/dbus alone', () => {
    regenerateIdentity({ log, root });
    expect(existsSync(join(root, 'var'))).toBe(false);
    mkdirSync(join(root, 'var/lib/dbus'), { recursive: true });
    writeFileSync(join(root, 'var/lib/dbus/machine-id'), 'own\n');
    regenerateIdentity({ log, root });
    expect(lstatSync(join(root, 'var/lib/dbus/machine-id')).isFile()).toBe(true);
  });
});

describe('regenerateIdentity: SSH host keys', () => {
  it('is not applicable without /etc/ssh', () => {
    expect(regenerateIdentity({ log, root }).sshHostKeys).toBe('not-applicable');
  });

  it('makes no keys unless the image asks (most hosts run no sshd)', () => {
    mkdirSync(join(root, 'etc/ssh'));
    writeFileSync(join(root, 'etc/ssh/sshd_config'), '');
    expect(regenerateIdentity({ log, root }).sshHostKeys).toBe('not-applicable');
    expect(readdirSync(join(root, 'etc/ssh'))).toEqual(['sshd_config']);
  });

  it('keeps present keys', () => {
    mkdirSync(join(root, 'etc/berth'), { recursive: true });
    writeFileSync(join(root, 'etc/berth/first-boot.json'), JSON.stringify({ sshHostKeyTypes: ['ed25519'] }));
    mkdirSync(join(root, 'etc/ssh'));
    writeFileSync(join(root, 'etc/ssh/ssh_host_ed25519_key'), 'KEY', { mode: 0o600 });
    expect(regenerateIdentity({ log, root }).sshHostKeys).toBe('present');
    expect(readdirSync(join(root, 'etc/ssh'))).toEqual(['ssh_host_ed25519_key']);
  });

  it('generates the key types the image asks for in the background without waiting for them', async () => {
    mkdirSync(join(root, 'etc/berth'), { recursive: true });
    writeFileSync(join(root, 'etc/berth/first-boot.json'), JSON.stringify({ sshHostKeyTypes: ['rsa', 'ecdsa', 'ed25519', 'bogus; rm -rf /'] }));
    mkdirSync(join(root, 'etc/ssh'));
    writeFileSync(join(root, 'etc/ssh/sshd_config'), '');
    const started = performance.now();
    const result = regenerateIdentity({ log, root });
    const elapsedMs = performance.now() - started;
    expect(result).toEqual({ machineId: 'written', sshHostKeys: 'generating' });
    expect(elapsedMs).toBeLessThan(500); // generating the keys takes about a second
    const keys = ['rsa', 'ecdsa', 'ed25519'].flatMap((t) => [`ssh_host_${t}_key`, `ssh_host_${t}_key.pub`]);
    await waitFor(() => keys.every((f) => existsSync(join(root, 'etc/ssh', f))), 20_000);
    expect(logged).toEqual([]);
  });
});
