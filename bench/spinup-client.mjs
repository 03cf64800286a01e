// The spin-up benchmark's client, in its own process (as a user's CLI and browser are), so it does
// not share the server's event loop: berth's API client (dist/cli/client.js) for `env create`, and
// plain HTTP GETs through the router, as a browser at the environment's URL would send them.
// Reads one JSON request per line on stdin: {name, stack, pool, set}; for each, writes
//   {"type":"answered"}                          as soon as the API answered, then
//   {"type":"done","answered":ms,"elapsed":ms,"timings":{...}}  at the first 200 through the router
// (or {"type":"error","message":...}). Times run from just before the API call.
// {op: "get", url} sends one GET to that environment URL and writes {"type":"got","status":N,"elapsed":ms}.
import http from 'node:http';
import { createInterface } from 'node:readline';
import { ApiClient } from '../dist/cli/client.js';

const [url, token] = process.argv.slice(2);
const client = new ApiClient({ url, token });
const say = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);

/** The status of `GET /` through the router, for the environment's URL. */
function statusOf(envUrl) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: envUrl.port, path: '/', headers: { host: envUrl.host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line);
  if (req.op === 'get') {
    const t0 = performance.now();
    const status = await statusOf(new URL(req.url)).catch(() => 0);
    say({ type: 'got', status, elapsed: performance.now() - t0 });
    continue;
  }
  try {
    const t0 = performance.now();
    const env = await client.post('/v1/environments', { name: req.name, stack: req.stack, pool: req.pool, set: req.set, wait: 300 }, AbortSignal.timeout(300_000));
    const answered = performance.now() - t0;
    say({ type: 'answered' });
    const envUrl = new URL(env.url ?? '');
    for (;;) {
      const status = await statusOf(envUrl).catch(() => 0);
      if (status === 200) break;
      if (performance.now() - t0 > 300_000) throw new Error(`${req.name} never answered 200`);
    }
    say({ type: 'done', answered, elapsed: performance.now() - t0, timings: env.timings });
  } catch (err) {
    say({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  }
}
