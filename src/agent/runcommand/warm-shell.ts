/**
 * A shell started ahead of time, so a command does not wait for fork + exec + shell start-up (about
 * 2 ms of a `true` round trip's budget; a warm shell answers in well under 1 ms). It is the warm pool
 * idea applied inside the agent: one idle shell, its own session and process group, blocked reading
 * the path of the script to source. Each warm shell runs one script, then a new one is started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';

/**
 * Reads one line (the script path) from fd 4, closes it, sources the script. The path does not come
 * through stdin because Node's child pipes are socket pairs, and a top-level bash started with a socket
 * on stdin believes it was started by rshd/sshd and sources ~/.bashrc (100 ms here, and surprising).
 * stdin is /dev/null, as for a cold start.
 */
const BOOTSTRAP = 'IFS= read -r __berth_script <&4 || exit 0; exec 4<&-; . "$__berth_script"';

export class WarmShellPool {
  private idle: ChildProcess | undefined;
  private stopped = false;

  constructor(
    readonly shell: string,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  /** Starts the idle shell if there is none. Cheap to call often. */
  fill(): void {
    if (this.stopped || this.idle) return;
    let child: ChildProcess;
    try {
      child = spawn(this.shell, ['-c', BOOTSTRAP], { env: this.env, cwd: '/', detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'] });
    } catch {
      return; // the cold path still works
    }
    child.once('error', () => {
      if (this.idle === child) this.idle = undefined;
    });
    child.once('exit', () => {
      if (this.idle === child) this.idle = undefined;
    });
    pathPipe(child)?.on('error', () => undefined);
    this.idle = child;
  }

  /** The idle shell's pid (its process group and session: it leads both), if there is one. */
  idlePid(): number | undefined {
    const child = this.idle;
    return child && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
  }

  /**
   * Hands out the idle shell (or undefined when there is none) and makes it source `scriptPath`.
   * The caller owns the process from here on.
   */
  take(scriptPath: string): ChildProcess | undefined {
    const child = this.idle;
    this.idle = undefined;
    const pipe = child ? pathPipe(child) : undefined;
    if (!child || !pipe || child.exitCode !== null || child.signalCode !== null || pipe.destroyed) return undefined;
    pipe.end(`${scriptPath}\n`);
    return child;
  }

  /** Ends the idle shell (its path pipe closes, `read` fails, it exits). */
  stop(): void {
    this.stopped = true;
    const idle = this.idle;
    if (idle) pathPipe(idle)?.end();
    this.idle = undefined;
  }
}

function pathPipe(child: ChildProcess): Writable | undefined {
  return (child.stdio as unknown as (Writable | null)[])[4] ?? undefined;
}
