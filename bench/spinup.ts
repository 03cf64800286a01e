/**
 * The spin-up benchmark (`npm run bench -- spinup`): the seeds' story on this machine, one run, the
 * same demo stack (berth.yaml), timed from `env create` to the first 200 through the router:
 *   (a) cold: no pool; a host is launched and the app installed at boot (a cloud-init script would);
 *   (b) a pool of ready plain hosts (seed 1): the install runs at claim;
 *   (c) a pool of hosts of the baked image (seed 2): only the services start at claim;
 *   (d) a pool of review hosts with the stack already running: the user's settings arrive by reload;
 *   (e) beside them, an environment of (d)'s pool asleep (its host back in the pool): its next
 *       request, held by the router while the environment wakes, until that request's 200;
 *   (f) an environment of (d)'s pool whose host dies (its init killed): from the kill to its URL's
 *       first 200 from the new host berth put in its place by itself (environments/heal.ts).
 * The client (berth's API client for the create, plain GETs through the router) runs in its own
 * process, bench/spinup-client.mjs, as a user's CLI and browser do.
 * Writes the table and a chart (bench/results/spinup.svg, docs/spinup.svg).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../src/cli/paths.js';
import { readConfigLayers, emptyConfigLayers } from '../src/stacks/config.js';
import { parseStacksFile, type StackSpec } from '../src/stacks/spec.js';
import type { InProcessServer } from '../test/helpers/server.js';
import { runBake } from './images.js';
import { ms, summarize, type Summary } from './stats.js';
import { StatementCount } from './statement-count.js';

export interface SpinupOptions {
  /** Creates per variant: cold and install-at-claim are slow, so they get fewer. */
  slow: number;
  fast: number;
  /** Which of a, b, c, d, e, f to run (all by default). */
  variants?: string[];
  progress: (line: string) => void;
}

interface Variant {
  key: string;
  label: string;
  pool: string;
  stack: string;
  runs: number;
}

const APP = '/srv/berth-demo';

export async function spinupBench(srv: InProcessServer, opts: SpinupOptions): Promise<string[]> {
  const root = packageRoot();
  const text = readFileSync(join(root, 'berth.yaml'), 'utf8');
  opts.progress('spinup: baking the demo image…');
  await runBake(srv, root, text, (line) => opts.progress(`spinup: bake ${line}`));
  const [demo] = parseStacksFile(text, 'berth.yaml', root);
  if (!demo) throw new Error('berth.yaml has no stack');
  const config = demo.configDir ? readConfigLayers(demo.configDir.path, demo.configDir.label) : emptyConfigLayers();
  await put(srv, '/v1/stacks/demo', { stack: demo, config });
  const boot = installAtBoot(demo, root);
  await put(srv, '/v1/stacks/demo-boot', { stack: boot, config });
  const pools = [
    { name: 'sp-cold', image: '/', size: 0, onEmpty: 'launch' },
    { name: 'sp-plain', image: '/', size: 2 },
    { name: 'sp-baked', image: 'demo', size: 2 },
    { name: 'sp-review', image: 'demo', size: 2, template: { tags: { 'berth.stack': 'demo', 'berth.mode': 'review' } } },
  ];
  for (const { name, ...pool } of pools) await put(srv, `/v1/pools/${name}`, pool);
  const variants: Variant[] = [
    { key: 'a', label: '(a) cold: launch, install at boot', pool: 'sp-cold', stack: 'demo-boot', runs: opts.slow },
    { key: 'b', label: '(b) pool, install at claim (seed 1)', pool: 'sp-plain', stack: 'demo-boot', runs: opts.slow },
    { key: 'c', label: '(c) pool of the baked image (seed 2)', pool: 'sp-baked', stack: 'demo', runs: opts.fast },
    { key: 'd', label: '(d) review host, stack running, reload', pool: 'sp-review', stack: 'demo', runs: opts.fast },
  ];
  const client = new SpinupClient(srv);
  const results = new Map<string, Summary>();
  // The embedded store's statements during each create's API call (0 on PostgreSQL: not counted there).
  const statements = new Map<string, StatementCount>();
  const breakdowns = new Map<string, Phases[]>();
  try {
    for (const v of variants) {
      if (opts.variants && !opts.variants.includes(v.key)) continue;
      const samples: number[] = [];
      const count = new StatementCount();
      statements.set(v.key, count);
      const phases: Phases[] = [];
      breakdowns.set(v.key, phases);
      for (let i = 0; i < v.runs; i++) {
        await poolFull(srv, v.pool);
        opts.progress(`spinup: ${v.label} ${i + 1}/${v.runs}`);
        samples.push(await createToFirst200(srv, client, `sp-${v.key}-${i}`, v, count, phases));
      }
      results.set(v.key, summarize(samples));
    }
    if (!opts.variants || opts.variants.includes('e')) {
      const woken = await wakes(srv, client, opts);
      results.set('e', woken.wake);
      results.set('e-awake', woken.awake);
      breakdowns.set('e', woken.phases);
    }
    if (!opts.variants || opts.variants.includes('f')) {
      const healed = await heals(srv, client, opts);
      results.set('f', healed.heal);
      breakdowns.set('f', healed.phases);
    }
  } finally {
    client.close();
    for (const { name } of pools) await srv.api.delete(`/v1/pools/${name}`);
  }
  opts.progress('');
  const get = (key: string) => results.get(key) ?? summarize([NaN]);
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(get) as [Summary, Summary, Summary, Summary];
  const chart = svgChart(variants.map((v) => ({ label: v.label, s: get(v.key) })));
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  writeFileSync(join(root, 'bench', 'results', 'spinup.svg'), chart);
  // The chart in the docs shows the four side by side: a run of some of them leaves it alone.
  if (variants.every((v) => results.has(v.key))) writeFileSync(join(root, 'docs', 'spinup.svg'), chart);
  const ok = (cond: boolean) => (cond ? 'met' : '**missed**');
  const perCreate = (key: string): string => {
    const mean = statements.get(key)?.mean();
    return mean === undefined || !Number.isFinite(mean) || mean === 0 ? '-' : mean.toFixed(1);
  };
  return [
    `| spin-up ${variants[0]?.label ?? ''}: env create -> first 200 via the router | ${a.n} | ${ms(a.p50)} | ${ms(a.p99)} | (a)/(d) p50 ${(a.p50 / d.p50).toFixed(0)}x (target >= 100x: ${ok(a.p50 / d.p50 >= 100)}) | |`,
    `| spin-up ${variants[1]?.label ?? ''} | ${b.n} | ${ms(b.p50)} | ${ms(b.p99)} | (b)/(d) ${(b.p50 / d.p50).toFixed(0)}x | |`,
    `| spin-up ${variants[2]?.label ?? ''} | ${c.n} | ${ms(c.p50)} | ${ms(c.p99)} | target p50 <= 300 ms: ${ok(c.p50 <= 300)} | |`,
    `| spin-up ${variants[3]?.label ?? ''} | ${d.n} | ${ms(d.p50)} | ${ms(d.p99)} | target p50 <= 25 ms, p99 <= 100 ms: ${ok(d.p50 <= 25 && d.p99 <= 100)} | chart: docs/spinup.svg |`,
    `| of which: store statements during a create's API call, mean, (c) / (d) (PGlite) | | | | ${perCreate('c')} / ${perCreate('d')} | |`,
    ...(results.has('e') ? [`| spin-up (e) a sleeping environment of (d)'s pool: its next request, held while it wakes, to its 200 | ${get('e').n} | ${ms(get('e').p50)} | ${ms(get('e').p99)} | the same request once awake: ${ms(get('e-awake').p50)} p50 | |`] : []),
    ...(results.has('f') ? [`| spin-up (f) an environment of (d)'s pool whose host died (init killed): the kill to its URL's first 200 from the host berth put in its place | ${get('f').n} | ${ms(get('f').p50)} | ${ms(get('f').p99)} | | |`] : []),
    ...['c', 'd', 'e', 'f'].filter((key) => breakdowns.get(key)?.length).map((key) => `| of which (${key}), p50 of each part: ${medians(breakdowns.get(key) ?? [])} | | | | | |`),
    ...['c', 'd'].filter((key) => breakdowns.get(key)?.length).map((key) => `| (${key}), the slowest create's parts: ${slowest(breakdowns.get(key) ?? [])} | | | | | |`),
  ];
}

/** `name 1.2 ms / …` for every part the creates reported, in the order the server reports them. */
function medians(phases: Phases[]): string {
  const names = [...new Set(phases.flatMap((p) => Object.keys(p)))];
  return names.map((name) => `${name} ${ms(summarize(phases.map((p) => p[name] ?? NaN).filter(Number.isFinite)).p50)}`).join(' / ');
}

/** The parts of the create that took longest to its first 200: what a p99 is made of. */
function slowest(phases: Phases[]): string {
  const total = (p: Phases) => (p['API answer'] ?? 0) + (p['first 200 after it'] ?? 0);
  const worst = phases.reduce<Phases | undefined>((a, p) => (a === undefined || total(p) > total(a) ? p : a), undefined);
  return worst ? Object.entries(worst).map(([name, value]) => `${name} ${ms(value)}`).join(' / ') : '-';
}

/** The demo as a stack that installs itself at boot: a `setup` service copies and installs the app first. */
function installAtBoot(demo: StackSpec, root: string): StackSpec {
  const services: StackSpec['services'] = {};
  const setup = [
    'set -e',
    `rm -rf ${APP} && mkdir -p ${APP}`,
    `cd ${root}/demo && cp -r package.json package-lock.json lib public api.mjs worker.mjs web.mjs ${APP}/`,
    `cd ${APP} && npm ci --offline --no-audit --no-fund >/dev/null 2>&1`,
    `touch ${APP}/.installed`,
    'exec sleep 2147483647',
  ].join('; ');
  const at = demo.at;
  services['setup'] = { name: 'setup', cmd: setup, env: {}, ports: [], dependsOn: [], ready: { command: `test -f ${APP}/.installed`, timeoutSeconds: 300, intervalMs: 50 }, restart: { policy: 'always' }, at, from: 'services', envAt: {} };
  for (const [name, service] of Object.entries(demo.services)) services[name] = { ...service, dependsOn: [...service.dependsOn, 'setup'] };
  return { ...demo, name: 'demo-boot', services };
}

/**
 * (e): an environment of the review pool, created and put to sleep off the clock (its host goes
 * back; the pool refills), then one GET through the router, held while it wakes, until its answer;
 * and the same GET once awake, beside it.
 */
async function wakes(srv: InProcessServer, client: SpinupClient, opts: SpinupOptions): Promise<{ wake: Summary; awake: Summary; phases: Phases[] }> {
  const wake: number[] = [];
  const awake: number[] = [];
  const phases: Phases[] = [];
  const v = { key: 'e', label: '', pool: 'sp-review', stack: 'demo', runs: opts.fast };
  await poolFull(srv, v.pool);
  await createToFirst200(srv, client, 'sp-e', v, new StatementCount(), [], { keep: true });
  for (let i = 0; i < opts.fast; i++) {
    const slept = await srv.api.post<{ url: string }>('/v1/environments/sp-e/sleep', {});
    if (slept.status !== 200) throw new Error(`env sleep sp-e: ${slept.status} ${JSON.stringify(slept.body)}`);
    await poolFull(srv, v.pool);
    opts.progress(`spinup: (e) wake ${i + 1}/${opts.fast}`);
    const first = await client.get(slept.body.url);
    if (first.status !== 200) throw new Error(`sp-e answered ${first.status} while waking`);
    wake.push(first.elapsed);
    awake.push((await client.get(slept.body.url)).elapsed);
    const view = (await srv.api.get<{ timings: Record<string, number>; operation: string }>('/v1/environments/sp-e')).body;
    if (view.operation !== 'wake') throw new Error(`sp-e: its latest operation is ${view.operation}, not a wake`);
    phases.push({ ...view.timings, 'request to its 200': first.elapsed });
  }
  await srv.api.delete('/v1/environments/sp-e');
  return { wake: summarize(wake), awake: summarize(awake), phases };
}

/**
 * (f): an environment of the review pool, its host killed (SIGKILL to the host's init, as a crash of
 * the machine would end it) once the pool is full again, then GETs through the router until one
 * answers 200 from another host; the heal's own timings (`operation: heal`) beside it.
 */
async function heals(srv: InProcessServer, client: SpinupClient, opts: SpinupOptions): Promise<{ heal: Summary; phases: Phases[] }> {
  const samples: number[] = [];
  const phases: Phases[] = [];
  const v = { key: 'f', label: '', pool: 'sp-review', stack: 'demo', runs: opts.fast };
  await poolFull(srv, v.pool);
  await createToFirst200(srv, client, 'sp-f', v, new StatementCount(), [], { keep: true });
  type View = { url: string; state: string; operation: string; hosts: { hostId: string }[]; timings: Record<string, number> };
  const view = async () => (await srv.api.get<View>('/v1/environments/sp-f')).body;
  for (let i = 0; i < opts.fast; i++) {
    await poolFull(srv, v.pool);
    opts.progress(`spinup: (f) heal ${i + 1}/${opts.fast}`);
    const before = await view();
    const dead = before.hosts[0]?.hostId ?? '';
    const state = JSON.parse(readFileSync(join(srv.dataDir, 'hosts', dead, 'state.json'), 'utf8')) as { initPid?: number };
    if (!state.initPid) throw new Error(`sp-f: no init pid recorded for ${dead}`);
    const t0 = performance.now();
    process.kill(state.initPid, 'SIGKILL');
    // The URL answers 200 again once a host other than the dead one serves it.
    let after = before;
    while (!(after.state === 'ready' && after.hosts.length > 0 && !after.hosts.some((h) => h.hostId === dead))) {
      if (performance.now() - t0 > 60_000) throw new Error(`sp-f was not healed within 60 s (${after.state})`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = await view();
    }
    let answer = await client.get(before.url);
    while (answer.status !== 200) {
      if (performance.now() - t0 > 60_000) throw new Error(`sp-f answered ${answer.status} after its heal`);
      answer = await client.get(before.url);
    }
    const elapsed = performance.now() - t0;
    if (after.operation !== 'heal') throw new Error(`sp-f: its latest operation is ${after.operation}, not a heal`);
    samples.push(elapsed);
    phases.push({ ...after.timings, 'kill to its 200': elapsed });
  }
  await srv.api.delete('/v1/environments/sp-f');
  return { heal: summarize(samples), phases };
}

/** Per create: the server's own timings, and the client's view around them (ms). */
type Phases = Record<string, number>;

async function createToFirst200(srv: InProcessServer, client: SpinupClient, name: string, v: Variant, count: StatementCount, phases: Phases[], opts: { keep?: boolean } = {}): Promise<number> {
  const { answered, done } = client.create({ name, stack: v.stack, pool: v.pool, set: { GREETING: `hello ${name}` } });
  await count.during(() => answered);
  const result = await done;
  phases.push({ ...result.timings, 'API answer': result.answered, 'first 200 after it': result.elapsed - result.answered });
  if (!opts.keep) await srv.api.delete(`/v1/environments/${name}`);
  return result.elapsed;
}

interface CreateResult {
  answered: number;
  elapsed: number;
  timings: Record<string, number>;
}

/**
 * The client side of a create, in its own process (bench/spinup-client.mjs), as a user's CLI and
 * browser are: in the server's process it shared the event loop with the server and the router it
 * was timing. One create at a time.
 */
class SpinupClient {
  private readonly child: ChildProcess;
  private readonly waiting: Array<(msg: { type: string; message?: string } & Partial<CreateResult>) => void> = [];

  constructor(srv: InProcessServer) {
    this.child = spawn(process.execPath, [join(packageRoot(), 'bench', 'spinup-client.mjs'), srv.server.url, srv.server.token], { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on('line', (line) => this.waiting.shift()?.(JSON.parse(line) as { type: string }));
  }

  create(req: { name: string; stack: string; pool: string; set: Record<string, string> }): { answered: Promise<void>; done: Promise<CreateResult> } {
    const next = () => new Promise<{ type: string; message?: string } & Partial<CreateResult>>((resolve) => this.waiting.push(resolve));
    const answered = next().then((msg) => {
      if (msg.type !== 'answered') throw new Error(`env create ${req.name} failed: ${msg.message ?? msg.type}`);
    });
    const done = answered.then(next).then((msg) => {
      if (msg.type !== 'done') throw new Error(`env create ${req.name}: ${msg.message ?? msg.type}`);
      return { answered: msg.answered ?? NaN, elapsed: msg.elapsed ?? NaN, timings: msg.timings ?? {} };
    });
    this.child.stdin?.write(`${JSON.stringify(req)}\n`);
    return { answered, done };
  }

  /** One GET through the router to an environment's URL: its status and how long it took (ms). */
  get(url: string): Promise<{ status: number; elapsed: number }> {
    const answer = new Promise<{ type: string; status?: number; elapsed?: number }>((resolve) => this.waiting.push(resolve));
    this.child.stdin?.write(`${JSON.stringify({ op: 'get', url })}\n`);
    return answer.then((msg) => ({ status: msg.status ?? 0, elapsed: msg.elapsed ?? NaN }));
  }

  close(): void {
    this.child.stdin?.end();
  }
}

/**
 * The pool is full and at rest: its hosts ready, and the services of those that run a stack ready
 * too (a refill's start-up is not measured as part of the next create), and nothing else is
 * terminating on the machine.
 */
async function poolFull(srv: InProcessServer, pool: string): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const { body } = await srv.api.get<{ size: number; status: { ready: number; warming: number } }>(`/v1/pools/${pool}`);
    if (body.status.ready >= body.size && body.status.warming === 0 && (await servicesSettled(srv, pool))) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`pool ${pool} did not fill`);
}

async function servicesSettled(srv: InProcessServer, pool: string): Promise<boolean> {
  const { body } = await srv.api.get<{ hosts: Array<{ id: string; slot: string | null; state: string }> }>(`/v1/pools/${pool}/hosts`);
  if (body.hosts.some((h) => h.state === 'terminating')) return false;
  for (const host of body.hosts.filter((h) => h.slot === 'ready')) {
    const view = (await srv.api.get<{ services: Array<{ configHash: string; status: { state: string; configHash: string } | null }> }>(`/v1/hosts/${host.id}/services`)).body;
    if (!view.services.every((s) => s.status?.state === 'ready' && s.status.configHash === s.configHash)) return false;
  }
  return true;
}

async function put(srv: InProcessServer, path: string, body: unknown): Promise<void> {
  const res = await srv.api.put(path, body);
  if (res.status >= 300) throw new Error(`PUT ${path}: ${res.status} ${JSON.stringify(res.body)}`);
}

/** Bars of p50 on a log scale with p99 marks: one look says how far apart the four paths are. */
export function svgChart(rows: Array<{ label: string; s: Summary }>): string {
  const width = 960;
  const left = 300;
  const barH = 28;
  const top = 40;
  const height = top + rows.length * (barH + 14) + 40;
  const max = Math.max(...rows.map((r) => r.s.p99).filter(Number.isFinite), 10);
  // Room on the right for the label after the p99 mark.
  const x = (v: number) => left + ((Math.log10(Math.max(v, 1)) / Math.log10(max * 1.2)) * (width - left - 200));
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const ticks = [1, 10, 100, 1000, 10_000, 100_000].filter((t) => t <= max * 1.2);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="13">`,
    `<text x="10" y="22" font-size="15" font-weight="bold">berth demo stack: env create -&gt; first 200 through the router (p50 bar, p99 mark; log scale)</text>`,
    ...ticks.map((t) => `<line x1="${x(t)}" y1="${top - 6}" x2="${x(t)}" y2="${height - 30}" stroke="#ddd"/><text x="${x(t)}" y="${height - 14}" text-anchor="middle" fill="#666">${t >= 1000 ? `${t / 1000} s` : `${t} ms`}</text>`),
  ];
  rows.forEach((r, i) => {
    const y = top + i * (barH + 14);
    parts.push(`<text x="${left - 8}" y="${y + barH / 2 + 4}" text-anchor="end">${esc(r.label)}</text>`);
    parts.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(r.s.p50) - left)}" height="${barH}" fill="${['#c0392b', '#e67e22', '#2980b9', '#27ae60'][i] ?? '#888'}"/>`);
    parts.push(`<line x1="${x(r.s.p99)}" y1="${y - 3}" x2="${x(r.s.p99)}" y2="${y + barH + 3}" stroke="#000" stroke-width="2"/>`);
    parts.push(`<text x="${x(r.s.p99) + 6}" y="${y + barH / 2 + 4}">${esc(ms(r.s.p50))} (p99 ${esc(ms(r.s.p99))})</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
