/**
 * The shell script one invocation runs, and its file: how commands become one script with a status
 * line after each command, and what a warm shell needs on top (see warm-shell.ts).
 */
import { existsSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { MARKER_ENV } from './sweep.js';

let defaultShellCache: string | undefined;
/** bash when present, else /bin/sh. */
export function defaultShell(): string {
  defaultShellCache ??= existsSync('/bin/bash') ? '/bin/bash' : '/bin/sh';
  return defaultShellCache;
}

/** Quotes `s` as one single-quoted shell word. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The script run by one shell. The agent passes a pipe as fd 3; the script moves it to `statusFd`
 * (out of the way of commands that use fd 3) and, after each command, writes that command's exit
 * status there as a decimal line, exiting on the first non-zero one. Each command runs via `eval`
 * in the current shell (so `cd`, variables and functions carry over; its own syntax errors,
 * unbalanced quotes or heredocs cannot swallow the rest of the script) with `statusFd` closed, so
 * no process the commands start inherits the status pipe.
 */
export function buildScript(commands: readonly string[], statusFd: number): string {
  const fd = String(statusFd);
  const lines = [`exec ${fd}>&3 3>&-`];
  for (const command of commands) {
    lines.push(
      `eval ${shellQuote(command)} ${fd}>&-`,
      `__berth_rc=$?; command printf '%s\\n' "$__berth_rc" >&${fd}; case $__berth_rc in 0) ;; *) exit "$__berth_rc" ;; esac`,
    );
  }
  return lines.join('\n') + '\n';
}

export function statusFdFor(shell: string): number {
  // bash takes multi-digit descriptors; POSIX sh (dash) only 0-9.
  return basename(shell).startsWith('bash') ? 87 : 9;
}

/** Exports and `cd` that make a warm shell equivalent to one spawned for this invocation. */
export function warmPrelude(invocationId: string, env: Record<string, string> | undefined, cwd: string | undefined): string {
  const lines = [`export ${MARKER_ENV}=${shellQuote(invocationId)}`];
  for (const [name, value] of Object.entries(env ?? {})) {
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) lines.push(`export ${name}=${shellQuote(value)}`);
  }
  if (cwd) lines.push(`cd ${shellQuote(cwd)} || exit 1`);
  return `${lines.join('\n')}\n`;
}

export function writeScript(path: string, script: string, dir: string): void {
  try {
    writeFileSync(path, script, { mode: 0o600 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(path, script, { mode: 0o600 });
  }
}

export function removeScript(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
