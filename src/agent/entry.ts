// Bundle entry: started directly as the host's agent process (`node /.berth/agent/berth-agent.cjs`),
// or as one of its tools for commands on the host: `… berth-agent.cjs follow [-n N] FILE` (`berth svc
// logs -f`, see log-follow.ts) and `… fetch URL` (environments' slugs, see fetch-tool.ts). The tools
// are imported only when asked for: the agent's idle RSS is on every host's budget.
import { runAgent } from './main.js';

const tools: Record<string, () => Promise<(args: string[]) => Promise<number>>> = {
  follow: () => import('./log-follow.js').then((m) => m.followMain),
  fetch: () => import('./fetch-tool.js').then((m) => m.fetchMain),
};
const tool = process.argv[2] === undefined ? undefined : tools[process.argv[2]];

if (tool) {
  tool()
    .then((main) => main(process.argv.slice(3)))
    .then(
      (code) => process.exit(code),
      (err: unknown) => {
        process.stderr.write(`${process.argv[2] ?? ''}: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      },
    );
} else {
  runAgent();
}
