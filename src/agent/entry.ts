// Bundle entry: started directly as the host's agent process (`node /.berth/agent/berth-agent.cjs`),
// or as `… berth-agent.cjs follow [-n N] FILE` by `berth svc logs -f` (see log-follow.ts).
import { followMain } from './log-follow.js';
import { runAgent } from './main.js';

if (process.argv[2] === 'follow') {
  followMain(process.argv.slice(3)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`follow: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
} else {
  runAgent();
}
