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
 * How every host's init starts its agent. The V8 flags trade nothing the agent needs (its work is
 * waiting on sockets and child processes) for memory: no optimising or baseline compiler (without
 * Sparkplug the interpreter alone runs it: ~1 MiB less resident, no slower on a command's round
 * trip), a small young generation, one GC thread, and a full GC when the agent falls idle
 * (agent.ts) that also compacts the old generation: without compaction V8 kept 9 to 15 MiB of
 * pages committed for ~4 MiB of live objects, depending on how many commands had run (an agent
 * idled at 46-54 MiB resident; compacted, 44.6-46.1). Full GCs are rare in the agent (its garbage
 * dies young), so compacting each costs nothing a command would notice. Measured by `npm run
 * bench` (agent idle RSS).
 */
export const AGENT_NODE_FLAGS = ['--no-opt', '--no-sparkplug', '--max-semi-space-size=1', '--v8-pool-size=1', '--single-threaded-gc', '--compact-on-every-full-gc', '--expose-gc'];

export function agentCommand(nodePath = process.execPath): string[] {
  return [nodePath, ...AGENT_NODE_FLAGS, '/.berth/agent/berth-agent.cjs'];
}
