/** `berth image` end to end: CLI -> server -> real bakes on real hosts. */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import type { BuildResult } from '../../src/images/image-service.js';
import type { ImageView } from '../../src/images/views.js';
import { berth, useServer } from '../helpers/server.js';

const NET = { bridge: 'berthimc0', subnet: '10.229.0.0/22', cgroupName: 'berthimc' };

const spec = (greeting: string) => `images:
  web:
    parent: /
    steps:
      - copy: hello.txt /etc/hello.txt
      - run: echo hi > /etc/hi
      - env: {GREETING: ${greeting}}
`;

describe('berth image', () => {
  const server = useServer(NET);
  let env: Record<string, string>;
  let project: string;
  let file: string;

  const json = async <T>(...args: string[]): Promise<T> => {
    const res = await berth([...args, '--json'], env);
    if (res.code !== 0) throw new Error(`berth ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
    return JSON.parse(res.stdout) as T;
  };
  const imageNames = async () => (await json<ImageView[]>('image', 'ls')).map((i) => i.name);

  beforeAll(async () => {
    env = { BERTH_URL: server.srv.server.url, BERTH_TOKEN: server.srv.server.token };
    project = await mkdtemp(join(tmpdir(), 'berth-imc-project-'));
    file = join(project, 'berth.yaml');
    await writeFile(join(project, 'hello.txt'), 'hello from the project\n');
    // The project is a git checkout on branch main: its bakes record the commit.
    await mkdir(join(project, '.git/refs/heads'), { recursive: true });
    await writeFile(join(project, '.git/HEAD'), 'ref: refs/heads/main\n');
    await writeFile(join(project, '.git/refs/heads/main'), `${'c'.repeat(40)}\n`);
    await writeFile(file, spec('hello'));
  });
  afterAll(async () => {
    if (project) await rm(project, { recursive: true, force: true });
  });

  it('image build --json bakes the spec and prints the results with id, layers and timings', async () => {
    const res = await berth(['image', 'build', 'web', '-f', file, '--json'], env);
    expect(res.code, res.stderr).toBe(0);
    const results = JSON.parse(res.stdout) as BuildResult[];
    expect(results).toHaveLength(1);
    const [result] = results;
    expect(result).toMatchObject({ upToDate: false, rolledPools: [], image: { name: 'web', parent: '/', usedBy: { pools: [], hosts: 0 } } });
    expect(result?.image.id).toMatch(/^[0-9a-f]{12,}$/);
    expect(result?.image.layers).toHaveLength(5); // copy, run, env, agent, identity
    expect(result?.buildMs).toBeGreaterThan(0);
    // Progress goes to stderr, one line per state change.
    expect(res.stderr).toContain('[web 2/5] run echo hi > /etc/hi … running\n');
    expect(res.stderr).toMatch(/^\[web 2\/5\] run echo hi > \/etc\/hi {2}done \d+\.\ds$/m);
    expect(res.stderr).toMatch(/^\[web check\] check clones differ {2}done \d+\.\ds$/m);
  });

  it('building again is up to date with every step cached; a changed step rebuilds from there', async () => {
    const [before] = await json<BuildResult[]>('image', 'build', 'web', '-f', file);
    expect(before).toMatchObject({ upToDate: true });

    const same = await berth(['image', 'build', '-f', file], env);
    expect(same.code, same.stderr).toBe(0);
    expect(same.stdout).toBe(`web  ${before?.image.id.slice(0, 12)}  up to date (nothing to do)\n`);
    for (const [i, title] of ['copy hello.txt → /etc/hello.txt', 'run echo hi > /etc/hi', 'env GREETING', 'berth agent', 'strip per-host identity'].entries()) {
      expect(same.stderr).toContain(`[web ${i + 1}/5] ${title}  cached\n`);
    }

    await writeFile(file, spec('bonjour'));
    const changed = await berth(['image', 'build', '-f', file], env);
    expect(changed.code, changed.stderr).toBe(0);
    expect(changed.stderr).toContain('[web 2/5] run echo hi > /etc/hi  cached\n');
    expect(changed.stderr).toMatch(/^\[web 3\/5\] env GREETING {2}done /m);
    expect(changed.stdout).toMatch(/^web {2}[0-9a-f]{12} {2}5 layers {2}\d+(\.\d)? (B|KiB|MiB) {2}built in \d+\.\ds\n$/);
    expect(changed.stdout).not.toContain(before?.image.id.slice(0, 12));
  });

  it('image ls and image inspect describe it', async () => {
    const images = await json<ImageView[]>('image', 'ls');
    expect(images.map((i) => i.name)).toEqual(['web']);
    const web = images[0];
    if (!web) throw new Error('no image');

    const ls = await berth(['image', 'ls'], env);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^NAME\s+ID\s+LAYERS\s+SIZE\s+CREATED\s+USED BY$/m);
    expect(ls.stdout).toMatch(new RegExp(`^web\\s+${web.id.slice(0, 12)}\\s+5\\s+\\S+ \\S+\\s+\\d+s ago\\s+-$`, 'm'));

    const inspect = await berth(['image', 'inspect', 'web'], env);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout).toContain(`  id:         ${web.id}\n`);
    expect(inspect.stdout).toMatch(/^ {2}source: {5}\S*berth\.yaml at commit c{12} \(main\), built by data dir token$/m);
    expect(inspect.stdout).toMatch(/^ID\s+KIND\s+TITLE\s+CACHED\s+TIME\s+SIZE\s+FILES$/m);
    expect(inspect.stdout).toMatch(/^[0-9a-f]{12}\s+copy\s+copy hello\.txt → \/etc\/hello\.txt\s+yes\s/m);
    expect(inspect.stdout).toMatch(/^[0-9a-f]{12}\s+env\s+env GREETING\s+no\s/m);
    expect(inspect.stdout).toMatch(/^[0-9a-f]{12}\s+identity\s+strip per-host identity\s+no\s/m);
    expect(inspect.stdout).toContain('  GREETING=bonjour\n');
    expect(inspect.stdout).toMatch(/^ {2}machine-id\s+differ$/m);
    expect(inspect.stdout).toMatch(new RegExp(`^ {2}${web.id.slice(0, 12)}\\s+yes\\s`, 'm'));

    const view = await json<ImageView & { builds: unknown[] }>('image', 'inspect', 'web');
    expect(view.builds).toHaveLength(2);
    expect(view.manifest?.['layers']).toHaveLength(5);
  });

  it('a bad spec exits 2, naming the file as given with line and column; a missing file exits 2', async () => {
    await writeFile(join(project, 'bad.yaml'), 'images:\n  web2:\n    steps:\n      - runn: echo hi\n');
    // Relative to the CLI's working directory (the test's), as a user would type it.
    const given = relative(process.cwd(), join(project, 'bad.yaml'));
    const res = await berth(['image', 'build', '-f', given], env);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`berth: ${given}:4:9: `);
    expect(res.stderr).toContain('unknown step type "runn"');

    const missing = await berth(['image', 'build', '-f', join(project, 'nope.yaml')], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such file');
    expect(await imageNames()).toEqual(['web']);
  });

  it('a failing run step exits 1 with its exit code and output; nothing is published', async () => {
    const failing = join(project, 'failing.yaml');
    await writeFile(failing, 'images:\n  broken:\n    steps:\n      - run: [echo about to fail, exit 7]\n');
    const res = await berth(['image', 'build', '-f', failing], env);
    expect(res.code).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/^\[broken 1\/3\] run echo about to fail && exit 7 {2}FAILED \d+\.\ds$/m);
    expect(res.stderr).toContain('  │ about to fail\n');
    expect(res.stderr).toMatch(/berth: \S*failing\.yaml:4:\d+: .*step 1 failed: .*exit code 7/);
    expect(res.stderr).toContain('  hint: ');
    expect(res.stderr.match(/about to fail$/gm)).toHaveLength(1);

    // --verbose: the output as it comes, between the step's running and FAILED lines, and only there.
    const verbose = await berth(['image', 'build', '-f', failing, '--verbose'], env);
    expect(verbose.code).toBe(1);
    expect(verbose.stderr).toMatch(/… running\n {2}│ about to fail\n\[broken 1\/3\] .* FAILED /);
    expect(verbose.stderr.match(/about to fail$/gm)).toHaveLength(1);
    expect(await imageNames()).toEqual(['web']);
  });

  it('hosts launch from the image; capture; rm is refused while a host uses it; gc frees the layers', async () => {
    const web = (await json<ImageView[]>('image', 'ls'))[0];
    const host = await json<HostView>('host', 'launch', '--image', 'web');
    expect(host.imageId).toBe(web?.id);

    const [captured] = await json<BuildResult[]>('image', 'capture', host.id, 'web-cap');
    expect(captured?.image).toMatchObject({ name: 'web-cap', parent: 'web' });
    expect(captured?.image.layers.slice(0, 5)).toEqual(web?.layers);
    expect((await berth(['image', 'rm', 'web-cap'], env)).code).toBe(0);

    const refused = await berth(['image', 'rm', 'web'], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('image web is used by 1 live host(s)');
    expect((await json<ImageView[]>('image', 'ls'))[0]?.usedBy).toEqual({ pools: [], hosts: 1 });

    expect((await berth(['host', 'rm', host.id], env)).code).toBe(0);
    const removed = await berth(['image', 'rm', 'web'], env);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toBe('image web removed (2 builds); `berth image gc` frees its layers\n');
    expect(await imageNames()).toEqual([]);
    expect((await berth(['image', 'inspect', 'web'], env)).code).toBe(2);

    // The server's own collection leaves layers younger than its grace (24 h by default).
    expect(await server.srv.server.images.collect(24 * 3600_000)).toEqual({ builds: 0, layers: 0, artifacts: 0, bytes: 0 });
    const gc = await json<{ builds: number; layers: number; artifacts: number; bytes: number }>('image', 'gc');
    expect(gc.layers).toBeGreaterThan(5);
    expect(gc.bytes).toBeGreaterThan(0);
    const again = await berth(['image', 'gc'], env);
    expect(again).toMatchObject({ code: 0, stdout: 'removed 0 old builds, 0 layers, 0 cached artifacts, 0 B\n' });
  });

  it("the server's own image gc keeps a failed bake's layers for its next try until they are older than its grace", async () => {
    const halfway = join(project, 'halfway.yaml');
    await writeFile(halfway, 'images:\n  halfway:\n    steps:\n      - run: echo kept > /etc/kept\n      - run: exit 3\n');
    expect((await berth(['image', 'build', '-f', halfway], env)).code).toBe(1);
    const images = server.srv.server.images;
    expect(await images.collect(24 * 3600_000)).toMatchObject({ builds: 0, layers: 0 });
    const retry = await berth(['image', 'build', '-f', halfway], env);
    expect(retry.stderr).toMatch(/\[halfway 1\/4\] run echo kept > \/etc\/kept {2}cached/);
    // A day later, nobody having used it: it goes.
    expect(await images.collect(24 * 3600_000, Date.now() + 25 * 3600_000)).toMatchObject({ builds: 0, layers: 1 });
    expect((await json<{ layers: number }>('image', 'gc')).layers).toBe(0);
  });
});
