/**
 * The bundled demo stack (demo/) as real processes on 127.0.0.1: web, api and worker started with
 * `node demo/<service>.mjs` as berth's supervisor would, with their settings in the environment and
 * in a BERTH_ENV_FILE, data in a temporary DATA_DIR.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { freePorts } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const DEMO = fileURLToPath(new URL('../../demo/', import.meta.url));
const TOKEN = 'test-token-not-shown';

interface Job {
  id: string;
  text: string;
  status: 'pending' | 'running' | 'done';
  worker?: string;
  result?: { words: number; chars: number; sha256: string; workMs: number };
}
interface LiveMessage {
  type: string;
  jobs?: Job[];
  config?: { greeting: string };
  up?: boolean;
}

class Service {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  output = '';

  constructor(
    readonly name: 'api' | 'web' | 'worker',
    env: Record<string, string>,
  ) {
    // Only what the test gives: nothing of this machine's berth (tags file, env file) leaks in.
    this.child = spawn(process.execPath, [join(DEMO, `${name}.mjs`)], {
      cwd: DEMO,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOST: '127.0.0.1', BERTH_TAGS_FILE: '/nonexistent/tags.json', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.child.stderr?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
    running.add(this);
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error(`${this.name} did not start`);
    return this.child.pid;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  lines(pattern: RegExp): string[] {
    return this.output.split('\n').filter((line) => pattern.test(line));
  }

  waitForLine(pattern: RegExp, timeoutMs = 5000): Promise<string> {
    return waitFor(`${this.name} to log ${String(pattern)} (it logged:\n${this.output})`, () => Promise.resolve(this.lines(pattern)[0]), { timeoutMs, intervalMs: 20 });
  }

  /** SIGTERM; resolves with the exit code and how long it took. */
  async stop(): Promise<{ code: number | null; ms: number }> {
    const sent = Date.now();
    this.child.kill('SIGTERM');
    const exit = await this.exited;
    return { code: exit.signal ? -1 : exit.code, ms: exit.at - sent };
  }
}

const running = new Set<Service>();

async function healthy(base: string): Promise<void> {
  await waitFor(`${base}/healthz`, async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined), { timeoutMs: 5000, intervalMs: 20, ignoreErrors: true });
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  expect(res.status, `GET ${url}`).toBe(200);
  return (await res.json()) as T;
}

async function postJob(base: string, text: string): Promise<Job> {
  const res = await fetch(`${base}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text }) });
  expect(res.status).toBe(201);
  return (await res.json()) as Job;
}

function waitDone(base: string, id: string, timeoutMs = 10_000): Promise<Job> {
  return waitFor(`job ${id} done`, async () => {
    const job = await getJson<Job>(`${base}/api/jobs/${id}`);
    return job.status === 'done' ? job : undefined;
  }, { timeoutMs, intervalMs: 50 });
}

/** A /live connection that keeps every message it got. */
async function openLive(port: number): Promise<{ ws: WebSocket; messages: LiveMessage[]; next: (match: (msg: LiveMessage) => boolean) => Promise<LiveMessage> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/live`);
  const messages: LiveMessage[] = [];
  ws.on('message', (data: Buffer) => messages.push(JSON.parse(data.toString()) as LiveMessage));
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const next = (match: (msg: LiveMessage) => boolean) =>
    waitFor('a matching /live message', () => Promise.resolve(messages.find(match)), { timeoutMs: 10_000, intervalMs: 20 });
  return { ws, messages, next };
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('the demo stack', () => {
  let dir: string;
  let envFile: string;
  let apiPort: number;
  let webPort: number;
  let api: Service;
  let worker: Service;
  let web: Service;
  let apiEnv: Record<string, string>;
  const apiBase = () => `http://127.0.0.1:${apiPort}`;
  const webBase = () => `http://127.0.0.1:${webPort}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-demo-test-'));
    envFile = join(dir, 'services.env');
    await writeFile(
      envFile,
      [
        '# as berth writes it: the effective settings of the stack',
        'GREETING="Hello from the test"   # quoted, with a comment',
        "export APP_VERSION='7'",
        'BERTH_ENVIRONMENT=review',
        'BERTH_REF=v2',
        `DEMO_SECRET_TOKEN=${TOKEN}`,
        '',
      ].join('\n'),
    );
    [apiPort = 0, webPort = 0] = await freePorts(2);
    const tags = JSON.stringify({ 'berth.stack': 'demo', 'berth.mode': 'review', team: 'a', 'berth.env.DEMO_SECRET_TOKEN': TOKEN });
    const common = { BERTH_ENV_FILE: envFile, BERTH_TAGS: tags, API_URL: apiBase() };
    apiEnv = { ...common, PORT: String(apiPort), DATA_DIR: join(dir, 'data') };
    // In dependency order, as berth's supervisor starts them: worker and web once the api is ready.
    api = new Service('api', apiEnv);
    await healthy(apiBase());
    worker = new Service('worker', common);
    web = new Service('web', { ...common, PORT: String(webPort) });
    await healthy(webBase());
    await worker.waitForLine(/worker: started/);
  });

  afterAll(async () => {
    for (const service of running) if (service.alive) service.child.kill('SIGKILL');
    await Promise.all([...running].map((service) => service.exited));
    await rm(dir, { recursive: true, force: true });
  });

  it('serves its page with the title, the greeting, the environment, its ref and the version', async () => {
    const res = await fetch(`${webBase()}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const page = await res.text();
    expect(page).toContain('<title>berth demo</title>');
    expect(page).toContain('<h1 id="greeting">Hello from the test</h1>');
    expect(page).toMatch(/environment <b id="environment">review<\/b> · ref <b id="ref">v2<\/b> · version/);
    expect(page).toMatch(/version <b id="version">7<\/b>/);
    expect(page).toContain('id="job-form"');
    expect(page).not.toContain(TOKEN);
    expect((await fetch(`${webBase()}/app.js`)).status).toBe(200);
    expect(await (await fetch(`${webBase()}/healthz`)).text()).toBe('ok\n');
  });

  it("gives the api's settings through web, with the tags and without the secret", async () => {
    const res = await fetch(`${webBase()}/api/config`);
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(JSON.parse(text)).toEqual({
      service: 'api',
      greeting: 'Hello from the test',
      environment: 'review',
      version: '7',
      ref: 'v2',
      tags: { 'berth.stack': 'demo', 'berth.mode': 'review', team: 'a', 'berth.env.DEMO_SECRET_TOKEN': '********' },
    });
    expect(text).not.toContain(TOKEN);
  });

  it('processes a job posted through web and pushes its progress over /live', async () => {
    const live = await openLive(webPort);
    try {
      await live.next((msg) => msg.type === 'hello');
      const text = 'the quick  brown\tfox jumps';
      const job = await postJob(webBase(), text);
      expect(job).toMatchObject({ text, status: 'pending' });
      const pushed = await live.next((msg) => msg.type === 'jobs' && (msg.jobs ?? []).some((j) => j.id === job.id && j.status === 'done'));
      const done = pushed.jobs?.find((j) => j.id === job.id);
      expect(done?.result).toMatchObject({ words: 5, chars: text.length, sha256: sha256(text) });
      expect(await waitDone(webBase(), job.id)).toMatchObject({ status: 'done', result: { words: 5 } });
      expect(worker.lines(new RegExp(`job ${job.id} done`))).toHaveLength(1);
      const listed = await getJson<{ jobs: Job[] }>(`${webBase()}/api/jobs`);
      expect(listed.jobs.map((j) => j.id)).toContain(job.id);
    } finally {
      live.ws.close();
    }
  });

  it('keeps the worker routes for holders of the secret token, and checks what it is sent', async () => {
    const job = await postJob(apiBase(), 'nobody may finish this but a worker');
    const result = { worker: 'intruder', words: 1, chars: 1, sha256: sha256('x') };
    const post = (token?: string) =>
      fetch(`${apiBase()}/api/jobs/${job.id}/result`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(result),
      });
    expect((await post()).status).toBe(401);
    expect((await post('wrong')).status).toBe(401);
    await waitDone(apiBase(), job.id); // the real worker has the token
    expect((await post(TOKEN)).status).toBe(409); // done already
    const bad = await fetch(`${apiBase()}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"text": ""}' });
    expect(bad.status).toBe(400);
    expect((await fetch(`${apiBase()}/api/jobs/ffffffffffff`)).status).toBe(404);
  });

  it('re-reads BERTH_ENV_FILE on SIGHUP and shows the new greeting without restarting', async () => {
    const live = await openLive(webPort);
    try {
      await live.next((msg) => msg.type === 'hello');
      const pids = [web.pid, api.pid, worker.pid];
      const before = await readFile(envFile, 'utf8');
      await writeFile(envFile, before.replace('Hello from the test', 'Reloaded <greeting> & co'));
      for (const service of [web, api, worker]) service.child.kill('SIGHUP');
      await web.waitForLine(/web: reloaded settings from .*: changed GREETING$/);
      await api.waitForLine(/api: reloaded settings/);
      await worker.waitForLine(/worker: reloaded settings/);
      const page = await (await fetch(`${webBase()}/`)).text();
      expect(page).toContain('<h1 id="greeting">Reloaded &lt;greeting&gt; &amp; co</h1>');
      expect((await getJson<{ greeting: string }>(`${webBase()}/api/config`)).greeting).toBe('Reloaded <greeting> & co');
      await live.next((msg) => msg.type === 'config' && msg.config?.greeting === 'Reloaded <greeting> & co');
      expect([web.pid, api.pid, worker.pid]).toEqual(pids);
      expect([web.alive, api.alive, worker.alive]).toEqual([true, true, true]);
      expect(web.lines(/listening on/)).toHaveLength(1);
    } finally {
      live.ws.close();
    }
  });

  it('keeps the worker through an api restart, and the jobs too', async () => {
    const before = await postJob(webBase(), 'before the restart');
    await waitDone(webBase(), before.id);
    const logged = worker.output.length;
    const stopped = await api.stop();
    expect(stopped.code).toBe(0);
    await worker.waitForLine(/worker: api unavailable at http:\/\/127\.0\.0\.1:\d+: E[A-Z]+; retrying with backoff/);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // several failed polls
    expect(worker.alive).toBe(true);
    // While the api is down, web answers for it.
    const down = await fetch(`${webBase()}/api/jobs`);
    expect(down.status).toBe(502);

    api = new Service('api', apiEnv);
    await healthy(apiBase());
    expect(await getJson<Job>(`${webBase()}/api/jobs/${before.id}`)).toMatchObject({ status: 'done' }); // persisted
    const after = await postJob(webBase(), 'after the restart');
    await waitDone(webBase(), after.id);
    expect(worker.alive).toBe(true);
    // One line when the api went away and one when it came back: not one per poll.
    const since = worker.output.slice(logged).split('\n');
    expect(since.filter((line) => /api (still )?unavailable/.test(line)), worker.output).toHaveLength(1);
    expect(since.filter((line) => /api reachable again/.test(line)), worker.output).toHaveLength(1);
  });

  it('finishes the job in hand on SIGTERM, then exits 0', async () => {
    const slow = new Service('worker', { API_URL: apiBase(), WORK_MS: '700', DEMO_SECRET_TOKEN: TOKEN });
    await worker.stop(); // the slow one takes every job from here on
    const job = await postJob(apiBase(), 'a slow job');
    await waitFor('the slow worker to claim the job', async () => ((await getJson<Job>(`${apiBase()}/api/jobs/${job.id}`)).status === 'running' ? true : undefined), { intervalMs: 20 });
    const { code, ms } = await slow.stop();
    expect(code).toBe(0);
    expect(ms).toBeLessThan(2000);
    expect(await getJson<Job>(`${apiBase()}/api/jobs/${job.id}`)).toMatchObject({ status: 'done', result: { words: 3 } });
  });

  it('stops every service with exit 0 within 2 s of SIGTERM', async () => {
    const live = await openLive(webPort); // an open WebSocket must not hold web up
    const results = await Promise.all([web.stop(), api.stop()]);
    for (const { code, ms } of results) {
      expect(code).toBe(0);
      expect(ms).toBeLessThan(2000);
    }
    live.ws.terminate();
    const data = JSON.parse(await readFile(join(dir, 'data', 'jobs.json'), 'utf8')) as { version: number; jobs: Job[] };
    expect(data.version).toBe(1);
    expect(data.jobs.every((job) => job.status === 'done')).toBe(true);
  });

  it('passes its own smoke test (the image runs it before publishing)', async () => {
    const smoke = spawn(process.execPath, [join(DEMO, 'lib', 'smoke.mjs')], { cwd: DEMO, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    smoke.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => smoke.once('exit', resolve));
    expect(output).toContain('berth demo smoke test: ok');
    expect(code).toBe(0);
  });
});
