/** How a service's processes (and its readiness command) are run: env, cwd and user. */
import type { ServiceSpec } from '../../protocol/messages.js';
import { resolveUser } from './user.js';

/** Names the file holding the service's env (env-file.ts), which it may re-read on its reload signal. */
export const ENV_FILE_ENV = 'BERTH_ENV_FILE';

export interface RunContext {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
}

/**
 * The agent's environment, then the user's HOME/USER/LOGNAME (when the service runs as a user), then
 * the service's own env, then BERTH_SERVICE, BERTH_ENV_FILE (`envFile`) and the marker (`NAME=value`)
 * that finds every process of the service. Resolves the user now: /etc/passwd may have changed since
 * the set was validated.
 */
export function runContext(spec: ServiceSpec, marker: string, envFile: string): RunContext {
  const user = spec.user === undefined ? undefined : resolveUser(spec.user);
  const eq = marker.indexOf('=');
  return {
    cwd: spec.cwd,
    uid: user?.uid,
    gid: user?.gid,
    env: {
      ...process.env,
      ...(user ? { HOME: user.home, USER: user.name, LOGNAME: user.name } : {}),
      ...spec.env,
      BERTH_SERVICE: spec.name,
      [ENV_FILE_ENV]: envFile,
      [marker.slice(0, eq)]: marker.slice(eq + 1),
    },
  };
}
