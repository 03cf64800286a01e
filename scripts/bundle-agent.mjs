// Bundles the agent into one CommonJS file that hosts run (agent.cjs), behind a small loader
// (berth-agent.cjs, the file hosts start) that gives V8 the code cache made here (agent.cache):
// one file to read, no ES module loader and nothing compiled from source means a faster start, and a
// host needs nothing of the server's dependencies.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { AGENT_NODE_FLAGS } from '../dist/cli/paths.js';
import { writeAgentCodeCache } from './agent-code-cache.mjs';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const outDir = join(root, 'dist/agent-bundle');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
};
// The agent imports some built-in modules only when it needs them (`await import('node:tls')`). A
// real import() cannot run in the code the loader compiles with its cache (V8 drops the callback
// that would resolve it), so each becomes a module of the bundle that requires the built-in when
// first imported: as lazy, with no import() left.
const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => (args.kind === 'dynamic-import' ? { path: args.path, namespace: 'lazy-builtin' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};
await build({
  ...common,
  plugins: [lazyBuiltins],
  entryPoints: [join(root, 'src/agent/entry.ts')],
  outfile: join(outDir, 'agent.cjs'),
  // ws loads these optional native helpers when present; the agent does not need them.
  external: ['bufferutil', 'utf-8-validate'],
});
const dynamic = /\bimport\(/.exec(readFileSync(join(outDir, 'agent.cjs'), 'utf8'));
if (dynamic) throw new Error(`the agent bundle has an import() left (at ${dynamic.index}); import the module statically or as a node: built-in`);
await build({ ...common, entryPoints: [join(root, 'src/agent/loader-entry.ts')], outfile: join(outDir, 'berth-agent.cjs') });
// Made by this node with the options hosts start the agent with (no V8 flag: see src/cli/paths.ts),
// after a rehearsal of a first command (see agent-code-cache.mjs).
try {
  const made = await writeAgentCodeCache(outDir, AGENT_NODE_FLAGS);
  if (!made.rehearsed) process.stderr.write(`warning: the agent's code cache was made without its rehearsal (a host's first command compiles its path): ${made.error}\n`);
} catch (err) {
  process.stderr.write(`warning: no code cache for the agent (it will compile at each start): ${err instanceof Error ? err.message : String(err)}\n`);
}
