// The agent bundle's entry (agent.cjs), run by its loader (loader.ts, berth-agent.cjs): as the host's
// agent process (`node /.berth/agent/berth-agent.cjs`), or as one of its tools for commands on the
// host: `… berth-agent.cjs follow [-n N] FILE` (`berth svc logs -f`, see log-follow.ts) and `… fetch
// URL` (environments' slugs, see fetch-tool.ts). The tools are imported only when asked for: the
// agent's idle RSS is on every host's budget. Loading the bundle runs nothing (the build loads it
// to make its code cache, after `rehearse`); `main` does.
import type { LoadNotes } from './loader.js';
import { runAgent } from './main.js';

export { rehearse } from './rehearsal.js';

const tools: Record<string, () => Promise<(args: string[]) => Promise<number>>> = {
  follow: () => import('./log-follow.js').then((m) => m.followMain),
  fetch: () => import('./fetch-tool.js').then((m) => m.fetchMain),
};

export function main(argv: string[], loaded: LoadNotes = {}): void {
  const tool = argv[0] === undefined ? undefined : tools[argv[0]];
  if (!tool) {
    if (loaded.codeCacheRefused) process.stderr.write(`berth-agent: ${loaded.codeCacheRefused}\n`);
    runAgent(argv);
    return;
  }
  tool()
    .then((run) => run(argv.slice(1)))
    .then(
      (code) => process.exit(code),
      (err: unknown) => {
        process.stderr.write(`${argv[0] ?? ''}: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      },
    );
}
