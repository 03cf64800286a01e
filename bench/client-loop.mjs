// Runs in its own process so the measured client does not share the server's event loop, as a real
// client would not: POSTs one Run Command with wait=true N times and prints the latencies (ms) as JSON.
const [url, token, hostId, count] = process.argv.slice(2);
const samples = [];
for (let i = 0; i < Number(count); i++) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/commands`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ targets: { hostIds: [hostId] }, parameters: { commands: ['true'] }, wait: 10 }),
    signal: AbortSignal.timeout(30_000),
  });
  const body = await res.json();
  samples.push(performance.now() - t0);
  if (body.status !== 'Success') {
    process.stderr.write(`round trip ${i} ended ${body.status ?? res.status}: ${JSON.stringify(body)}\n`);
    process.exit(1);
  }
}
process.stdout.write(JSON.stringify(samples));
