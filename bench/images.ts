/**
 * Image baking figures for `npm run bench`, side by side in one run:
 *   - a full bake (empty layer cache) of an image made as real ones are: a runtime tarball fetched
 *     and unpacked, a Python environment installed, the app copied, env, a config step, a test;
 *   - the rebuild after changing only the last step (target <= 10 % of the full bake);
 *   - a no-op rebuild of the unchanged spec;
 *   - host launch -> ready for a 10 MiB and a 1 GiB image (target ratio <= 1.1).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostView } from '../src/hosts/views.js';
import type { InProcessServer } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

export interface ImageBenchOptions {
  bakes: number;
  launches: number;
  progress: (line: string) => void;
}

interface BakeResult {
  ms: number;
  states: string[];
}

export async function imageBench(srv: InProcessServer, opts: ImageBenchOptions): Promise<string[]> {
  const project = await mkdtemp(join(tmpdir(), 'berth-bench-image-'));
  const artifacts = createServer();
  try {
    opts.progress('image bench: preparing a project and a 100 MiB runtime tarball…');
    const runtime = await prepareProject(project);
    const tarball = await readFile(runtime);
    const sha = createHash('sha256').update(tarball).digest('hex');
    artifacts.on('request', (req, res) => (req.url === '/runtime.tgz' ? res.end(tarball) : res.writeHead(404).end()));
    await new Promise<void>((resolve) => artifacts.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(artifacts.address() as AddressInfo).port}/runtime.tgz`;
    const spec = (build: number) => `images:
  bench-app:
    parent: /
    steps:
      - fetch: {url: ${url}, sha256: ${sha}, dest: /opt/runtime, extract: true}
      - run: python3 -m venv /opt/venv && /opt/venv/bin/python -m compileall -q /opt/venv
      - copy: app/ /srv/app
      - env: {APP_ENV: bench}
      - run: echo "build ${build}" > /srv/app/BUILD
      - test: grep -q build /srv/app/BUILD && test -x /opt/venv/bin/python
`;
    const bake = (text: string, what: string) => runBake(srv, project, text, (line) => opts.progress(`image bench: ${what}: ${line}`));

    const full: number[] = [];
    const lastStep: number[] = [];
    const noop: number[] = [];
    let build = 0;
    for (let i = 0; i < opts.bakes; i++) {
      // A full bake starts from an empty layer cache (downloads stay cached by digest).
      await srv.api.delete('/v1/images/bench-app');
      await srv.api.post('/v1/images/gc', {});
      full.push((await bake(spec(++build), `full bake ${i + 1}/${opts.bakes}`)).ms);
      const rebuilt = await bake(spec(++build), `last step changed ${i + 1}/${opts.bakes}`);
      if (rebuilt.states.filter((s) => s.endsWith(':done')).length > 4) throw new Error(`a last-step rebuild re-ran more than it should: ${rebuilt.states.join(' ')}`);
      lastStep.push(rebuilt.ms);
      for (let j = 0; j < 3; j++) noop.push((await bake(spec(build), `no-op rebuild ${i + 1}/${opts.bakes}`)).ms);
    }

    opts.progress('image bench: baking a 10 MiB and a 1 GiB image…');
    const sizeSpec = (name: string, mib: number) =>
      `images:\n  ${name}:\n    steps:\n      - run: mkdir -p /opt/data && for i in $(seq 1 ${mib / 2}); do head -c 2097152 /dev/urandom > /opt/data/blob-$i; done\n`;
    await bake(sizeSpec('bench-10m', 10), 'bake 10 MiB');
    await bake(sizeSpec('bench-1g', 1024), 'bake 1 GiB');
    const launch: Record<string, number[]> = { 'bench-10m': [], 'bench-1g': [] };
    for (let i = 0; i < opts.launches; i++) {
      // Alternating, so both see the same machine state.
      for (const image of ['bench-10m', 'bench-1g'] as const) {
        opts.progress(`image bench: launch -> ready from ${image} ${i + 1}/${opts.launches}`);
        const t0 = performance.now();
        const res = await srv.api.post<HostView>('/v1/hosts', { image });
        launch[image]?.push(performance.now() - t0);
        if (res.status !== 201) throw new Error(`launch from ${image} failed: ${JSON.stringify(res.body)}`);
        await srv.api.delete(`/v1/hosts/${res.body.id}`);
      }
    }
    for (const name of ['bench-app', 'bench-10m', 'bench-1g']) await srv.api.delete(`/v1/images/${name}`);
    await srv.api.post('/v1/images/gc', {});
    opts.progress('');

    const f = summarize(full);
    const l = summarize(lastStep);
    const n = summarize(noop);
    const small = summarize(launch['bench-10m'] ?? []);
    const big = summarize(launch['bench-1g'] ?? []);
    const ratio = l.p50 / f.p50;
    const sizeRatio = big.p50 / small.p50;
    const ok = (pass: boolean) => (pass ? 'met' : '**missed**');
    return [
      `| image: full bake (fetch+unpack 100 MiB, venv install, copy, env, config, test; empty layer cache) | ${f.n} | ${s(f.p50)} | ${s(f.p99)} | | |`,
      `| image: rebuild after changing only the last step | ${l.n} | ${s(l.p50)} | ${s(l.p99)} | ${(100 * ratio).toFixed(1)} % of the full bake (target <= 10 %) | ${ok(ratio <= 0.1)} |`,
      `| image: no-op rebuild of the unchanged spec | ${n.n} | ${ms(n.p50)} | ${ms(n.p99)} | | |`,
      `| host launch -> ready, 10 MiB image | ${small.n} | ${ms(small.p50)} | ${ms(small.p99)} | | |`,
      `| host launch -> ready, 1 GiB image | ${big.n} | ${ms(big.p50)} | ${ms(big.p99)} | 1 GiB / 10 MiB = ${sizeRatio.toFixed(2)}x (target <= 1.1) | ${ok(sizeRatio <= 1.1)} |`,
    ];
  } finally {
    await new Promise((resolve) => artifacts.close(resolve));
    await rm(project, { recursive: true, force: true });
  }
}

const s = (msValue: number): string => `${(msValue / 1000).toFixed(2)} s`;

/** An app of 300 small files, and a runtime tarball of 50 incompressible 2 MiB files. */
async function prepareProject(project: string): Promise<string> {
  await mkdir(join(project, 'app', 'lib'), { recursive: true });
  for (let i = 0; i < 300; i++) await writeFile(join(project, 'app', 'lib', `module${i}.py`), `# module ${i}\n${'x = 1\n'.repeat(200)}`);
  const runtimeDir = join(project, 'runtime-src');
  await mkdir(join(runtimeDir, 'lib'), { recursive: true });
  execFileSync('sh', ['-c', `for i in $(seq 1 50); do head -c 2097152 /dev/urandom > lib/part-$i.so; done`], { cwd: runtimeDir });
  const tarball = join(project, 'runtime.tgz');
  execFileSync('tar', ['-czf', tarball, '-C', runtimeDir, '.']);
  await rm(runtimeDir, { recursive: true, force: true });
  return tarball;
}

/** Bakes through the API as the CLI does; resolves with the wall time and each step's final state. */
export async function runBake(srv: InProcessServer, project: string, text: string, progress: (line: string) => void): Promise<BakeResult> {
  const t0 = performance.now();
  const res = await fetch(`${srv.server.url}/v1/images/builds`, {
    method: 'POST',
    headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text, file: 'berth.yaml', projectDir: project }),
  });
  if (res.status !== 200 || !res.body) throw new Error(`bake refused: ${res.status} ${await res.text()}`);
  const states: string[] = [];
  let buffered = '';
  let last: Record<string, unknown> = {};
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buffered += decoder.decode(chunk as Uint8Array, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      last = JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>;
      buffered = buffered.slice(nl + 1);
      if (last['type'] === 'step') {
        progress(`${String(last['title'])} ${String(last['state'])}`);
        if (last['state'] !== 'running') states.push(`${String(last['kind'])}:${String(last['state'])}`);
      }
    }
  }
  if (last['type'] !== 'result') throw new Error(`bake failed: ${JSON.stringify(last['error'])}`);
  return { ms: performance.now() - t0, states };
}
