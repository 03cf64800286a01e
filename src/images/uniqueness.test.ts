import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HostIdentity } from './uniqueness.js';
import { buildIdentityProbe, compareIdentities, formatUniquenessReport, IDENTITY_PROBE, parseIdentityProbe } from './uniqueness.js';

const execFileAsync = promisify(execFile);
const TOKEN = 'tok-SECRET-0123456789';
let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'berth-probe-'));
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

function put(path: string, content: string): void {
  mkdirSync(join(root, path, '..'), { recursive: true });
  writeFileSync(join(root, path), content);
}

function makeHostKey(type: string, comment = 'root@builder'): void {
  mkdirSync(join(root, 'etc/ssh'), { recursive: true });
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', comment, '-f', join(root, `etc/ssh/ssh_host_${type}_key`)]);
}

async function runProbe(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const { stdout } = await execFileAsync('/bin/sh', ['-c', buildIdentityProbe(root).join('\n')], { env });
  return stdout;
}

/** A PATH with the probe's tools but no ssh-keygen. */
function pathWithoutKeygen(): string {
  const bin = join(root, 'bin-no-keygen');
  mkdirSync(bin);
  for (const tool of ['head', 'tr', 'cut', 'sha256sum', 'sed', 'hostname', 'date', 'ls', 'sleep', 'cat']) {
    symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool));
  }
  return bin;
}

describe('IDENTITY_PROBE', () => {
  it('is the probe for the host root', () => {
    expect(IDENTITY_PROBE).toEqual(buildIdentityProbe('/'));
    expect(IDENTITY_PROBE.join('\n')).toContain('[ -s /etc/machine-id ]');
  });

  it('prints every item of a host, in a form parseIdentityProbe reads, and never the token', async () => {
    put('etc/machine-id', '0123456789abcdef0123456789abcdef\n');
    mkdirSync(join(root, 'var/lib/dbus'), { recursive: true });
    symlinkSync('../../../etc/machine-id', join(root, 'var/lib/dbus/machine-id'));
    makeHostKey('ed25519');
    makeHostKey('ecdsa');
    put('etc/berth/agent.json', `${JSON.stringify({ hostId: 'h-abc', token: TOKEN, serverUrl: 'ws://10.0.0.1:7070' })}\n`);

    const stdout = await runProbe();
    expect(stdout).not.toContain(TOKEN);
    expect(stdout).not.toContain('serverUrl');
    expect(stdout).toMatch(/^machine-id 0123456789abcdef0123456789abcdef\ndbus-machine-id 0123456789abcdef0123456789abcdef\nssh-host-key SHA256:\S+ ecdsa\nssh-host-key SHA256:\S+ ed25519\nagent-host-id h-abc\nhostname \S+\n$/);
    const identity = parseIdentityProbe(stdout);
    expect(identity).toMatchObject({ machineId: '0123456789abcdef0123456789abcdef', dbusMachineId: '0123456789abcdef0123456789abcdef', agentHostId: 'h-abc' });
    const edFingerprint = execFileSync('ssh-keygen', ['-lf', join(root, 'etc/ssh/ssh_host_ed25519_key.pub')], { encoding: 'utf8' }).split(' ')[1];
    expect(identity.sshHostKeys).toContain(`${edFingerprint} ed25519`);
    expect(identity.sshHostKeys).toHaveLength(2);
    expect(identity.hostname).toBe(execFileSync('hostname', { encoding: 'utf8' }).trim());
  });

  it('with a shell word for the root (an AMI bake\'s `"$R"`), reads the same files as with the directory', async () => {
    put('etc/machine-id', '0123456789abcdef0123456789abcdef\n');
    makeHostKey('ed25519');
    put('etc/berth/agent.json', `${JSON.stringify({ hostId: 'h-abc', token: TOKEN, serverUrl: 'ws://10.0.0.1:7070' })}\n`);
    const probe = ['R="$1"', ...buildIdentityProbe({ shellWord: '"$R"' })].join('\n');
    const { stdout } = await execFileAsync('/bin/sh', ['-c', probe, 'sh', root]);
    expect(stdout).toBe(await runProbe());
    expect(parseIdentityProbe(stdout)).toMatchObject({ machineId: '0123456789abcdef0123456789abcdef', agentHostId: 'h-abc' });
  });

  it('prints "-" for what the host lacks and nothing for SSH when there is no /etc/ssh', async () => {
    const stdout = await runProbe();
    expect(stdout).toMatch(/^machine-id -\ndbus-machine-id -\nagent-host-id -\nhostname \S+\n$/);
    expect(parseIdentityProbe(stdout)).toEqual({ sshHostKeys: [], hostname: expect.any(String) as string });
  });

  it('hashes the key blob when ssh-keygen is missing, so comments do not matter', async () => {
    makeHostKey('ed25519', 'alice@one');
    const first = parseIdentityProbe(await runProbe({ PATH: pathWithoutKeygen() }));
    expect(first.sshHostKeys).toEqual([expect.stringMatching(/^sha256hex:[0-9a-f]{64} ed25519$/)]);
    const pub = join(root, 'etc/ssh/ssh_host_ed25519_key.pub');
    writeFileSync(pub, readFileSync(pub, 'utf8').replace('alice@one', 'bob@two'));
    expect(parseIdentityProbe(await runProbe({ PATH: join(root, 'bin-no-keygen') })).sshHostKeys).toEqual(first.sshHostKeys);
  });

  it('waits for host keys being generated at first boot, when the image asks for them', async () => {
    mkdirSync(join(root, 'etc/ssh'), { recursive: true });
    mkdirSync(join(root, 'etc/berth'), { recursive: true });
    writeFileSync(join(root, 'etc/berth/first-boot.json'), JSON.stringify({ sshHostKeyTypes: ['ed25519'] }));
    const started = Date.now();
    const probe = runProbe();
    setTimeout(() => makeHostKey('ed25519'), 1000);
    const identity = parseIdentityProbe(await probe);
    expect(identity.sshHostKeys).toEqual([expect.stringMatching(/^SHA256:\S+ ed25519$/)]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(Date.now() - started).toBeLessThan(9000);
  });
});

describe('parseIdentityProbe', () => {
  it('ignores unknown lines and "-" values, and sorts and dedupes keys', () => {
    expect(parseIdentityProbe('noise\nmachine-id -\nssh-host-key SHA256:b rsa\nssh-host-key SHA256:a ed25519\nssh-host-key SHA256:b rsa\nhostname web-1\r\n')).toEqual({
      sshHostKeys: ['SHA256:a ed25519', 'SHA256:b rsa'],
      hostname: 'web-1',
    });
  });
});

const hostA: HostIdentity = { machineId: 'a'.repeat(32), dbusMachineId: 'a'.repeat(32), sshHostKeys: ['SHA256:ka1 ed25519', 'SHA256:ka2 rsa'], agentHostId: 'h-a', hostname: 'a' };
const hostB: HostIdentity = { machineId: 'b'.repeat(32), dbusMachineId: 'b'.repeat(32), sshHostKeys: ['SHA256:kb1 ed25519', 'SHA256:kb2 rsa'], agentHostId: 'h-b', hostname: 'b' };

describe('compareIdentities', () => {
  it('passes when everything differs', () => {
    const report = compareIdentities(hostA, hostB);
    expect(report.ok).toBe(true);
    expect(report.items.map((i) => i.verdict)).toEqual(['differ', 'differ', 'differ', 'differ', 'differ']);
    expect(formatUniquenessReport(report)).toContain('The two hosts have distinct identities.');
  });

  it('fails on identical machine-ids with a clear report', () => {
    const report = compareIdentities(hostA, { ...hostB, machineId: hostA.machineId });
    expect(report.ok).toBe(false);
    expect(report.items[0]).toEqual({ item: 'machine-id', a: 'a'.repeat(32), b: 'a'.repeat(32), verdict: 'same' });
    const text = formatUniquenessReport(report);
    expect(text).toMatch(/^ITEM +HOST A +HOST B +VERDICT\nmachine-id +a{32} +a{32} +SAME \(fails\)\n/);
    expect(text).toContain('- machine-id: /etc/machine-id was baked into the image');
  });

  it('fails when a single SSH host key is shared', () => {
    const report = compareIdentities(hostA, { ...hostB, sshHostKeys: ['SHA256:ka2 rsa', 'SHA256:kb1 ed25519'] });
    expect(report.ok).toBe(false);
    expect(report.items[2]).toEqual({ item: 'ssh-host-keys', a: 'shared: SHA256:ka2 rsa', b: 'shared: SHA256:ka2 rsa', verdict: 'same' });
    expect(formatUniquenessReport(report)).toContain('- ssh-host-keys: SSH host keys were baked into the image');
  });

  it('passes when neither host has SSH or D-Bus', () => {
    const report = compareIdentities({ ...hostA, sshHostKeys: [], dbusMachineId: undefined }, { ...hostB, sshHostKeys: [], dbusMachineId: undefined });
    expect(report.ok).toBe(true);
    expect(report.items.find((i) => i.item === 'ssh-host-keys')?.verdict).toBe('absent');
    expect(report.items.find((i) => i.item === 'dbus-machine-id')?.verdict).toBe('absent');
  });

  it('fails when a host lacks a machine-id, agent identity or hostname', () => {
    for (const field of ['machineId', 'agentHostId', 'hostname'] as const) {
      const report = compareIdentities(hostA, { ...hostB, [field]: undefined });
      expect(report.ok, field).toBe(false);
      expect(report.items.filter((i) => i.verdict === 'absent')).toHaveLength(1);
    }
    expect(formatUniquenessReport(compareIdentities({ ...hostA, machineId: undefined }, { ...hostB, machineId: undefined }))).toContain(
      '- machine-id: every host needs /etc/machine-id',
    );
  });

  it("accepts a D-Bus id equal to the same host's machine-id", () => {
    expect(compareIdentities(hostA, hostB).items[1]?.verdict).toBe('differ');
    expect(compareIdentities(hostA, { ...hostB, dbusMachineId: hostA.dbusMachineId }).ok).toBe(false);
  });
});
