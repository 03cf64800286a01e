/**
 * moto in server mode (a real AWS wire-protocol emulator) on loopback, one per test file: started
 * on a port the OS picks, waited for until it answers, killed after. Tests skip when moto is not
 * installed, except in CI (CI or BERTH_REQUIRE_MOTO set), where a missing moto is an error.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/** The Python that has moto; .ci/run puts a venv's first on PATH when the system pip is locked. */
const PYTHON = process.env['BERTH_MOTO_PYTHON'] ?? 'python3';
const START_TIMEOUT_MS = 30_000;

export const motoRequired = Boolean(process.env['CI'] || process.env['BERTH_REQUIRE_MOTO']);

let installed: boolean | undefined;

/** Whether `python3 -m moto.server` can run (moto with its server extras). */
export function motoInstalled(): boolean {
  installed ??= spawnSync(PYTHON, ['-c', 'import moto.server'], { stdio: 'ignore', timeout: 20_000 }).status === 0;
  return installed;
}

/** Whether AWS tests should run; says why when they do not. */
export function motoAvailable(suite: string): boolean {
  if (motoInstalled()) return true;
  if (motoRequired) return true; // run, and fail in startMoto with the reason
  process.stderr.write(`${suite}: SKIPPED, moto is not installed (pip install 'moto[server]'); in CI these tests run.\n`);
  return false;
}

export interface Moto {
  endpoint: string;
  /** Stops the server; idempotent. */
  stop(): Promise<void>;
}

/**
 * `python -m moto.server`, with one difference: requests are answered one at a time. moto's
 * server is threaded but its models are not locked, so concurrent Auto Scaling calls corrupt its
 * group lists (two concurrent detaches from one group can bring an instance back, or lose it) —
 * AWS applies each call atomically, so serialising is the faithful emulation. Connections are
 * still accepted concurrently.
 */
const SERIALIZED_MOTO = `
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))
run_simple(sys.argv[1], 0, serialized, threaded=True)
`;

export async function startMoto(): Promise<Moto> {
  if (!motoInstalled()) {
    throw new Error(`moto is not installed for ${PYTHON} (python3 -m pip install 'moto[server]'); CI must run the AWS driver tests`);
  }
  // Port 0: the OS picks a free port and werkzeug prints it, so parallel runs never collide.
  const child = spawn(PYTHON, ['-c', SERIALIZED_MOTO, '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1', MOTO_PORT: '0' } });
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit); // a crashed test run must not leave moto behind
  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    await stopChild(child);
  };
  try {
    const endpoint = await waitForPort(child);
    await waitUntilAnswers(endpoint);
    return { endpoint, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function waitForPort(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => done(new Error(`moto did not start within ${START_TIMEOUT_MS / 1000} s:\n${output}`)), START_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const port = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1];
      if (port) done(undefined, `http://127.0.0.1:${port}`);
    };
    const onExit = (code: number | null): void => done(new Error(`moto exited (code ${code}) before it listened:\n${output}`));
    function done(err: Error | undefined, endpoint?: string): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // Keep draining its output, or moto blocks once a pipe buffer fills.
      child.stdout?.resume();
      child.stderr?.resume();
      if (err) reject(err);
      else resolve(endpoint ?? '');
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', onExit);
  });
}

async function waitUntilAnswers(endpoint: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/moto-api/data.json`);
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`moto at ${endpoint} did not answer within ${START_TIMEOUT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Dummy credentials: moto accepts any, and the SDK's chain must not find real ones. */
export const MOTO_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };
export const MOTO_REGION = 'us-east-1';
