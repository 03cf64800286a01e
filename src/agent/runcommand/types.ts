import type { WarmShellPool } from './warm-shell.js';

/** The RunShellScript document as the agent executes it. */
export interface RunShellScriptParams {
  /** Run in order in one shell, so `cd` and variables carry over; the first failing command stops the run. */
  commands: string[];
  /** Must exist; the run fails before starting anything when it does not. */
  workingDirectory?: string;
  /** Seconds; on expiry TERM goes to the whole process group, KILL after the grace period. */
  executionTimeoutSeconds: number;
  env?: Record<string, string>;
  /** This command's time between TERM and KILL; default ExecutorOptions.killGraceMs. */
  killGraceSeconds?: number;
}

export type ExecutionStatus = 'Success' | 'Failed' | 'TimedOut' | 'Cancelled';

export interface StreamCapture {
  /** Head and tail of the stream joined by a marker line when truncated; the whole stream otherwise. */
  text: string;
  truncated: boolean;
  /** Bytes the stream produced in total. */
  bytes: number;
}

export interface ExecutionResult {
  status: ExecutionStatus;
  /** e.g. "command 2 of 3 exited with 1", "execution timed out after 1 s", "working directory /x does not exist". */
  statusDetail: string;
  /** One exit code per command that ran, in order. A command ended by a signal reports 128 + signal number. */
  exitCodes: number[];
  stdout: StreamCapture;
  stderr: StreamCapture;
  startedAt: Date;
  finishedAt: Date;
}

export interface ExecutorOptions {
  /** Per-stream limit; past it the head and tail (half each) are kept. Default 64 KiB. */
  outputLimitBytes?: number;
  /** Time between TERM and KILL on timeout or cancel. Default 5000 ms. */
  killGraceMs?: number;
  /** Shell used to run the script; default bash when present, else /bin/sh. */
  shell?: string;
  /** Directory for the generated script files. */
  scratchDir: string;
  /**
   * Shells started ahead of time (see warm-shell.ts). When one is idle and its shell is the one to
   * use, the run takes it instead of spawning; the script then sets the environment and the working
   * directory itself. Without it (or when none is idle) the run spawns a shell as usual.
   */
  warmShells?: WarmShellPool;
}

export interface RunCallbacks {
  /** Aborting cancels the run: TERM to the group, KILL after the grace period, status Cancelled. */
  signal?: AbortSignal;
  /** Live output as it is produced (raw, untruncated chunks). */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
  /** Called once the shell has started, with its pid (which is also its process group id). */
  onSpawn?: (pid: number) => void;
}
