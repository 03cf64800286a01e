/**
 * Each service's env file (`<name>.env` in the state dir, named to the service by BERTH_ENV_FILE): its
 * spec's env in dotenv form. A service that reloads on a signal re-reads it there, since a running
 * process's environment cannot be changed from outside. Only spec.env is written, not the agent's own
 * environment: the file says what the service's configuration is, nothing of the host's.
 */
import { closeSync, fchownSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where the supervisor keeps the env file of service `name`. */
export function envFilePath(stateDir: string, name: string): string {
  return join(stateDir, `${name}.env`);
}

/**
 * `NAME="value"` lines, sorted by name. Every value is double-quoted with backslash escapes for
 * `\`, `"`, `$`, newline and carriage return, so any value reads back exactly (src/stacks/dotenv.ts
 * reads this form) and a shell that sources the file expands nothing.
 */
export function formatEnvFile(env: Readonly<Record<string, string>>): string {
  return Object.keys(env)
    .sort()
    .map((name) => `${name}="${escapeValue(env[name] ?? '')}"\n`)
    .join('');
}

function escapeValue(value: string): string {
  return value.replace(/[\\"$\n\r]/g, (char) => {
    if (char === '\n') return '\\n';
    if (char === '\r') return '\\r';
    return `\\${char}`;
  });
}

/**
 * Writes the file atomically (a reader never sees half of it): a fresh temp file, mode 0600 (values may
 * be secrets), owned by the service's user when it has one, renamed over the old file.
 */
export function writeEnvFile(path: string, env: Readonly<Record<string, string>>, owner?: { uid?: number; gid?: number }): void {
  const tmp = `${path}.tmp`;
  try {
    // A leftover temp file would keep its old mode and owner: start from a new one.
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeFileSync(fd, formatEnvFile(env));
      if (owner?.uid !== undefined) fchownSync(fd, owner.uid, owner.gid ?? -1);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new Error(`cannot write the env file ${path}: ${(e as Error).message}`, { cause: e });
  }
}

export function removeEnvFile(path: string): void {
  rmSync(path, { force: true });
}
