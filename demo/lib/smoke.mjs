/**
 * The demo's smoke test (the image's `test` step runs it; `npm run smoke` too): starts api, worker
 * and web on free loopback ports with a temporary DATA_DIR, submits a job through web, waits for the
 * worker's result on the /live WebSocket, then stops all three with SIGTERM and expects exit 0.
 * Prints one line; exits 0 when all of it worked, 1 otherwise.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';

const dir = fileURLToPath(new URL('..', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'berth-demo-smoke-'));
const children = [];
const output = [];

// All probes stay open until every port is known: a port closed before the next probe listens can
// be handed out again, and api and web would then be told the same one.
async function freePorts(count) {
  const probes = [];
  try {
    for (let i = 0; i < count; i++) {
      const probe = createServer();
      probes.push(probe);
      await new Promise((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
    }
    return probes.map((probe) => probe.address().port);
  } finally {
    await Promise.all(probes.map((probe) => new Promise((resolve) => probe.close(() => resolve()))));
  }
}

function start(service, env) {
  const child = spawn(process.execPath, [join(dir, `${service}.mjs`)], {
    cwd: dir,
    env: { ...process.env, HOST: '127.0.0.1', DATA_DIR: dataDir, BERTH_ENV_FILE: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk) => output.push(String(chunk)));
  child.stderr.on('data', (chunk) => output.push(String(chunk)));
  children.push(child);
  return child;
}

async function waitHttp(url) {
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(url).then((res) => res.ok, () => false);
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${url} did not answer`);
}

async function main() {
  const [apiPort, webPort] = await freePorts(2);
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const web = `http://127.0.0.1:${webPort}`;
  start('api', { PORT: String(apiPort) });
  start('worker', { API_URL: apiUrl });
  start('web', { PORT: String(webPort), API_URL: apiUrl });
  await Promise.all([waitHttp(`${apiUrl}/healthz`), waitHttp(`${web}/healthz`)]);

  const page = await (await fetch(web)).text();
  if (!page.includes('<title>berth demo</title>')) throw new Error('the page has no "berth demo" title');

  const ws = new WebSocket(`ws://127.0.0.1:${webPort}/live`);
  const done = new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      const job = msg.jobs?.find((j) => j.status === 'done');
      if (job) resolve(job);
    });
  });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const res = await fetch(`${web}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'smoke test of the berth demo' }) });
  if (res.status !== 201) throw new Error(`POST /api/jobs answered ${res.status}`);
  const job = await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error('no job done within 5 s')), 5000).unref())]);
  if (job.result?.words !== 6) throw new Error(`the job's result is wrong: ${JSON.stringify(job.result)}`);
  ws.close();

  const exits = children.map((child) => new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code))));
  for (const child of children) child.kill('SIGTERM');
  const codes = await Promise.race([Promise.all(exits), new Promise((resolve) => setTimeout(() => resolve('timeout'), 3000).unref())]);
  if (codes === 'timeout' || codes.some((code) => code !== 0)) throw new Error(`services did not all exit 0 on SIGTERM: ${codes}`);
}

try {
  await main();
  process.stdout.write('berth demo smoke test: ok (web, api and worker ran a job end to end)\n');
} catch (err) {
  process.stdout.write(`berth demo smoke test FAILED: ${err.message}\n${output.join('')}`);
  process.exitCode = 1;
} finally {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
}
