import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BerthError } from '../core/errors.js';

/** The package root: the nearest directory above this module with a package.json. */
export function packageRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('berth package root not found');
    dir = parent;
  }
  return dir;
}

/** Directory of the bundled agent that every host mounts read-only. */
export function agentBundleDir(): string {
  const dir = join(packageRoot(), 'dist', 'agent-bundle');
  if (!existsSync(join(dir, 'berth-agent.cjs'))) {
    throw new BerthError('driver_unavailable', `the agent bundle is missing (${dir}/berth-agent.cjs)`, 'Run `npm run build` in the berth checkout (npm install does it too).');
  }
  return dir;
}

/**
 * How every host's init starts its agent. Node's own options only: the agent sets its V8 flags
 * itself once loaded (agent/v8-tuning.ts), as one given here would make V8 refuse node's code cache
 * for its built-in modules. One GC thread, and one worker for V8's background tasks.
 */
export const AGENT_NODE_FLAGS = ['--v8-pool-size=1', '--single-threaded-gc'];

export function agentCommand(nodePath = process.execPath): string[] {
  return [nodePath, ...AGENT_NODE_FLAGS, '/.berth/agent/berth-agent.cjs'];
}
