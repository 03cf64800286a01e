/** How a service's processes (and its readiness command) are run: env, cwd and user. */
import type { ServiceSpec } from '../../protocol/messages.js';
import { resolveUser } from './user.js';

export interface RunContext {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
}

/**
 * The agent's environment, then the user's HOME/USER/LOGNAME (when the service runs as a user), then
 * the service's own env, then BERTH_SERVICE and the marker (`NAME=value`) that finds every process of
 * the service. Resolves the user now: /etc/passwd may have changed since the set was validated.
 */
export function runContext(spec: ServiceSpec, marker: string): RunContext {
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
      [marker.slice(0, eq)]: marker.slice(eq + 1),
    },
  };
}
