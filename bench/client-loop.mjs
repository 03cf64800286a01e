// Runs in its own process so the measured client does not share the server's event loop, as a real
// client would not: POSTs one Run Command (`true`) with wait N times and prints the latencies (ms) as
// JSON. The client is berth's own API client (dist/cli/client.js, what the CLI uses); with
// BENCH_CLIENT=fetch, a plain fetch() per call instead (the comparison row of the bench). With
// BENCH_GAP_MS, each trip comes that long after the previous one ended (the machine idle between).
import { ApiClient } from '../dist/cli/client.js';

const [url, token, hostId, count] = process.argv.slice(2);
const body = { targets: { hostIds: [hostId] }, parameters: { commands: ['true'] }, wait: 10 };
const client = new ApiClient({ url, token });
const viaFetch = async () => {
  const res = await fetch(`${url}/v1/commands`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  return res.json();
};
const viaClient = () => client.post('/v1/commands', body, AbortSignal.timeout(30_000));
const send = process.env.BENCH_CLIENT === 'fetch' ? viaFetch : viaClient;
const samples = [];
const gapMs = Number(process.env.BENCH_GAP_MS ?? 0);
for (let i = 0; i < Number(count); i++) {
  if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
  const t0 = performance.now();
  const answer = await send();
  samples.push(performance.now() - t0);
  if (answer.status !== 'Success') {
    process.stderr.write(`round trip ${i} ended ${answer.status}: ${JSON.stringify(answer)}\n`);
    process.exit(1);
  }
}
process.stdout.write(JSON.stringify(samples));
