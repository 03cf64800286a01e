/**
 * The build's rehearsal of a host's first command. V8 compiles a function only when it first runs,
 * and a code cache holds what was compiled when it was made: taken right after loading, it left a
 * host's first command (a pool host's readiness check; any command on a host outside a pool)
 * compiling the whole path of a command, from the `run` frame to the result: ~0.9 ms more of the
 * agent's CPU (3.6 against 2.7 ms, docs/benchmarks.md). So the build (`--write-code-cache`, see
 * loader.ts) runs this first: an agent with a scratch state dir serves one session of a stand-in
 * server (scripts/agent-code-cache.mjs: welcome, the user's tags, `run` of `true`, ack, close) with
 * its real channel, journal and warm shell, and only then takes the cache.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from './agent.js';

/** Resolves when the stand-in server has closed the session (the agent is stopped by then). */
export async function rehearse(serverUrl: string, timeoutMs = 10_000): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'berth-agent-rehearsal-'));
  let agent: Agent | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`the rehearsal's server did not end the session within ${timeoutMs} ms`)), timeoutMs);
      agent = new Agent({
        identity: { serverUrl, hostId: 'rehearsal', token: 'rehearsal' },
        stateDir,
        tagsPath: join(stateDir, 'tags.json'),
        serviceLogDir: join(stateDir, 'log'),
        log: () => undefined,
        onDisconnect: resolve,
      });
      agent.start();
    });
  } finally {
    clearTimeout(timer);
    agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
}
