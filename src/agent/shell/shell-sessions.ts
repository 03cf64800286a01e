/**
 * The agent's interactive shells: each session is a pseudo-terminal made by util-linux `script`
 * (Node has no way to open one without a native module; `script` is in every Debian-like base),
 * with the session's program inside it. Output goes to the server in frames, under a window of
 * unacknowledged bytes; input, resizes and the close come back.
 *
 * A session's life: opening -> open -> (closing) -> ended. It ends when the program exits, when
 * the server closes it (the terminal hangs up, as on a dropped SSH connection: see close), or when
 * the agent's connection drops (no one can see the terminal any more).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { AgentMessage, ServerMessage } from '../../protocol/messages.js';
import { SHELL_MAX_SESSIONS_PER_HOST, SHELL_WINDOW_BYTES, type ShellOpen } from '../../protocol/shell.js';
import { shellQuote } from '../runcommand/script.js';

/** After the hang-up, what is still running this long is killed. */
const HANGUP_GRACE_MS = 2000;

export interface ShellSessionsOptions {
  /** Sends a frame to the server; false when the connection is down. */
  send: (msg: AgentMessage) => boolean;
  /** The environment a session starts from (the agent's, with what commands also get). */
  env: () => NodeJS.ProcessEnv;
  /** The shell a session runs, and that runs its command; default bash when present, else /bin/sh. */
  shell?: string;
  /** The `script` program; default `script` from PATH. */
  script?: string;
  windowBytes?: number;
  maxSessions?: number;
  log: (line: string) => void;
}

interface Session {
  id: string;
  child: ChildProcess;
  /** Output bytes sent and not yet acknowledged. */
  inFlight: number;
  paused: boolean;
  closing: boolean;
  killTimer?: NodeJS.Timeout;
}

type Frame<T extends ServerMessage['type']> = Extract<ServerMessage, { type: T }>;

export class ShellSessions {
  private readonly sessions = new Map<string, Session>();
  private readonly window: number;

  constructor(private readonly opts: ShellSessionsOptions) {
    this.window = opts.windowBytes ?? SHELL_WINDOW_BYTES;
  }

  get count(): number {
    return this.sessions.size;
  }

  /** Handles a shell frame; false when `msg` is not one. */
  handle(msg: ServerMessage): boolean {
    switch (msg.type) {
      case 'shellOpen':
        this.open(msg);
        return true;
      case 'shellInput':
        this.input(msg);
        return true;
      case 'shellResize':
        this.resize(msg);
        return true;
      case 'shellClose':
        this.close(msg.sessionId);
        return true;
      case 'shellAck':
        this.ack(msg);
        return true;
      default:
        return false;
    }
  }

  /** Hangs up every session (the connection dropped, or the agent stops). */
  closeAll(): void {
    for (const id of [...this.sessions.keys()]) this.close(id);
  }

  private open(msg: ShellOpen): void {
    const id = msg.sessionId;
    if (this.sessions.has(id)) return; // a repeated frame
    const refuse = (error: string): void => void this.opts.send({ type: 'shellExit', sessionId: id, code: null, signal: null, error });
    if (this.sessions.size >= (this.opts.maxSessions ?? SHELL_MAX_SESSIONS_PER_HOST)) {
      return refuse(`this host has ${this.sessions.size} shell sessions open already (the most it runs at once); close one first`);
    }
    if (msg.cwd !== undefined && !isDirectory(msg.cwd)) {
      return refuse(`working directory ${msg.cwd} does not exist on the host`);
    }
    const shell = this.opts.shell ?? (existsSync('/bin/bash') ? '/bin/bash' : '/bin/sh');
    // The terminal's size is set from inside before the program starts, so it draws right at once.
    const program = msg.user ? suCommand(msg.user, msg.command) : msg.command ? `exec ${shell} -c ${shellQuote(msg.command)}` : `exec ${shell} -l`;
    const inner = `stty rows ${msg.rows} cols ${msg.cols} 2>/dev/null; ${program}`;
    let child: ChildProcess;
    try {
      child = spawn(this.opts.script ?? 'script', ['--quiet', '--flush', '--return', '--command', inner, '/dev/null'], {
        cwd: msg.cwd ?? (msg.user ? '/' : homeOf('root')),
        env: { ...this.opts.env(), TERM: msg.term, SHELL: shell, BERTH_SHELL_SESSION: id },
        detached: true, // its own process group: the hang-up reaches all of it
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    } catch (err) {
      return refuse(`cannot start a terminal: ${err instanceof Error ? err.message : String(err)}`);
    }
    const session: Session = { id, child, inFlight: 0, paused: false, closing: false };
    this.sessions.set(id, session);
    let startError: string | undefined;
    child.once('error', (err: NodeJS.ErrnoException) => {
      startError =
        err.code === 'ENOENT'
          ? 'this host has no `script` program (util-linux), which makes its terminals; add it to the image (Debian: bsdutils)'
          : `cannot start a terminal: ${err.message}`;
    });
    child.stdin?.on('error', () => undefined); // the program went away mid-write: its exit says so
    const onData = (chunk: Buffer): void => this.output(session, chunk);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('spawn', () => this.opts.send({ type: 'shellOpened', sessionId: id, pid: child.pid ?? 0 }));
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(session.killTimer);
      this.sessions.delete(id);
      if (startError) return refuse(startError);
      this.opts.send({ type: 'shellExit', sessionId: id, code, signal, ...(session.closing ? { error: 'the session was closed' } : {}) });
    });
  }

  private output(session: Session, chunk: Buffer): void {
    session.inFlight += chunk.length;
    this.opts.send({ type: 'shellOutput', sessionId: session.id, data: chunk.toString('base64') });
    if (session.inFlight > this.window && !session.paused) {
      session.paused = true;
      session.child.stdout?.pause();
      session.child.stderr?.pause();
    }
  }

  private ack(msg: Frame<'shellAck'>): void {
    const session = this.sessions.get(msg.sessionId);
    if (!session) return;
    session.inFlight = Math.max(0, session.inFlight - msg.bytes);
    if (session.paused && session.inFlight <= this.window / 2) {
      session.paused = false;
      session.child.stdout?.resume();
      session.child.stderr?.resume();
    }
  }

  /** Writes into the terminal; tells the server once written (its input window, see shell.ts). */
  private input(msg: Frame<'shellInput'>): void {
    const stdin = this.sessions.get(msg.sessionId)?.child.stdin;
    const data = Buffer.from(msg.data, 'base64');
    if (!stdin || stdin.destroyed || data.length === 0) return;
    stdin.write(data, (err) => {
      if (!err) this.opts.send({ type: 'shellInputTaken', sessionId: msg.sessionId, bytes: data.length });
    });
  }

  /**
   * The size of a running terminal is set on its pty (`stty -F`), which signals SIGWINCH to the
   * program in the foreground, as a terminal emulator's resize does.
   */
  private resize(msg: Frame<'shellResize'>): void {
    const session = this.sessions.get(msg.sessionId);
    const pty = session?.child.pid ? ptyOf(session.child.pid) : undefined;
    if (!pty) return;
    const stty = spawn('stty', ['-F', pty, 'rows', String(msg.rows), 'cols', String(msg.cols)], { stdio: 'ignore' });
    stty.once('error', (err) => this.opts.log(`shell ${msg.sessionId}: resize: ${err.message}`));
  }

  /**
   * A hang-up, as a terminal's: SIGHUP to the program and to every process group of its session
   * (its jobs: what the kernel does for the foreground one, and bash for the others; done here so
   * that every shell's jobs get it). What ignores it on purpose (`nohup`) or left the session
   * (`setsid`) keeps running, as after an SSH logout; a host's reset or terminate ends all. What
   * neither exits nor lets go of the terminal is killed after the grace.
   */
  private close(id: string): void {
    const session = this.sessions.get(id);
    if (!session || session.closing) return;
    session.closing = true;
    const pid = session.child.pid;
    if (!pid) return;
    // (SIGHUP to `script` instead would have it end the shell its own way, and the jobs live on.)
    const program = childOf(pid);
    if (program) {
      signal(program, 'SIGHUP');
      for (const group of groupsOfSession(program)) if (group !== program) signalGroup(group, 'SIGHUP');
    } else signalGroup(pid, 'SIGHUP');
    session.killTimer = setTimeout(() => {
      signalGroup(pid, 'SIGKILL');
      if (program) signalGroup(program, 'SIGKILL');
    }, HANGUP_GRACE_MS);
    session.killTimer.unref();
  }
}

function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  signal(-pgid, sig);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** The process groups of the processes in session `sid` (fields of /proc/PID/stat: pgrp, session). */
function groupsOfSession(sid: number): Set<number> {
  const groups = new Set<number>();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return groups;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // After the command name (which may hold spaces): state ppid pgrp session.
      const [, , pgrp, session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(session) === sid) groups.add(Number(pgrp));
    } catch {
      // gone meanwhile
    }
  }
  return groups;
}

/** The program `script` started (it leads the terminal's session). */
function childOf(pid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

/** The pty the session's program has as its terminal, e.g. /dev/pts/3. */
function ptyOf(scriptPid: number): string | undefined {
  const program = childOf(scriptPid);
  if (!program) return undefined;
  try {
    const target = readlinkSync(`/proc/${program}/fd/0`);
    return target.startsWith('/dev/pts/') ? target : undefined;
  } catch {
    return undefined;
  }
}

function suCommand(user: string, command: string | undefined): string {
  return command ? `exec su -l ${user} -c ${shellQuote(command)}` : `exec su -l ${user}`;
}

function homeOf(user: string): string {
  const home = user === 'root' ? '/root' : `/home/${user}`;
  return statSync(home, { throwIfNoEntry: false })?.isDirectory() ? home : '/';
}

/** A directory there; false for anything else, a name that cannot be one (NUL, too long) included. */
function isDirectory(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isDirectory() === true;
  } catch {
    return false;
  }
}
