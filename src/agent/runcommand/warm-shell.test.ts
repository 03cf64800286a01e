/** Runs through a warm shell behave exactly like runs through a freshly spawned one. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runShellScript } from './execute.js';
import { findInvocationProcesses } from './sweep.js';
import { WarmShellPool } from './warm-shell.js';

const scratchDir = mkdtempSync(join(tmpdir(), 'berth-warm-'));
const pool = new WarmShellPool('/bin/bash');
let seq = 0;

async function run(commands: string[], extra: { env?: Record<string, string>; workingDirectory?: string; executionTimeoutSeconds?: number } = {}) {
  pool.fill();
  await new Promise((r) => setTimeout(r, 30)); // let the shell start, as it would between commands
  const id = `warm-${process.pid}-${++seq}`;
  const result = await runShellScript(id, { commands, executionTimeoutSeconds: 10, ...extra }, { scratchDir, warmShells: pool, killGraceMs: 300 });
  return { id, result };
}

describe('warm shells', () => {
  afterAll(() => pool.stop());

  it('runs commands with the same semantics: output, exit codes, fail fast', async () => {
    const { result } = await run(['echo hi', 'true', 'false', 'echo never']);
    expect(result.status).toBe('Failed');
    expect(result.exitCodes).toEqual([0, 0, 1]);
    expect(result.stdout.text).toBe('hi\n');
  });

  it('sets the working directory, the environment and the invocation marker', async () => {
    const { id, result } = await run(['pwd', 'echo "$GREETING"', 'cat /proc/self/environ | tr "\\0" "\\n" | grep BERTH_INVOCATION_ID'], {
      workingDirectory: '/etc',
      env: { GREETING: "it's warm" },
    });
    expect(result.stdout.text).toBe(`/etc\nit's warm\nBERTH_INVOCATION_ID=${id}\n`);
  });

  it('gives commands a closed stdin, as a cold start does', async () => {
    const { result } = await run(['cat; echo "rc=$?"']);
    expect(result.stdout.text).toBe('rc=0\n');
  });

  it('times out and leaves no process, even one that escaped with setsid', async () => {
    const { id, result } = await run(['setsid sleep 100 & sleep 100'], { executionTimeoutSeconds: 0.5 });
    expect(result.status).toBe('TimedOut');
    expect(findInvocationProcesses({ invocationId: id })).toEqual([]);
  });

  it('never sources ~/.bashrc (bash would, if its stdin were a socket)', async () => {
    const home = mkdtempSync(join(tmpdir(), 'berth-home-'));
    writeFileSync(join(home, '.bashrc'), 'echo bashrc-was-read\n');
    // As in a host: a fresh environment (no SHLVL: bash reads ~/.bashrc only when it is the top-level shell).
    const withHome = new WarmShellPool('/bin/bash', { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: home });
    withHome.fill();
    await new Promise((r) => setTimeout(r, 50));
    const result = await runShellScript(`rc-${process.pid}`, { commands: ['echo ran'], executionTimeoutSeconds: 5 }, { scratchDir, warmShells: withHome });
    withHome.stop();
    expect(result.stdout.text).toBe('ran\n');
  });

  it('falls back to a cold spawn when no shell is idle', async () => {
    const id = `cold-${process.pid}`;
    const result = await runShellScript(id, { commands: ['echo cold'], executionTimeoutSeconds: 5 }, { scratchDir, warmShells: new WarmShellPool('/bin/bash') });
    expect(result.stdout.text).toBe('cold\n');
  });
});
