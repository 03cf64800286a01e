/**
 * `berth image build` on the AWS driver, end to end against moto: the image is an AMI baked on a
 * builder instance whose berth agent (one of the emulated fleet's, test/helpers/emulated-fleet.ts)
 * really runs the steps, the identity strip and its check — on a directory that stands for the
 * builder's root, in a shell where this machine's root filesystem is read-only — and the clone
 * check, on two instances of the new AMI that start from a copy of that root. Then: an unchanged
 * spec launches nothing, a changed one bakes a new AMI and retention deregisters the old one, a
 * pool naming the image boots its AMI and rolls to the next, a failing step leaves nothing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DescribeImagesCommand, DescribeInstancesCommand, DescribeLaunchTemplateVersionsCommand, DescribeSnapshotsCommand, type Image, type Instance } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageView } from '../../src/images/views.js';
import type { PoolStatusView } from '../../src/pools/views.js';
import type { MotoNetwork } from '../drivers/aws-fixtures.js';
import { startFleetServer, type FleetServer } from '../helpers/aws-fleet-server.js';
import type { EmulatedFleet } from '../helpers/emulated-fleet.js';
import { motoAvailable } from '../helpers/moto.js';
import { Api, berth } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NAME = 'bami';

describe.skipIf(!motoAvailable('AWS image builds end to end on moto'))('AWS image builds end to end on moto', () => {
  let net: MotoNetwork;
  let fleet: EmulatedFleet;
  let api: Api;
  let dir: string;
  let project: string;
  let env: Record<string, string>;

  const tagsOf = (r: { Tags?: { Key?: string; Value?: string }[] }): Record<string, string> => Object.fromEntries((r.Tags ?? []).map((t) => [t.Key ?? '', t.Value ?? '']));
  const amis = async (): Promise<Image[]> =>
    (await net.ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'tag:berth:image', Values: ['web'] }, { Name: 'tag:berth:managed-by', Values: [NAME] }] }))).Images ?? [];
  const withRole = async (role: string): Promise<Instance[]> =>
    ((await net.ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:berth:role', Values: [role] }] }))).Reservations ?? []).flatMap((r) => r.Instances ?? []);
  const builders = (): Promise<Instance[]> => withRole('builder');
  type HostRow = { id: string; hostname: string; state: string; tags: Record<string, string> };
  const allHosts = async (): Promise<HostRow[]> => (await api.get<{ hosts: HostRow[] }>('/v1/hosts?all=true')).body.hosts;
  const build = (file: string) => berth(['image', 'build', '-f', file, '--verbose', '--data-dir', join(dir, 'data')], env, { timeoutMs: 120_000 });
  const spec = async (name: string, runStep: string): Promise<string> => {
    const file = join(project, name);
    await writeFile(file, ['images:', '  web:', '    steps:', '      - copy: app/ /srv/app', '      - env: { GREETING: hello }', `      - run: ${JSON.stringify(runStep)}`, ''].join('\n'));
    return file;
  };
  const current = async (): Promise<ImageView | undefined> => (await api.get<{ images: ImageView[] }>('/v1/images')).body.images.find((i) => i.name === 'web');

  let harness: FleetServer | undefined;

  beforeAll(async () => {
    harness = await startFleetServer(NAME, { amiImages: { keep: 1, pollMs: 200, builderBootTimeoutMs: 30_000 } });
    ({ net, fleet, api, dir } = harness);
    project = join(dir, 'project');
    await mkdir(join(project, 'app'), { recursive: true });
    await writeFile(join(project, 'app', 'hello.txt'), 'hello from the project\n');
    env = { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  }, 60_000);

  afterAll(async () => {
    await harness?.stop();
  }, 60_000);

  let first: Image | undefined;

  it('bakes the image into an AMI: the steps run on the builder, its identity is stripped, the AMI is tagged and the builder terminated', async () => {
    // Relative paths: a run step starts in the builder's root (here a directory, on EC2 its /).
    const built = await build(await spec('v1.yaml', 'echo "baked $GREETING" > etc/baked && cat srv/app/hello.txt'));
    expect(built.stderr).not.toMatch(/FAILED/);
    expect(built.code).toBe(0);
    // The bake's progress, as the CLI shows a local bake's: step lines, AmiBaker's phases, the step's output.
    expect(built.stderr).toContain('[web 1/4] copy app/ → /srv/app');
    expect(built.stderr).toContain('launching a builder from');
    expect(built.stderr).toContain('stripping per-host identity');
    expect(built.stderr).toContain('│ hello from the project');

    const [ami, ...more] = (await amis()).filter((i) => i.State === 'available');
    expect(more).toEqual([]);
    first = ami;
    const tags = tagsOf(ami ?? {});
    expect(tags['berth:spec-digest']).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(tags['berth:layer-digests']?.split(',')).toHaveLength(3);
    expect(tags['berth:parent']).toBe(net.imageId);
    const view = await current();
    expect(view).toMatchObject({ base: ami?.ImageId, layers: [] });

    // What the steps and the strip did, in the builder's root.
    const [builder, ...others] = await builders();
    expect(others).toEqual([]);
    expect(['shutting-down', 'terminated']).toContain(builder?.State?.Name);
    const root = fleet.builderRootOf(builder?.InstanceId ?? '');
    expect(readFileSync(join(root, 'etc/baked'), 'utf8')).toBe('baked hello\n');
    expect(readFileSync(join(root, 'srv/app/hello.txt'), 'utf8')).toBe('hello from the project\n');
    expect(readFileSync(join(root, 'etc/berth/image.env'), 'utf8')).toContain('GREETING="hello"');
    expect(readFileSync(join(root, 'etc/machine-id'), 'utf8')).toBe('');
    expect(existsSync(join(root, 'etc/hostname'))).toBe(false);
    expect(existsSync(join(root, 'etc/ssh/ssh_host_ed25519_key'))).toBe(false);
    // The builder's host record went with it.
    const hosts = (await api.get<{ hosts: { id: string; state: string; tags: Record<string, string> }[] }>('/v1/hosts')).body.hosts;
    expect(hosts.filter((h) => h.tags['berth:role'] === 'bake' && h.state !== 'terminated')).toEqual([]);
    // The builder carries its host's id: a server that dies mid-bake terminates it when it starts
    // again (its bake host is cleaned up, and terminating a host without an instance id finds the
    // instance by that tag), and the orphan sweep would too.
    const bakeHosts = (await allHosts()).filter((h) => h.tags['berth:role'] === 'bake');
    expect(bakeHosts.map((h) => h.id)).toEqual([tagsOf(builder ?? {})['berth:host-id']]);

    // The clone check: two instances launched from the new AMI, each booting as a bake-check host,
    // probed (their emulated roots are copies of the builder's when the AMI was made, each with
    // its own hostname), then terminated, and their host records with them.
    expect(built.stderr).toMatch(/\[web check\] check clones differ … running/);
    expect(built.stderr).toMatch(/\[web check\] check clones differ +done/);
    expect(built.stderr).toContain('clones differ: machine-id, hostname, agent identity');
    const checks = await withRole('bake-check');
    expect(checks).toHaveLength(2);
    for (const c of checks) {
      expect(c.ImageId).toBe(ami?.ImageId);
      expect(['shutting-down', 'terminated']).toContain(c.State?.Name);
    }
    const checkHosts = (await allHosts()).filter((h) => h.tags['berth:role'] === 'bake-check');
    expect(checkHosts.map((h) => h.state)).toEqual(['terminated', 'terminated']);
    expect(checks.map((c) => tagsOf(c)['berth:host-id']).sort()).toEqual(checkHosts.map((h) => h.id).sort());
    // What the probe saw on each: its own machine-id, agent identity and hostname (the host's).
    const manifest = (await api.get<{ manifest: { ami: { checkInstanceIds: string[] }; uniqueness: { ok: boolean; items: { item: string; a: string; b: string; verdict: string }[] } } }>('/v1/images/web')).body.manifest;
    expect(manifest.ami.checkInstanceIds.sort()).toEqual(checks.map((c) => c.InstanceId).sort());
    expect(manifest.uniqueness.ok).toBe(true);
    const item = (name: string) => manifest.uniqueness.items.find((i) => i.item === name);
    expect(item('machine-id')?.verdict).toBe('differ');
    expect(item('machine-id')?.a).toMatch(/^[0-9a-f]{32}$/);
    expect([item('hostname')?.a, item('hostname')?.b].sort()).toEqual(checkHosts.map((h) => h.hostname).sort());
    expect([item('agent-identity')?.a, item('agent-identity')?.b].sort()).toEqual(checkHosts.map((h) => h.id).sort());
  }, 120_000);

  it('an unchanged spec launches nothing (no builder, no clone check) and reuses the AMI', async () => {
    const before = (await builders()).length;
    const checksBefore = (await withRole('bake-check')).length;
    const again = await build(join(project, 'v1.yaml'));
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('up to date');
    expect(again.stderr).toContain(`reusing ${first?.ImageId ?? '?'}`);
    expect((await builders()).length).toBe(before);
    // A reused AMI was checked when it was made: no clone check again.
    expect((await withRole('bake-check')).length).toBe(checksBefore);
  }, 60_000);

  it('a changed spec bakes a new AMI, and retention deregisters the old one (keep 1) with its snapshots', async () => {
    const oldSnapshots = (first?.BlockDeviceMappings ?? []).flatMap((m) => (m.Ebs?.SnapshotId ? [m.Ebs.SnapshotId] : []));
    const built = await build(await spec('v2.yaml', 'echo "baked again $GREETING" > etc/baked'));
    expect(built.code).toBe(0);
    expect(built.stderr).toContain(`retention: deregistered ${first?.ImageId ?? '?'}`);
    const now = (await amis()).filter((i) => i.State === 'available');
    expect(now.map((i) => i.ImageId)).toEqual([(await current())?.base]);
    expect(now[0]?.ImageId).not.toBe(first?.ImageId);
    if (oldSnapshots.length > 0) {
      const left = await net.ec2.send(new DescribeSnapshotsCommand({ OwnerIds: ['self'], Filters: [{ Name: 'tag:berth:image', Values: ['web'] }] }));
      expect((left.Snapshots ?? []).map((s) => s.SnapshotId).filter((id) => oldSnapshots.includes(id ?? ''))).toEqual([]);
    }
  }, 120_000);

  it('a pool naming the image boots its AMI, and a new build rolls the pool while retention keeps the AMI its host runs', async () => {
    const v2 = (await current())?.base ?? '';
    expect((await api.post<PoolStatusView>('/v1/pools', { name: 'webpool', image: 'web', size: 1, onEmpty: 'fail' })).status).toBe(201);
    const template = async () => (await net.ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: `${NAME}-pool-webpool`, Versions: ['$Latest'] }))).LaunchTemplateVersions?.[0]?.LaunchTemplateData?.ImageId;
    await waitFor('the pool to hold a ready host', async () => ((await api.get<PoolStatusView>('/v1/pools/webpool')).body.status.ready >= 1 ? true : undefined), { timeoutMs: 60_000 });
    expect(await template()).toBe(v2);

    const built = await build(await spec('v3.yaml', 'echo v3 > etc/baked'));
    expect(built.code).toBe(0);
    expect(built.stdout).toContain('pools rolling to it: webpool');
    const v3 = (await current())?.base ?? '';
    expect(v3).not.toBe(v2);
    // keep 1 would remove v2, but the pool's host still runs it.
    expect((await amis()).map((i) => i.ImageId).sort()).toEqual([v2, v3].sort());
    // The new generation's machines boot the new AMI: the pool's launch template names it.
    await waitFor('the pool to roll to the new AMI', async () => ((await template()) === v3 ? true : undefined), { timeoutMs: 30_000 });
    expect((await api.delete(`/v1/pools/webpool`)).status).toBeLessThan(300);
  }, 180_000);

  it('a failing step fails the build with its output, and leaves no AMI and no builder', async () => {
    const before = (await amis()).map((i) => i.ImageId).sort();
    const failed = await build(await spec('bad.yaml', 'echo "output of the failing step"; exit 3'));
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('output of the failing step');
    expect(failed.stderr).toMatch(/step 3 .*exit code 3/);
    expect((await amis()).filter((i) => i.State !== 'deregistered').map((i) => i.ImageId).sort()).toEqual(before);
    for (const b of await builders()) expect(['shutting-down', 'terminated']).toContain(b.State?.Name);
  }, 120_000);

  it('test steps run on an instance of the new AMI before it is published; a failing one publishes nothing and leaves no AMI', async () => {
    const tested = async (name: string, test: string[]): Promise<string> => {
      const file = join(project, name);
      await writeFile(file, ['images:', '  web:', '    steps:', '      - env: { GREETING: hello }', '      - run: echo tested > etc/tested', '      - test:', ...test.map((t) => `          - ${t}`), ''].join('\n'));
      return file;
    };
    // The image's env, in the image's root, as a host of it runs a command.
    const passed = await build(await tested('tested.yaml', ['test "$GREETING" = hello', 'grep -qx tested etc/tested']));
    expect(passed.stderr).not.toMatch(/FAILED/);
    expect(passed.code).toBe(0);
    expect(passed.stderr).toMatch(/\[web check\] check clones differ and run 1 test step\(s\) +done/);
    expect(passed.stderr).toContain('test passed: test test "$GREETING" = hello && grep -qx tested etc/tested');
    const good = (await current())?.base ?? '';
    const manifest = (await api.get<{ manifest: { tests: { title: string; durationMs: number }[] } }>('/v1/images/web')).body.manifest;
    expect(manifest.tests).toEqual([{ title: 'test test "$GREETING" = hello && grep -qx tested etc/tested', durationMs: expect.any(Number) as unknown }]);

    const before = (await amis()).filter((i) => i.State !== 'deregistered').map((i) => i.ImageId).sort();
    const checksBefore = (await withRole('bake-check')).length;
    const failed = await build(await tested('tested-bad.yaml', ['test "$GREETING" = hello', 'echo "output of the failing test"; exit 4']));
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/tested-bad\.yaml:\d+:\d+: images\.web\.steps\[2\]: test failed/);
    expect(failed.stderr).toContain('output of the failing test');
    // The AMI it made is gone, the image is what it was, and its instances are terminated.
    expect((await amis()).filter((i) => i.State !== 'deregistered').map((i) => i.ImageId).sort()).toEqual(before);
    expect((await current())?.base).toBe(good);
    const checks = await withRole('bake-check');
    expect(checks.length).toBe(checksBefore + 2);
    for (const c of [...checks, ...(await builders())]) expect(['shutting-down', 'terminated']).toContain(c.State?.Name);
  }, 180_000);

  it('refuses what an AMI bake cannot do before launching anything', async () => {
    const before = (await builders()).length;
    const file = join(project, 'identity.yaml');
    await writeFile(file, ['images:', '  web:', '    identity:', '      strip: [/etc/oops]', '    steps:', '      - run: "true"', ''].join('\n'));
    const refused = await build(file);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('identity strip/keep lists are not applied to AMIs');
    expect(refused.stderr).toContain('hint:');
    expect((await builders()).length).toBe(before);
  }, 60_000);
});
