/**
 * The agent's V8 settings, made by the agent itself once its modules are loaded, not on node's
 * command line. Any V8 flag given there changes V8's flag hash, and V8 then rejects the code cache
 * that node embeds for its own JavaScript modules: every host's agent compiled crypto, stream,
 * http and the rest from source, ~10 ms of CPU per start (`npm run bench`, "agent start").
 *
 * What they trade: nothing the agent needs (its work is waiting on sockets and child processes) for
 * memory. No optimising or baseline compiler (the interpreter alone: ~1 MiB less resident, no slower
 * on a command's round trip); a young generation that never grows past its first size (as
 * `--max-semi-space-size=1` gave, which V8 reads only at start: a burst of commands grew it to 32 MiB
 * and it stayed); a full GC that also compacts the old generation (without, V8 kept 9 to 15 MiB of
 * pages committed for ~4 MiB of live objects); and `gc()`, which the agent calls when it falls idle
 * (agent.ts). Flags V8 reads when they apply, which is why they work when set late.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export const AGENT_RUNTIME_V8_FLAGS = ['--no-opt', '--no-sparkplug', '--semi-space-growth-factor=1', '--compact-on-every-full-gc'] as const;

/** Applies the flags; returns V8's `gc` (exposed to a new context, as `--expose-gc` does). */
export function tuneAgentV8(): () => void {
  for (const flag of AGENT_RUNTIME_V8_FLAGS) setFlagsFromString(flag);
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
