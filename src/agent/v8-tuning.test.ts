import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../cli/paths.js';
import { AGENT_RUNTIME_V8_FLAGS } from './v8-tuning.js';

/** A node as hosts start their agent: AGENT_NODE_FLAGS, then the agent's flags set at runtime (or not). */
function youngGenerationAfterBurst(tuned: boolean): { newSpaceMiB: number; gc: string } {
  const script = `
    const v8 = require('node:v8');
    const vm = require('node:vm');
    let gc = 'none';
    if (${tuned}) {
      for (const f of ${JSON.stringify(AGENT_RUNTIME_V8_FLAGS)}) v8.setFlagsFromString(f);
      v8.setFlagsFromString('--expose-gc');
      gc = typeof vm.runInNewContext('gc');
    }
    // A burst of short-lived objects, as a run of commands makes.
    let keep = [];
    for (let n = 0; n < 3e6; n++) { keep.push({ n, s: 'x' + n }); if (keep.length > 50000) keep = []; }
    const ns = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    process.stdout.write(JSON.stringify({ newSpaceMiB: ns.space_size / 1048576, gc }));`;
  return JSON.parse(execFileSync(process.execPath, [...AGENT_NODE_FLAGS, '-e', script], { encoding: 'utf8' })) as { newSpaceMiB: number; gc: string };
}

describe("the agent's V8 flags, set once it is loaded", () => {
  it('keep the young generation at its first size through a burst (as --max-semi-space-size=1 did) and expose gc', () => {
    const untuned = youngGenerationAfterBurst(false);
    const tuned = youngGenerationAfterBurst(true);
    // Without them V8 grows it (to 32 MiB on x64) and keeps it.
    expect(untuned.newSpaceMiB).toBeGreaterThan(4);
    expect(tuned.newSpaceMiB).toBeLessThanOrEqual(2);
    expect(tuned.gc).toBe('function');
  });

  it("leaves node's command line without a V8 flag, so node's built-in modules load from its code cache", () => {
    const fromSource = (flags: string[]): { with: number; without: number } => {
      const script = `for (const m of ['crypto', 'child_process', 'http', 'tls', 'stream']) require(m);
        const usage = require('internal/test/binding').internalBinding('builtins').getCacheUsage();
        process.stdout.write(JSON.stringify({ with: usage.compiledWithCache.size, without: usage.compiledWithoutCache.size }));`;
      return JSON.parse(execFileSync(process.execPath, ['--expose-internals', '--no-warnings', ...flags, '-e', script], { encoding: 'utf8' })) as { with: number; without: number };
    };
    const asHostsStart = fromSource(AGENT_NODE_FLAGS);
    expect(asHostsStart.without).toBe(0);
    expect(asHostsStart.with).toBeGreaterThan(20);
    // The probe sees the difference: one of the agent's V8 flags on the command line, and none is cached.
    const withAFlag = fromSource([...AGENT_NODE_FLAGS, AGENT_RUNTIME_V8_FLAGS[0]]);
    expect(withAFlag.with).toBe(0);
    expect(withAFlag.without).toBe(asHostsStart.with);
  });
});
