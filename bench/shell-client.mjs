// The shell benchmark's client, in its own process (as `berth host shell` would be). Each mode runs
// either through berth (a WebSocket to the API: server, agent channel, a pty on the host) or, as the
// baseline, on a pty of this machine made the same way (`script`), read by this same code:
//   open N        open a session running `echo ready` N times; ms until its first output (a login
//                 shell's start is the shell's own: bash -l with Debian's profile takes ~200 ms)
//   echo N        in one session, type one character N times; ms until its echo comes back
//   flood BYTES   in one session, `head -c BYTES /dev/zero`, ms until all of it arrived
// Usage: node shell-client.mjs (berth URL TOKEN HOST | local) MODE ARG. Prints JSON.
import { spawn } from 'node:child_process';
import { WebSocket } from 'ws';

const args = process.argv.slice(2);
const local = args[0] === 'local';
const [url, token, hostId] = local ? [] : args.slice(1, 4);
const [mode, arg] = local ? args.slice(1) : args.slice(4);

/** A terminal session: write bytes, get bytes, close. */
function open(command) {
  return new Promise((resolve, reject) => {
    const listeners = new Set();
    const emit = (data) => listeners.forEach((l) => l(data));
    if (local) {
      const inner = `stty rows 24 cols 80 2>/dev/null; ${command ? `exec bash -c '${command}'` : 'exec bash -l'}`;
      const child = spawn('script', ['--quiet', '--flush', '--return', '--command', inner, '/dev/null'], { env: { ...process.env, TERM: 'xterm-256color', SHELL: '/bin/bash' }, detached: true });
      child.stdout.on('data', emit);
      child.once('spawn', () => resolve({ send: (b) => child.stdin.write(b), on: (l) => listeners.add(l), close: () => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone already */ } } }));
      child.once('error', reject);
      return;
    }
    const q = new URLSearchParams({ cols: '80', rows: '24', term: 'xterm-256color', ...(command ? { command } : {}) });
    const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/hosts/${hostId}/shell?${q}`, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    ws.on('message', (data, binary) => binary && emit(data));
    ws.once('open', () => resolve({ send: (b) => ws.send(b, { binary: true }), on: (l) => listeners.add(l), close: () => ws.close() }));
    ws.once('error', reject);
  });
}

const next = (session, test) => new Promise((resolve) => {
  let seen = 0;
  session.on((data) => {
    seen += data.length;
    if (test(data, seen)) resolve(seen);
  });
});

const samples = [];
if (mode === 'open') {
  for (let i = 0; i < Number(arg); i++) {
    const t0 = performance.now();
    let first;
    const got = new Promise((r) => (first = r));
    const session = await open('echo ready; sleep 1');
    session.on(() => first());
    await got;
    samples.push(performance.now() - t0);
    session.close();
    await new Promise((r) => setTimeout(r, 20));
  }
} else if (mode === 'echo') {
  // The terminal echoes what is typed (its line discipline, in the host's kernel): the round trip is
  // the client's key to the host's pty and its echo back, as a person typing sees it.
  const session = await open('exec cat >/dev/null');
  await new Promise((r) => setTimeout(r, 500));
  let pending;
  session.on((data) => pending && data.includes(0x78) && pending());
  for (let i = 0; i < Number(arg); i++) {
    const t0 = performance.now();
    await new Promise((r) => {
      pending = r;
      session.send(Buffer.from('x'));
    });
    pending = undefined;
    samples.push(performance.now() - t0);
  }
  session.close();
} else if (mode === 'flood') {
  const bytes = Number(arg);
  const session = await open(`sleep 0.3; head -c ${bytes} /dev/zero; sleep 5`);
  const t0 = performance.now();
  let start;
  await next(session, (data, seen) => {
    start ??= performance.now();
    return seen >= bytes;
  });
  samples.push(performance.now() - (start ?? t0));
  session.close();
}
process.stdout.write(JSON.stringify({ samples }));
process.exit(0);
