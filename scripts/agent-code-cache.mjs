// Makes the agent's code cache (agent.cache beside agent.cjs) after a rehearsal of a host's first
// command (src/agent/rehearsal.ts): the loader, started as hosts start it, connects an agent to the
// stand-in server here, which plays a host's first session on the real protocol (welcome, the user's
// tags, `run` of `true`, ack once its result came, close); then the loader writes the cache.
// Without the rehearsal (it failed, or took over 10 s) the cache holds what loading compiles.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';

const RUN_ID = 'c-rehearsal';

/** Resolves to { rehearsed, error? }; throws only when no cache could be written at all. */
export async function writeAgentCodeCache(outDir, nodeFlags, nodePath = process.execPath) {
  const loader = join(outDir, 'berth-agent.cjs');
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/agent' });
  await new Promise((resolve, reject) => wss.once('listening', resolve).once('error', reject));
  const played = { result: false };
  wss.on('connection', (ws) => {
    const send = (msg) => ws.send(JSON.stringify(msg));
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === 'hello') {
        send({ type: 'welcome', heartbeatIntervalMs: 30_000, serverTime: new Date().toISOString() });
        send({ type: 'tags', tags: { 'berth:group': 'rehearsal', user: 'rehearsal' } });
        send({ type: 'run', invocationId: RUN_ID, document: 'RunShellScript', parameters: { commands: ['true'], executionTimeoutSeconds: 60, env: { USER_NAME: 'rehearsal' } }, streamOutput: true, deliverBy: new Date(Date.now() + 10_000).toISOString() });
      } else if (msg.type === 'result' && msg.invocationId === RUN_ID) {
        played.result = msg.result?.status === 'Success';
        send({ type: 'ack', invocationId: RUN_ID });
        // After the ack is handled: the agent closes its side once the server's close arrives.
        setTimeout(() => ws.close(1000, 'rehearsal done'), 20);
      }
    });
  });
  try {
    const url = `ws://127.0.0.1:${wss.address().port}/agent`;
    const first = await runLoader(nodePath, [...nodeFlags, loader, '--write-code-cache', url]);
    if (first.code === 0 && played.result) return { rehearsed: true };
    const error = first.code === 0 ? 'the rehearsed command did not succeed' : first.stderr.trim() || `exit ${first.code}`;
    const plain = await runLoader(nodePath, [...nodeFlags, loader, '--write-code-cache']);
    if (plain.code !== 0) throw new Error(plain.stderr.trim() || `exit ${plain.code}`);
    return { rehearsed: false, error };
  } finally {
    for (const client of wss.clients) client.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
}

function runLoader(nodePath, args) {
  return new Promise((resolve) => {
    const child = spawn(nodePath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stderr: err.message });
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stderr: stderr || (signal ? `killed by ${signal}` : '') });
    });
  });
}
