/**
 * AMI baking for real where it can be: the identity strip and check scripts run with sh against a
 * throwaway directory tree (the check fails before the strip and passes after; what the strip
 * removes mirrors src/images/identity.ts), and a whole bake and prune run against moto in server
 * mode. moto's builder is an emulated instance: nothing can execute on it, so the runner only
 * records the commands it was given; what moto proves is the EC2 side (launch, tags, CreateImage,
 * reuse by digest, termination, deregistration and snapshot deletion).
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DescribeImagesCommand, DescribeInstancesCommand, DescribeSnapshotsCommand, type Tag } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AMI_IDENTITY_CHECK_SCRIPT, AMI_IDENTITY_STRIP_SCRIPT, AmiBaker, type AmiBakeSpec, type BuilderRunner } from '../../src/drivers/aws/ami-bake.js';
import { AmiRetention } from '../../src/drivers/aws/ami-retention.js';
import { resolveAwsConfig, type ResolvedAwsConfig } from '../../src/drivers/aws/config.js';
import { BUILTIN_IDENTITY_ITEMS } from '../../src/images/identity.js';
import { rejection } from '../helpers/errors.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { motoNetwork, type MotoNetwork } from './aws-fixtures.js';

describe('AMI identity strip and check, on a directory tree', () => {
  /** Items of the local bake's list the AMI strip leaves, and why (the builder is a running machine). */
  const NOT_ON_AMI = new Set(['/tmp', '/run/berth', '/var/run/docker.pid', '/run/docker.pid', '/var/run/docker.sock', '/run/docker.sock']);
  /** Kept as directories, emptied: journald keeps writing to its directory; cloud-init's seed stays. */
  const EMPTIED_DIRS = new Set(['/var/lib/cloud', '/var/log/journal']);
  const DIRS = new Set([...EMPTIED_DIRS, '/run/berth']);
  let root: string;
  let outside: string;

  const at = (path: string): string => join(root, path.replaceAll('*', 'x'));
  const write = (path: string, text: string): void => {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  };
  /** Runs a script exactly as shipped, with the tree as its root (`$1`); never without one. */
  const run = (script: string): { status: number | null; out: string } => {
    expect(root.startsWith(tmpdir())).toBe(true);
    const r = spawnSync('sh', ['-c', script, 'sh', root], { encoding: 'utf8' });
    return { status: r.status, out: r.stdout + r.stderr };
  };

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'berth-ami-root-'));
    outside = mkdtempSync(join(tmpdir(), 'berth-ami-outside-'));
    // Every path of the local bake's identity list, with identity in it.
    for (const item of BUILTIN_IDENTITY_ITEMS) {
      for (const path of item.paths) {
        if (item.action === 'truncate' && path === '/var/log') write('/var/log/syslog', 'Jan 1 builder-host sshd[1]: accepted key\n');
        else if (item.action === 'empty' || DIRS.has(path)) write(`${path.replaceAll('*', 'x')}/x/state`, 'builder state\n');
        else write(path.replaceAll('*', 'x'), `${item.id} of the builder\n`);
      }
    }
    // What a real AMI also has: rotated logs, cloud-init's seed, a running service's private tmp,
    // and files that must survive.
    write('/var/log/messages.1.gz', 'old log');
    write('/var/lib/cloud/seed/nocloud/meta-data', 'instance-id: seed\n');
    write('/var/tmp/systemd-private-abc/tmp/x', 'in use');
    write('/etc/passwd', 'root:x:0:0::/root:/bin/sh\n');
    write('/etc/ssh/sshd_config', 'PermitRootLogin no\n');
    write('/home/x/.bashrc', 'alias ll="ls -l"\n');
    // Symlinks out of the tree: the strip removes a link, never what it points to.
    writeFileSync(join(outside, 'machine-id'), 'host machine id\n');
    writeFileSync(join(outside, 'host.log'), 'host log\n');
    rmSync(at('/var/lib/dbus/machine-id'));
    symlinkSync(join(outside, 'machine-id'), at('/var/lib/dbus/machine-id'));
    symlinkSync(join(outside, 'host.log'), at('/var/log/host.log'));
  });

  afterAll(() => {
    for (const dir of [root, outside]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the check fails on the tree before the strip, naming what remains', () => {
    const before = run(AMI_IDENTITY_CHECK_SCRIPT);
    expect(before.status).toBe(1);
    for (const item of ['machine-id', 'dbus-machine-id', 'hostname', 'ssh-host-keys', 'authorized-keys', 'dhcp-leases', 'persistent-net', 'cloud-init', 'random-seed', 'berth-agent', 'docker', 'shell-history']) {
      expect(before.out).toContain(`berth-identity-check: ${item} remains:`);
    }
    expect(before.out).toContain('berth-identity-check: logs remain: /var/log/syslog');
    expect(before.out).toContain('logs remain: /var/log/journal/x/state');
  });

  it('the strip removes what the local bake strips (bar what a running builder needs); the check then passes', () => {
    const strip = run(AMI_IDENTITY_STRIP_SCRIPT);
    expect(strip).toEqual({ status: 0, out: 'berth-identity-strip: done\n' });
    for (const item of BUILTIN_IDENTITY_ITEMS) {
      for (const path of item.paths) {
        const p = at(path);
        if (NOT_ON_AMI.has(path)) expect(existsSync(p), path).toBe(true);
        else if (EMPTIED_DIRS.has(path)) expect(readdirSync(p).filter((n) => n !== 'seed'), path).toEqual([]);
        else if (item.action === 'remove') expect(existsSync(p) || lstatOrNull(p) !== null, path).toBe(false);
        else if (item.action === 'empty') expect(readdirSync(p).filter((n) => !n.startsWith('systemd-private-')), path).toEqual([]);
        else if (path === '/var/log') expect(statSync(at('/var/log/syslog')).size).toBe(0);
        else expect(statSync(p).size, path).toBe(0); // machine-id: empty = "first boot"
      }
    }
    expect(existsSync(at('/var/log/messages.1.gz'))).toBe(false);
    expect(readFileSync(at('/var/lib/cloud/seed/nocloud/meta-data'), 'utf8')).toBe('instance-id: seed\n');
    expect(existsSync(at('/var/tmp/systemd-private-abc/tmp/x'))).toBe(true);
    for (const kept of ['/etc/passwd', '/etc/ssh/sshd_config', '/home/x/.bashrc']) expect(statSync(at(kept)).size, kept).toBeGreaterThan(0);
    expect(readFileSync(join(outside, 'machine-id'), 'utf8')).toBe('host machine id\n');
    expect(readFileSync(join(outside, 'host.log'), 'utf8')).toBe('host log\n');

    expect(run(AMI_IDENTITY_CHECK_SCRIPT)).toEqual({ status: 0, out: 'berth-identity-check: ok\n' });
  });

  it('logging after the strip is fine; identity written after it fails the check', () => {
    appendFileSync(at('/var/log/syslog'), 'Jan 1 builder-host berth: identity check\n');
    expect(run(AMI_IDENTITY_CHECK_SCRIPT).status).toBe(0);
    write('/etc/ssh/ssh_host_ed25519_key', 'regenerated by a service\n');
    const after = run(AMI_IDENTITY_CHECK_SCRIPT);
    expect(after).toEqual({ status: 1, out: 'berth-identity-check: ssh-host-keys remains: /etc/ssh/ssh_host_ed25519_key\n' });
  });

  function lstatOrNull(p: string): ReturnType<typeof lstatSync> | null {
    try {
      return lstatSync(p);
    } catch {
      return null;
    }
  }
});

describe.skipIf(!motoAvailable('AMI baking on moto'))('AMI baking on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let cfg: ResolvedAwsConfig;
  let baker: AmiBaker;
  let retention: AmiRetention;

  /**
   * The builder is one of moto's emulated instances: no OS, nothing can run on it. This runner
   * records what the bake asked to run (and fails when told to), so the bake's order is checked.
   */
  const recorder = (fail = false): BuilderRunner & { calls: { instanceId: string; commands: string[] }[] } => {
    const calls: { instanceId: string; commands: string[] }[] = [];
    return {
      calls,
      run: (instanceId, commands) => {
        calls.push({ instanceId, commands });
        return fail ? Promise.reject(new Error('exit 1: step failed')) : Promise.resolve();
      },
    };
  };
  const spec = (digestChar: string, over: Partial<AmiBakeSpec> = {}): AmiBakeSpec => ({ name: 'web', parentImageId: net.imageId, steps: ['echo built > /etc/motd'], specDigest: digestChar.repeat(64), ...over });
  const tags = (list: Tag[] | undefined): Record<string, string | undefined> => Object.fromEntries((list ?? []).map((t): [string, string | undefined] => [t.Key ?? '', t.Value]));
  const image = async (imageId: string) => (await net.ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] }))).Images?.[0];
  const instance = async (instanceId: string) => (await net.ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }))).Reservations?.[0]?.Instances?.[0];

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    cfg = resolveAwsConfig({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS, imageId: net.imageId, instanceType: 't3.micro', subnetIds: net.subnetIds, securityGroupIds: net.securityGroupIds, name: 'bami' });
    // moto 5 raises NotImplementedError for snapshot TagSpecifications in CreateImage: tag them after.
    baker = new AmiBaker(cfg, { tagSnapshotsAtCreate: false });
    retention = new AmiRetention(cfg);
  });

  afterAll(async () => {
    baker?.close();
    retention?.close();
    net?.ec2.destroy();
    await moto?.stop();
  });

  it('bakes end to end; the same spec again is found by its digest and launches nothing', async () => {
    const runner = recorder();
    const lines: string[] = [];
    const layers = ['1'.repeat(64), '2'.repeat(64)];
    const first = await baker.bake(spec('a', { layerDigests: layers }), runner, { pollMs: 10, progress: (l) => lines.push(l) });
    expect(first).toMatchObject({ reused: false, name: `bami-web-${'a'.repeat(12)}` });
    const builder = first.builderInstanceId ?? '';
    expect(runner.calls).toEqual([
      { instanceId: builder, commands: ['echo built > /etc/motd'] },
      { instanceId: builder, commands: [AMI_IDENTITY_STRIP_SCRIPT] },
      { instanceId: builder, commands: [AMI_IDENTITY_CHECK_SCRIPT] },
    ]);

    const made = await image(first.imageId);
    expect(made?.State).toBe('available');
    expect(made?.Name).toBe(first.name);
    expect(tags(made?.Tags)).toEqual({ 'berth:managed-by': 'bami', 'berth:image': 'web', 'berth:spec-digest': 'a'.repeat(64), 'berth:layer-digests': layers.join(','), 'berth:parent': net.imageId });
    const snapshotId = made?.BlockDeviceMappings?.[0]?.Ebs?.SnapshotId ?? '';
    const snapshot = (await net.ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] }))).Snapshots?.[0];
    expect(tags(snapshot?.Tags)).toMatchObject({ 'berth:managed-by': 'bami', 'berth:image': 'web' });

    const b = await instance(builder);
    expect(['shutting-down', 'terminated']).toContain(b?.State?.Name);
    expect(tags(b?.Tags)).toMatchObject({ 'berth:role': 'builder', 'berth:managed-by': 'bami', 'berth:spec-digest': 'a'.repeat(64) });
    expect(tags(b?.Tags)['berth:bake-id']).toBeTruthy();
    expect(lines.at(-1)).toBe(`done: ${first.imageId} (${first.name}) is available`);
    expect(baker.callCounts()['RunInstances']).toBe(1);

    const again = await baker.bake(spec('a', { layerDigests: layers }), recorder(), { pollMs: 10 });
    expect(again).toEqual({ imageId: first.imageId, reused: true, name: first.name });
    expect(baker.callCounts()['RunInstances']).toBe(1);
  });

  it('a failing step: the builder is terminated in moto and no AMI is left', async () => {
    const err = await rejection(baker.bake(spec('b'), recorder(true), { pollMs: 10 }));
    expect(err.code).toBe('bake_failed');
    const instanceId = String(err.details?.['instanceId']);
    expect(['shutting-down', 'terminated']).toContain((await instance(instanceId))?.State?.Name);
    const left = await net.ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'tag:berth:spec-digest', Values: ['b'.repeat(64)] }] }));
    expect(left.Images).toEqual([]);
  });

  it('retention deregisters what is not kept and deletes its snapshot; a second prune removes nothing', async () => {
    const older = await baker.bake(spec('a'), recorder(), { pollMs: 10 }); // the first test's AMI, reused
    const newer = await baker.bake(spec('c'), recorder(), { pollMs: 10 });
    const snapshotId = (await image(newer.imageId))?.BlockDeviceMappings?.[0]?.Ebs?.SnapshotId ?? '';
    // moto's creation times have one-second resolution: keep by use, not by age, to be deterministic.
    const result = await retention.prune({ name: 'web', keep: 0, inUse: new Set([older.imageId]) });
    expect(result.removed).toEqual([expect.objectContaining({ imageId: newer.imageId, snapshotIds: [snapshotId] })]);
    expect(result.kept).toEqual([older.imageId]);
    const mine = await net.ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'tag:berth:image', Values: ['web'] }] }));
    expect(mine.Images?.map((i) => i.ImageId)).toEqual([older.imageId]);
    const gone = await net.ec2.send(new DescribeSnapshotsCommand({ SnapshotIds: [snapshotId] })).catch((e: unknown) => e);
    expect(gone).toMatchObject({ name: 'InvalidSnapshot.NotFound' });

    expect((await retention.prune({ name: 'web', keep: 0, inUse: new Set([older.imageId]) })).removed).toEqual([]);
    expect((await retention.prune({ name: 'web', keep: 0, inUse: new Set() })).removed.map((r) => r.imageId)).toEqual([older.imageId]);
  });
});
