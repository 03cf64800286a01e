// Bundles the agent into one CommonJS file that hosts run directly: one file to read (and no ES module
// loader) means a faster start, and a host needs nothing of the server's dependencies.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
await build({
  entryPoints: [join(root, 'src/agent/entry.ts')],
  outfile: join(root, 'dist/agent-bundle/berth-agent.cjs'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  // ws loads these optional native helpers when present; the agent does not need them.
  external: ['bufferutil', 'utf-8-validate'],
  logLevel: 'warning',
});
