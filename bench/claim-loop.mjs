// The claim benchmarks' HTTP client, in its own process (as a real client would be), so it does
// not share the server's event loop; it is berth's API client (dist/cli/client.js). Modes:
//   warm POOL N        claim (+ `true` as init) N times on a full pool; each host is released after,
//                      and the next claim waits until the pool is full again (so every claim is warm)
//   cold N             the same work without a pool: launch a host, wait for its agent, run `true`
//   sustained POOL S C claims (+ release) from C concurrent clients for S seconds
//   burst POOL N C     N claims from C concurrent clients on a stocked pool, nothing released (the
//                      claim path's own capacity); also prints the claimed host ids
// BENCH_REUSE=1 releases with reuse (the host is reset and returns to the pool) instead of terminating.
// Prints {samples: [ms...], count, seconds, hits} as JSON.
import { ApiClient } from '../dist/cli/client.js';

const [url, token, mode, ...args] = process.argv.slice(2);
// berth's own API client (what the CLI uses); a failed call throws with the server's message.
const client = new ApiClient({ url, token });
const call = (method, path, body) => {
  const signal = AbortSignal.timeout(120_000);
  if (method === 'GET') return client.get(path, signal);
  if (method === 'POST') return client.post(path, body, signal);
  if (method === 'DELETE') return client.delete(path);
  throw new Error(`no ${method}`);
};
const full = async (pool) => {
  for (;;) {
    const p = await call('GET', `/v1/pools/${pool}`);
    if (p.status.ready >= p.size && p.status.warming === 0 && p.status.retiring === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
};
const samples = [];
let hits = 0;
if (mode === 'warm') {
  const [pool, n] = args;
  for (let i = 0; i < Number(n); i++) {
    await full(pool);
    const t0 = performance.now();
    const claim = await call('POST', `/v1/pools/${pool}/claims`, { group: `bench-${i % 4}`, init: ['true'] });
    samples.push(performance.now() - t0);
    if (claim.hit) hits++;
    if (process.env.BENCH_TIMINGS) process.stderr.write(`${JSON.stringify(claim.timings)}\n`);
    await call('POST', `/v1/hosts/${claim.host.id}/release`, { reuse: process.env.BENCH_REUSE === '1' });
  }
} else if (mode === 'cold') {
  const [n] = args;
  for (let i = 0; i < Number(n); i++) {
    const t0 = performance.now();
    const host = await call('POST', '/v1/hosts', {});
    const cmd = await call('POST', '/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: ['true'] }, wait: 30 });
    samples.push(performance.now() - t0);
    if (cmd.status !== 'Success') throw new Error(`init ended ${cmd.status}`);
    await call('DELETE', `/v1/hosts/${host.id}`);
  }
} else if (mode === 'sustained') {
  const [pool, seconds, concurrency] = args;
  const until = performance.now() + Number(seconds) * 1000;
  let i = 0;
  const worker = async () => {
    while (performance.now() < until) {
      const t0 = performance.now();
      const claim = await call('POST', `/v1/pools/${pool}/claims`, { group: `load-${i++ % 16}`, init: ['true'] });
      samples.push(performance.now() - t0);
      if (claim.hit) hits++;
      await call('POST', `/v1/hosts/${claim.host.id}/release`, { reuse: process.env.BENCH_REUSE === '1' });
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Number(concurrency) }, worker));
  process.stdout.write(JSON.stringify({ samples, count: samples.length, seconds: (performance.now() - t0) / 1000, hits }));
  process.exit(0);
}
if (mode === 'burst') {
  const [pool, n, concurrency] = args;
  const hosts = [];
  let left = Number(n);
  const worker = async () => {
    while (left > 0) {
      left--;
      const t0 = performance.now();
      const claim = await call('POST', `/v1/pools/${pool}/claims`, { group: `burst-${left % 16}`, init: ['true'] });
      samples.push(performance.now() - t0);
      if (claim.hit) hits++;
      hosts.push(claim.host.id);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Number(concurrency) }, worker));
  process.stdout.write(JSON.stringify({ samples, count: samples.length, seconds: (performance.now() - t0) / 1000, hits, hosts }));
  process.exit(0);
}
process.stdout.write(JSON.stringify({ samples, count: samples.length, hits }));
