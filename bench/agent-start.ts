/**
 * What starting the agent's node costs with its V8 flags on node's command line (as hosts did until
 * the twenty-second session) and with node's own options only (the agent sets its V8 flags once
 * loaded, agent/v8-tuning.ts). A V8 flag on the command line makes V8 refuse the code cache node
 * embeds for its built-in modules; `--expose-internals` lets a preloaded probe count them.
 *
 * Measured on the bundle's `follow` tool without arguments: node starts, the whole bundle loads
 * (every module the agent imports), the tool prints its usage and exits — the agent's start up to
 * its own work, and nothing of the host around it (that is "host launch -> agent ready").
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_NODE_FLAGS, agentBundleDir } from '../src/cli/paths.js';
import { AGENT_RUNTIME_V8_FLAGS } from '../src/agent/v8-tuning.js';
import { ms, summarize } from './stats.js';

const PROBE = `process.on('exit', () => {
  const usage = require('internal/test/binding').internalBinding('builtins').getCacheUsage();
  process.stderr.write('\\nberth-probe ' + JSON.stringify({ with: usage.compiledWithCache.size, without: usage.compiledWithoutCache.size }) + '\\n');
});`;

export function agentStartBench(progress: (line: string) => void, rounds = 30): string[] {
  const bundle = join(agentBundleDir(), 'berth-agent.cjs');
  const modes = {
    now: [...AGENT_NODE_FLAGS],
    before: [...AGENT_RUNTIME_V8_FLAGS, '--max-semi-space-size=1', ...AGENT_NODE_FLAGS, '--expose-gc'],
  };
  const start = (flags: string[]) => {
    const t0 = performance.now();
    spawnSync(process.execPath, [...flags, bundle, 'follow'], { env: {}, stdio: 'ignore' });
    return performance.now() - t0;
  };
  const samples = { now: [] as number[], before: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    progress(`agent start, node options only / V8 flags on the command line ${i + 1}/${rounds}`);
    // Taking turns (ABBA), so a drift of the machine's speed falls on both.
    const order = i % 2 === 0 ? (['now', 'before'] as const) : (['before', 'now'] as const);
    for (const mode of order) samples[mode].push(start(modes[mode]));
  }
  const dir = mkdtempSync(join(tmpdir(), 'berth-probe-'));
  const counts = { now: { with: 0, without: 0 }, before: { with: 0, without: 0 } };
  try {
    writeFileSync(join(dir, 'probe.cjs'), PROBE);
    for (const mode of ['now', 'before'] as const) {
      const run = spawnSync(process.execPath, ['--expose-internals', '--no-warnings', '-r', join(dir, 'probe.cjs'), ...modes[mode], bundle, 'follow'], { env: {}, encoding: 'utf8' });
      const line = /berth-probe (.*)/.exec(run.stderr)?.[1];
      if (!line) throw new Error(`the built-in modules probe printed nothing: ${run.stderr}`);
      counts[mode] = JSON.parse(line) as { with: number; without: number };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const now = summarize(samples.now);
  const before = summarize(samples.before);
  return [
    `| agent start (node, the whole agent bundle loaded, exit), node options only / V8 flags on the command line, taking turns | ${now.n} / ${before.n} | ${ms(now.p50)} / ${ms(before.p50)} | ${ms(now.p99)} / ${ms(before.p99)} | with the flags / without p50 = ${(before.p50 / now.p50).toFixed(2)}x | |`,
    `| of node's built-in modules the agent loads: compiled from its code cache / from source, node options only; V8 flags on the command line | 1 / 1 | ${counts.now.with} / ${counts.now.without}; ${counts.before.with} / ${counts.before.without} | | | |`,
  ];
}
