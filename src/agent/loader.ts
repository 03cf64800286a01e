/**
 * What hosts run: `node berth-agent.cjs [TOOL ARGS...]` (this file, bundled). It loads the agent
 * (agent.cjs beside it) with the V8 code cache the build made for it (agent.cache), so no host's
 * agent compiles its ~100 KiB of JavaScript from source at each start; then runs it (entry.ts).
 * A cache made by another node (an image's own) is refused by V8, which then compiles as usual:
 * the agent says so once in its log. `--write-code-cache [URL]` is the build's: it loads the agent,
 * with a URL has it rehearse a first command against the build's stand-in server there (so the
 * cache holds that path compiled, see rehearsal.ts), and writes the cache.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';

export const AGENT_MAIN = 'agent.cjs';
export const AGENT_CODE_CACHE = 'agent.cache';

interface AgentModule {
  main(argv: string[], loaded?: LoadNotes): void;
  /** The build's rehearsal of a first command (rehearsal.ts). */
  rehearse?(serverUrl: string): Promise<void>;
}

/** What the loader tells the agent about how it was loaded (the agent logs it; its tools do not). */
export interface LoadNotes {
  /** V8 refused the code cache: it was made by another node. */
  codeCacheRefused?: string;
}

interface Loaded {
  agent: AgentModule;
  script: Script;
  /** True when V8 refused the cache given; undefined when there was none. */
  cacheRejected?: boolean;
}

function load(dir: string, useCache: boolean): Loaded {
  const file = join(dir, AGENT_MAIN);
  const requireHere = createRequire(file);
  let cachedData: Buffer | undefined;
  try {
    cachedData = useCache ? readFileSync(join(dir, AGENT_CODE_CACHE)) : undefined;
  } catch {
    cachedData = undefined; // none made (a build without it): compile
  }
  // The wrapper node puts around a CommonJS file, so the bundle runs as if required.
  const source = `(function (exports, require, module, __filename, __dirname) {${readFileSync(file, 'utf8')}\n})`;
  // No import() in it (the build checks): code compiled with a cache cannot resolve one.
  const script = new Script(source, { filename: file, ...(cachedData ? { cachedData } : {}) });
  const module = { exports: {} };
  (script.runInThisContext() as (...args: unknown[]) => void).call(module.exports, module.exports, requireHere, module, file, dir);
  return { agent: module.exports as AgentModule, script, ...(cachedData ? { cacheRejected: script.cachedDataRejected === true } : {}) };
}

/** The loader's own entry: `argv` as node gives it (argv[1] is this file's path). */
export function runLoader(argv: string[]): void {
  const dir = dirname(argv[1] ?? '.');
  if (argv[2] === '--write-code-cache') {
    const { agent, script } = load(dir, false);
    const rehearsal = argv[3] && agent.rehearse ? agent.rehearse(argv[3]) : Promise.resolve();
    void rehearsal.then(() => {
      const path = join(dir, AGENT_CODE_CACHE);
      writeFileSync(`${path}.tmp`, script.createCachedData());
      renameSync(`${path}.tmp`, path);
      // The agent's timers and handles are gone; anything else left must not hold the build.
      process.exit(0);
    }, (err: unknown) => {
      process.stderr.write(`the agent's rehearsal failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
    return;
  }
  const { agent, cacheRejected } = load(dir, true);
  agent.main(argv.slice(2), cacheRejected ? { codeCacheRefused: `${AGENT_CODE_CACHE} was made by another node than ${process.version}; the agent was compiled from source` } : {});
}
