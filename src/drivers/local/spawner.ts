/**
 * Starts processes for the local driver from a small helper process instead of the server itself.
 * Node spawns by forking the calling process, and a fork costs in proportion to the caller's
 * mapped memory: in a server holding the embedded store (~800 MB mapped) every spawn blocked the
 * event loop for ~18 ms, and a host launch plus its termination cost ~60 ms of it — time every
 * claim and command waited. The helper is started before the store opens, stays small, and runs
 * the spawns on its own event loop. It exits when the server does (its IPC channel closes); hosts
 * it started live on (they are detached, as before).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { EventEmitter } from 'node:events';
import type { CommandResult } from './proc.js';

/** The helper's code (CommonJS, run with `node -e`): so it works the same from sources and from the build. */
const HELPER = String.raw`
const { spawn } = require('child_process');
const fs = require('fs');
const children = new Map();
const send = (msg) => { if (process.connected) process.send(msg); };
process.on('disconnect', () => process.exit(0));
process.on('message', (m) => {
  try {
    if (m.op === 'run') {
      const c = spawn(m.file, m.args, { stdio: ['pipe', 'pipe', 'pipe'], env: m.env });
      let out = '', err = '', failed = false;
      c.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
      c.stderr.setEncoding('utf8').on('data', (d) => { err += d; });
      c.on('error', (e) => { failed = true; send({ id: m.id, type: 'error', message: e.message }); });
      c.on('close', (code, signal) => { if (!failed) send({ id: m.id, type: 'done', code, signal, stdout: out, stderr: err }); });
      c.stdin.on('error', () => {});
      c.stdin.end(m.input || '');
    } else if (m.op === 'launch') {
      const fd = fs.openSync(m.logPath, 'a', 0o600);
      let c;
      try { c = spawn(m.file, m.args, { detached: true, stdio: ['pipe', fd, fd, 'pipe'], env: m.env, cwd: m.cwd }); } finally { fs.closeSync(fd); }
      children.set(m.id, c);
      c.stdin.on('error', () => {});
      c.on('error', (e) => send({ id: m.id, type: 'error', message: e.message }));
      send({ id: m.id, type: 'spawned', pid: c.pid });
      const ready = c.stdio[3];
      ready.setEncoding('utf8');
      ready.on('data', (d) => send({ id: m.id, type: 'data', chunk: d }));
      ready.on('close', () => send({ id: m.id, type: 'close' }));
      ready.on('error', () => {});
      c.unref();
    } else if (m.op === 'stdin') {
      const c = children.get(m.id);
      if (c && c.stdin) c.stdin.end(m.data === undefined ? undefined : m.data);
    } else if (m.op === 'release') {
      const c = children.get(m.id);
      if (c) { if (c.stdin) c.stdin.destroy(); if (c.stdio[3]) c.stdio[3].destroy(); children.delete(m.id); }
    }
  } catch (e) {
    send({ id: m.id, type: 'error', message: String((e && e.message) || e) });
  }
});
`;

type HelperMessage =
  | { id: number; type: 'done'; code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
  | { id: number; type: 'error'; message: string }
  | { id: number; type: 'spawned'; pid?: number }
  | { id: number; type: 'data'; chunk: string }
  | { id: number; type: 'close' };

/** What the launcher code needs of a spawned launcher, local or remote. */
export interface LauncherChild {
  readonly pid: number | undefined;
  readonly stdin: Writable | null;
  /** fd 3 of the launcher, where it reports "ready <pid>". */
  readonly readyPipe: Readable | undefined;
  on(event: 'error', listener: (err: Error) => void): unknown;
  unref(): void;
}

export interface LaunchRequest {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  logPath: string;
}

export class Spawner {
  private nextId = 1;
  private readonly handlers = new Map<number, (msg: HelperMessage) => void>();

  private constructor(private readonly helper: ChildProcess) {
    helper.on('message', (msg: HelperMessage) => this.handlers.get(msg.id)?.(msg));
    helper.on('exit', () => {
      for (const [id, handler] of this.handlers) handler({ id, type: 'error', message: 'the spawn helper exited' });
      this.handlers.clear();
    });
  }

  /** Starts the helper; call while the process is still small (before the store opens). */
  static start(): Spawner {
    const helper = spawn(process.execPath, ['-e', HELPER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: {}, cwd: '/' });
    // Neither the helper nor its channel keep the server (or a test) alive.
    helper.unref();
    (helper as unknown as { channel?: { unref(): void } }).channel?.unref();
    return new Spawner(helper);
  }

  get alive(): boolean {
    return this.helper.exitCode === null && this.helper.signalCode === null && this.helper.connected;
  }

  /** Runs a command to completion, as proc.ts runCommand does. */
  run(file: string, args: string[], input?: string, env: Record<string, string> = {}): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.track(id, (msg) => {
        this.untrack(id);
        if (msg.type === 'done') resolve({ code: msg.code, signal: msg.signal, stdout: msg.stdout, stderr: msg.stderr });
        else reject(new Error(msg.type === 'error' ? msg.message : `unexpected ${msg.type} from the spawn helper`));
      });
      this.post({ op: 'run', id, file, args, input, env }, id);
    });
  }

  /** Spawns a launcher (detached, stdio to its console log, fd 3 a pipe); resolves once it runs. */
  launch(req: LaunchRequest): Promise<LauncherChild> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const events = new EventEmitter();
      const readyPipe = new PassThrough({ encoding: 'utf8' });
      let pid: number | undefined;
      let spawned = false;
      const stdin = new Writable({
        // Ending the gate must not release the launch: only an explicit destroy() does.
        autoDestroy: false,
        write: (chunk: Buffer, _enc, done) => {
          this.post({ op: 'stdin', id, data: chunk.toString() }, id);
          done();
        },
        final: (done) => {
          this.post({ op: 'stdin', id }, id);
          done();
        },
        destroy: (_err, done) => {
          // The launch is settled: the helper drops its pipes, and we stop listening.
          this.post({ op: 'release', id }, id);
          this.untrack(id);
          done(null);
        },
      });
      const child: LauncherChild = {
        get pid() {
          return pid;
        },
        stdin,
        readyPipe,
        on: (event, listener) => events.on(event, listener),
        unref: () => undefined,
      };
      this.track(id, (msg) => {
        switch (msg.type) {
          case 'spawned':
            spawned = true;
            pid = msg.pid;
            resolve(child);
            return;
          case 'data':
            readyPipe.write(msg.chunk);
            return;
          case 'close':
            this.untrack(id);
            readyPipe.end();
            return;
          case 'error':
            if (!spawned) {
              this.untrack(id);
              reject(new Error(msg.message));
              return;
            }
            events.emit('error', new Error(msg.message));
            return;
          case 'done':
            return;
        }
      });
      this.post({ op: 'launch', id, ...req }, id);
    });
  }

  /** The channel keeps the process alive only while a request is waiting for the helper. */
  private track(id: number, handler: (msg: HelperMessage) => void): void {
    this.handlers.set(id, handler);
    if (this.handlers.size === 1) this.channel()?.ref();
  }

  private untrack(id: number): void {
    if (this.handlers.delete(id) && this.handlers.size === 0) this.channel()?.unref();
  }

  private channel(): { ref(): void; unref(): void } | undefined {
    return (this.helper as unknown as { channel?: { ref(): void; unref(): void } }).channel;
  }

  close(): void {
    if (this.helper.connected) this.helper.disconnect();
  }

  private post(msg: Record<string, unknown>, id: number): void {
    if (!this.alive) {
      const handler = this.handlers.get(id);
      handler?.({ id, type: 'error', message: 'the spawn helper is not running' });
      return;
    }
    this.helper.send(msg);
  }
}
