/**
 * What starting the agent's node costs, three ways taking turns: as hosts start it now (node's own
 * options only, the agent loaded with its code cache, agent/loader.ts); the same without the
 * agent's code cache; and with its V8 flags on node's command line, as hosts did until the
 * twenty-second session (the old set, plus today's --semi-space-growth-factor=1; any V8 flag there
 * makes V8 refuse every code cache: node's for its built-in modules and the agent's). `--expose-internals` lets a preloaded probe count node's modules.
 *
 * Measured on the bundle's `follow` tool without arguments: node starts, the whole agent loads
 * (every module it imports), the tool prints its usage and exits — the agent's start up to its own
 * work, and nothing of the host around it (that is "host launch -> agent ready").
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_NODE_FLAGS, agentBundleDir } from '../src/cli/paths.js';
import { AGENT_RUNTIME_V8_FLAGS } from '../src/agent/v8-tuning.js';
import { AGENT_CODE_CACHE } from '../src/agent/loader.js';
import { ms, summarize } from './stats.js';

const PROBE = `process.on('exit', () => {
  const usage = require('internal/test/binding').internalBinding('builtins').getCacheUsage();
  process.stderr.write('\\nberth-probe ' + JSON.stringify({ with: usage.compiledWithCache.size, without: usage.compiledWithoutCache.size }) + '\\n');
});`;

type Mode = 'now' | 'noCache' | 'flags';

export function agentStartBench(progress: (line: string) => void, rounds = 30): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'berth-agent-start-'));
  try {
    // A copy of the bundle without its code cache.
    cpSync(agentBundleDir(), join(dir, 'uncached'), { recursive: true });
    rmSync(join(dir, 'uncached', AGENT_CODE_CACHE), { force: true });
    const modes: Record<Mode, string[]> = {
      now: [...AGENT_NODE_FLAGS, join(agentBundleDir(), 'berth-agent.cjs')],
      noCache: [...AGENT_NODE_FLAGS, join(dir, 'uncached', 'berth-agent.cjs')],
      flags: [...AGENT_RUNTIME_V8_FLAGS, '--max-semi-space-size=1', ...AGENT_NODE_FLAGS, '--expose-gc', join(agentBundleDir(), 'berth-agent.cjs')],
    };
    const start = (args: string[]) => {
      const t0 = performance.now();
      spawnSync(process.execPath, [...args, 'follow'], { env: {}, stdio: 'ignore' });
      return performance.now() - t0;
    };
    const samples: Record<Mode, number[]> = { now: [], noCache: [], flags: [] };
    const order: Mode[] = ['now', 'noCache', 'flags'];
    for (let i = 0; i < rounds; i++) {
      progress(`agent start, three ways ${i + 1}/${rounds}`);
      // Taking turns, each round in the other order, so a drift of the machine's speed falls on all.
      for (const mode of i % 2 === 0 ? order : [...order].reverse()) samples[mode].push(start(modes[mode]));
    }
    writeFileSync(join(dir, 'probe.cjs'), PROBE);
    const counts = (mode: Mode): { with: number; without: number } => {
      const run = spawnSync(process.execPath, ['--expose-internals', '--no-warnings', '-r', join(dir, 'probe.cjs'), ...modes[mode], 'follow'], { env: {}, encoding: 'utf8' });
      const line = /berth-probe (.*)/.exec(run.stderr)?.[1];
      if (!line) throw new Error(`the built-in modules probe printed nothing: ${run.stderr}`);
      return JSON.parse(line) as { with: number; without: number };
    };
    const now = summarize(samples.now);
    const noCache = summarize(samples.noCache);
    const flags = summarize(samples.flags);
    const [cNow, cFlags] = [counts('now'), counts('flags')];
    return [
      `| agent start (node, the whole agent loaded, exit): as now / without the agent's code cache / V8 flags on the command line (before), taking turns | ${now.n} x3 | ${ms(now.p50)} / ${ms(noCache.p50)} / ${ms(flags.p50)} | ${ms(now.p99)} / ${ms(noCache.p99)} / ${ms(flags.p99)} | before / now p50 = ${(flags.p50 / now.p50).toFixed(2)}x; the agent's cache saves ${ms(noCache.p50 - now.p50)} | |`,
      `| of node's built-in modules the agent loads: compiled from node's code cache / from source, as now; before | 1 / 1 | ${cNow.with} / ${cNow.without}; ${cFlags.with} / ${cFlags.without} | | | |`,
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
