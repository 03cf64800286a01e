import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runShellScript } from './execute.js';
import { killInvocationProcesses } from './sweep.js';
import type { ExecutionResult, ExecutorOptions, RunCallbacks, RunShellScriptParams } from './types.js';

const scratchDir = mkdtempSync(join(tmpdir(), 'berth-runcommand-test-'));
const baseOptions: ExecutorOptions = { scratchDir };
let seq = 0;
const newId = () => `test-${process.pid}-${++seq}-${Date.now()}`;

afterAll(() => rmSync(scratchDir, { recursive: true, force: true }));

function run(
  commands: string[],
  params: Partial<RunShellScriptParams> = {},
  options: Partial<ExecutorOptions> = {},
  callbacks?: RunCallbacks,
  id = newId(),
): Promise<ExecutionResult> {
  return runShellScript(id, { commands, executionTimeoutSeconds: 30, ...params }, { ...baseOptions, ...options }, callbacks);
}

/**
 * Live (non-zombie) processes carrying the invocation marker in their environ, or in process group
 * `pgid`. Deliberately independent of the executor's own sweep code.
 */
function survivors(id: string, pgid?: number): Array<{ pid: number; pgrp: number; cmd: string }> {
  const marker = `BERTH_INVOCATION_ID=${id}`;
  const found: Array<{ pid: number; pgrp: number; cmd: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z' || fields[0] === 'X') continue;
      const pgrp = Number(fields[2]);
      const environ = readFileSync(`/proc/${name}/environ`, 'utf8').split('\0');
      if (environ.includes(marker) || (pgid !== undefined && pgrp === pgid)) {
        const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
        found.push({ pid: Number(name), pgrp, cmd });
      }
    } catch {
      // the process went away while we looked
    }
  }
  return found;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// First, before the big-output tests grow this process (fork cost grows with the parent's memory).
describe('runShellScript: speed', () => {
  it('median of 200 `true` runs', async () => {
    for (let i = 0; i < 20; i++) await run(['true']); // warm up
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      const r = await run(['true']);
      times.push(performance.now() - t);
      expect(r.status).toBe('Success');
    }
    times.sort((a, b) => a - b);
    const p = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!.toFixed(2);
    console.log(`runShellScript(['true']) over 200 runs: p50 ${p(0.5)} ms, p90 ${p(0.9)} ms, p99 ${p(0.99)} ms`);
    expect(Number(p(0.5))).toBeLessThan(50); // a sanity bound only; the number above is what matters
  });
});

describe('runShellScript: results', () => {
  it('echo hi -> Success, stdout "hi\\n", exitCodes [0]', async () => {
    const r = await run(['echo hi']);
    expect(r.status).toBe('Success');
    expect(r.stdout).toEqual({ text: 'hi\n', truncated: false, bytes: 3 });
    expect(r.stderr).toEqual({ text: '', truncated: false, bytes: 0 });
    expect(r.exitCodes).toEqual([0]);
    expect(r.finishedAt.getTime()).toBeGreaterThanOrEqual(r.startedAt.getTime());
  });

  it('false -> Failed [1]', async () => {
    const r = await run(['false']);
    expect(r.status).toBe('Failed');
    expect(r.exitCodes).toEqual([1]);
    expect(r.statusDetail).toBe('command 1 of 1 exited with 1');
  });

  it('stops at the first failing command and reports every exit code that ran', async () => {
    const r = await run(['true', 'false', 'echo never']);
    expect(r.status).toBe('Failed');
    expect(r.exitCodes).toEqual([0, 1]);
    expect(r.statusDetail).toBe('command 2 of 3 exited with 1');
    expect(r.stdout.text).not.toContain('never');
  });

  it('runs all commands in one shell: cd and variables carry over', async () => {
    const r = await run(['cd /tmp', 'pwd', 'X=42', 'f() { echo "f$1"; }', 'echo "$X"; f 1']);
    expect(r.status).toBe('Success');
    expect(r.exitCodes).toEqual([0, 0, 0, 0, 0]);
    expect(r.stdout.text).toBe('/tmp\n42\nf1\n');
  });

  it('exit N in a command ends the script with that code', async () => {
    const r = await run(['exit 3', 'echo x']);
    expect(r.status).toBe('Failed');
    expect(r.exitCodes).toEqual([3]);
    expect(r.statusDetail).toBe('command 1 of 2 exited with 3');
    expect(r.stdout.text).toBe('');
    const r2 = await run(['true', 'exit 0', 'echo x']);
    expect(r2.status).toBe('Success');
    expect(r2.exitCodes).toEqual([0, 0]);
    expect(r2.stdout.text).toBe('');
  });

  it('set -e inside a command and a failing later command', async () => {
    const r = await run(['set -e', 'false; echo not-here', 'echo nor-here']);
    expect(r.exitCodes).toEqual([0, 1]);
    expect(r.stdout.text).toBe('');
  });

  it('captures stdout and stderr separately', async () => {
    const r = await run(['echo out; echo err >&2; echo out2']);
    expect(r.stdout.text).toBe('out\nout2\n');
    expect(r.stderr.text).toBe('err\n');
  });

  it('passes process env, params.env and BERTH_INVOCATION_ID', async () => {
    const id = newId();
    process.env['BERTH_TEST_PARENT_VAR'] = 'from-parent';
    try {
      const r = await run(
        ['echo "$FOO|$SPACED|$BERTH_INVOCATION_ID|$BERTH_TEST_PARENT_VAR"'],
        { env: { FOO: 'bar', SPACED: "it's a b" } },
        {},
        undefined,
        id,
      );
      expect(r.stdout.text).toBe(`bar|it's a b|${id}|from-parent\n`);
    } finally {
      delete process.env['BERTH_TEST_PARENT_VAR'];
    }
  });

  it('runs multi-line commands with heredocs and quotes verbatim', async () => {
    const r = await run([
      "cat <<EOF\nline1\n  indented $((1+2))\nEOF",
      "cat <<'RAW'\n$HOME 'single' \"double\" \\back\nRAW",
      `echo 'it'"'"'s' "q\\"uote"`,
      'for i in 1 2; do\n  echo "n$i"\ndone',
    ]);
    expect(r.status).toBe('Success');
    expect(r.exitCodes).toEqual([0, 0, 0, 0]);
    expect(r.stdout.text).toBe(`line1\n  indented 3\n$HOME 'single' "double" \\back\nit's q"uote\nn1\nn2\n`);
  });

  it('a syntax error in one command does not swallow the rest of the script', async () => {
    const r = await run(['echo "unbalanced', 'echo next']);
    expect(r.status).toBe('Failed');
    expect(r.exitCodes).toEqual([2]);
    expect(r.stdout.text).toBe('');
    expect(r.stderr.text).toMatch(/unexpected EOF|Unterminated/);
  });

  it('commands may use fd 3 themselves', async () => {
    const r = await run(['exec 3>/dev/null; echo x >&3', 'echo y >&3; echo ok']);
    expect(r.status).toBe('Success');
    expect(r.exitCodes).toEqual([0, 0]);
    expect(r.stdout.text).toBe('ok\n');
  });

  it('stdin is /dev/null', async () => {
    const r = await run(['cat', 'read -r line || echo eof']);
    expect(r.status).toBe('Success');
    expect(r.stdout.text).toBe('eof\n');
  });

  it('runs in the working directory', async () => {
    const r = await run(['pwd'], { workingDirectory: scratchDir });
    expect(r.stdout.text).toBe(`${scratchDir}\n`);
  });

  it('a missing working directory fails before anything runs', async () => {
    const marker = join(scratchDir, 'should-not-exist');
    const r = await run([`touch ${marker}`], { workingDirectory: '/nonexistent/berth' });
    expect(r.status).toBe('Failed');
    expect(r.exitCodes).toEqual([]);
    expect(r.statusDetail).toBe('working directory /nonexistent/berth does not exist');
    expect(r.stderr.text).toContain('working directory /nonexistent/berth does not exist');
    expect(readdirSync(scratchDir)).not.toContain('should-not-exist');

    const file = join(scratchDir, 'a-file');
    writeFileSync(file, 'x');
    const r2 = await run(['true'], { workingDirectory: file });
    expect(r2.status).toBe('Failed');
    expect(r2.exitCodes).toEqual([]);
    expect(r2.statusDetail).toBe(`working directory ${file} is not a directory`);
    rmSync(file);

    // A name no directory can have: the command fails, nothing throws (it took the agent down).
    const r3 = await run(['true'], { workingDirectory: `/${'x'.repeat(300)}` });
    expect(r3.status).toBe('Failed');
    expect(r3.statusDetail).toMatch(/^working directory "\/x+" cannot be used: ENAMETOOLONG/);
  });

  it('removes the generated script file', async () => {
    const before = readdirSync(scratchDir).filter((f) => f.endsWith('.sh'));
    await run(['echo hi']);
    await run(['false']);
    expect(readdirSync(scratchDir).filter((f) => f.endsWith('.sh'))).toEqual(before);
  });

  it('creates the scratch directory when missing', async () => {
    const dir = join(scratchDir, 'nested', 'scratch');
    const r = await run(['echo hi'], {}, { scratchDir: dir });
    expect(r.stdout.text).toBe('hi\n');
  });

  it('works with /bin/sh', async () => {
    const r = await run(['cd /tmp', 'pwd', "cat <<EOF\nx\nEOF", 'false', 'echo no'], {}, { shell: '/bin/sh' });
    expect(r.exitCodes).toEqual([0, 0, 0, 1]);
    expect(r.stdout.text).toBe('/tmp\nx\n');
  });

  it('a shell a signal killed reports 128 + signal', async () => {
    const r = await run(['true', 'kill -KILL $$', 'echo never']);
    expect(r.status).toBe('Failed');
    expect(r.exitCodes).toEqual([0, 137]);
    expect(r.statusDetail).toContain('command 2 of 3');
  });

  it('a shell that cannot start fails cleanly', async () => {
    const r = await run(['true'], {}, { shell: '/nonexistent/shell' });
    expect(r.status).toBe('Failed');
    expect(r.statusDetail).toContain('/nonexistent/shell');
    expect(r.exitCodes.length).toBeLessThanOrEqual(1);
  });

  it('onOutput receives chunks live; onSpawn the pid', async () => {
    const events: Array<{ stream: string; text: string; at: number }> = [];
    let spawned = 0;
    const r = await run(['echo one; echo e1 >&2; sleep 0.5; echo two'], {}, {}, {
      onOutput: (stream, chunk) => events.push({ stream, text: chunk.toString(), at: Date.now() }),
      onSpawn: (pid) => (spawned = pid),
    });
    expect(spawned).toBeGreaterThan(1);
    expect(r.stdout.text).toBe('one\ntwo\n');
    const first = events.find((e) => e.text.includes('one'));
    expect(first?.stream).toBe('stdout');
    expect(r.finishedAt.getTime() - first!.at).toBeGreaterThan(300);
    expect(events.filter((e) => e.stream === 'stderr').map((e) => e.text).join('')).toBe('e1\n');
  });
});

describe('runShellScript: output limits', () => {
  it('1 MiB of output -> truncated, bytes 1048576, head and tail kept', async () => {
    const r = await run(["printf 'HEAD'; head -c 1048568 /dev/zero | tr '\\0' x; printf 'TAIL'"]);
    expect(r.status).toBe('Success');
    expect(r.stdout.bytes).toBe(1048576);
    expect(r.stdout.truncated).toBe(true);
    const half = 32 * 1024;
    expect(r.stdout.text).toBe(
      'HEAD' + 'x'.repeat(half - 4) + '\n[berth: 983040 bytes omitted]\n' + 'x'.repeat(half - 4) + 'TAIL',
    );
    expect(r.stderr.truncated).toBe(false);
  });

  it('honours outputLimitBytes per stream', async () => {
    const r = await run(['seq 1 1000; seq 1 1000 >&2'], {}, { outputLimitBytes: 20 });
    const expected = '1\n2\n3\n4\n5\n' + '\n[berth: 3873 bytes omitted]\n' + '\n999\n1000\n';
    expect(r.stdout.text).toBe(expected);
    expect(r.stderr.text).toBe(expected);
    expect(r.stdout.bytes).toBe(3893);
  });

  it('keeps multi-byte characters whole at the cuts', async () => {
    const r = await run([`for i in $(seq 1 3000); do printf '€😀é'; done`], {}, { outputLimitBytes: 1001 });
    expect(r.stdout.truncated).toBe(true);
    expect(r.stdout.bytes).toBe(27000);
    expect(r.stdout.text).not.toContain('\uFFFD');
  });

  it('memory stays bounded for a huge output (256 MiB)', async () => {
    const before = process.memoryUsage().rss;
    let peak = before;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    const r = await run(['head -c 268435456 /dev/zero']);
    clearInterval(timer);
    peak = Math.max(peak, process.memoryUsage().rss);
    expect(r.stdout.bytes).toBe(268435456);
    expect(r.stdout.truncated).toBe(true);
    expect(r.stdout.text.length).toBeLessThan(64 * 1024 + 100);
    // Garbage chunks awaiting GC aside, nothing close to the 256 MiB produced is held.
    expect(peak - before).toBeLessThan(96 * 1024 * 1024);
  });
});

describe('runShellScript: timeout, cancel and process cleanup', () => {
  it('sleep 30 with a 1 s timeout -> TimedOut in ~1 s, nothing of it survives (incl. a setsid escapee)', async () => {
    const id = newId();
    let pgid = 0;
    let midRun: ReturnType<typeof survivors> = [];
    const started = Date.now();
    const snapshot = sleep(700).then(() => (midRun = survivors(id, pgid)));
    const r = await run(
      ['setsid sleep 100 &', 'sleep 100 &', 'sleep 30'],
      { executionTimeoutSeconds: 1 },
      {},
      { onSpawn: (pid) => (pgid = pid) },
      id,
    );
    const elapsed = Date.now() - started;
    await snapshot;
    expect(r.status).toBe('TimedOut');
    expect(r.statusDetail).toContain('execution timed out after 1 s');
    expect(r.exitCodes).toEqual([0, 0, 143]);
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(2000);
    // The escapee really had left the group...
    expect(midRun.some((p) => p.pgrp !== pgid && p.cmd.includes('sleep 100'))).toBe(true);
    expect(midRun.some((p) => p.pgrp === pgid && p.cmd.includes('sleep 100'))).toBe(true);
    // ...and neither it nor anything else of the invocation is left.
    expect(survivors(id, pgid)).toEqual([]);
  });

  it('a TERM-ignoring command (and escapee) is KILLed after the grace period', async () => {
    const id = newId();
    let pgid = 0;
    const started = Date.now();
    const r = await run(
      [`setsid sh -c 'trap "" TERM; exec sleep 100' &`, `trap '' TERM; sleep 30`],
      { executionTimeoutSeconds: 1 },
      { killGraceMs: 500 },
      { onSpawn: (pid) => (pgid = pid) },
      id,
    );
    const elapsed = Date.now() - started;
    expect(r.status).toBe('TimedOut');
    expect(r.exitCodes).toEqual([0, 137]);
    expect(elapsed).toBeGreaterThanOrEqual(1450);
    expect(elapsed).toBeLessThan(2600);
    expect(survivors(id, pgid)).toEqual([]);
  });

  it('a command trapping TERM can clean up and exit within the grace period', async () => {
    const started = Date.now();
    const r = await run([`trap 'echo cleanup; exit 7' TERM; sleep 30 & wait`], { executionTimeoutSeconds: 1 });
    expect(r.status).toBe('TimedOut');
    expect(r.exitCodes).toEqual([7]);
    expect(r.stdout.text).toBe('cleanup\n');
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("a command's own killGraceSeconds overrides the agent's grace: a slow clean-up finishes with a longer one, and 0 kills at once", async () => {
    // The clean-up takes 1.5 s: longer than the agent's grace here (500 ms), shorter than the command's (3 s).
    const slowCleanup = `trap 'sleep 1.5; echo cleaned; exit 7' TERM; sleep 30 & wait`;
    const longer = await run([slowCleanup], { executionTimeoutSeconds: 1, killGraceSeconds: 3 }, { killGraceMs: 500 });
    expect([longer.status, longer.exitCodes, longer.stdout.text]).toEqual(['TimedOut', [7], 'cleaned\n']);
    const started = Date.now();
    const none = await run([slowCleanup], { executionTimeoutSeconds: 1, killGraceSeconds: 0 }, { killGraceMs: 5000 });
    expect([none.status, none.exitCodes, none.stdout.text]).toEqual(['TimedOut', [137], '']);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("on timeout a shell's TERM trap runs once (the group's TERM is not sent again to its members)", async () => {
    const runs = await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        const file = join(scratchDir, `trapped-${i}`);
        await run([`trap 'echo trapped >> ${file}; sleep 0.3; exit 7' TERM; sleep 30 & wait`], { executionTimeoutSeconds: 1 });
        return readFileSync(file, 'utf8');
      }),
    );
    expect(runs).toEqual(['trapped\n', 'trapped\n', 'trapped\n', 'trapped\n']);
  });

  it('children that clear their env but stay in the group are killed too', async () => {
    const id = newId();
    let pgid = 0;
    const r = await run(
      ['env -i /bin/sleep 100 &', 'sleep 30'],
      { executionTimeoutSeconds: 1 },
      {},
      { onSpawn: (pid) => (pgid = pid) },
      id,
    );
    expect(r.status).toBe('TimedOut');
    expect(survivors(id, pgid)).toEqual([]);
  });

  it('cancel via AbortController -> Cancelled, nothing survives', async () => {
    const id = newId();
    let pgid = 0;
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 300);
    const r = await run(
      ['echo started', 'setsid sleep 100 &', 'sleep 30', 'echo never'],
      {},
      {},
      { signal: ac.signal, onSpawn: (pid) => (pgid = pid) },
      id,
    );
    expect(r.status).toBe('Cancelled');
    expect(r.exitCodes).toEqual([0, 0, 143]);
    expect(r.stdout.text).toBe('started\n');
    expect(Date.now() - started).toBeLessThan(1500);
    expect(survivors(id, pgid)).toEqual([]);
  });

  it('an already-aborted signal runs nothing', async () => {
    const ac = new AbortController();
    ac.abort();
    const r = await run([`touch ${join(scratchDir, 'aborted')}`], {}, {}, { signal: ac.signal });
    expect(r.status).toBe('Cancelled');
    expect(r.exitCodes).toEqual([]);
    expect(readdirSync(scratchDir)).not.toContain('aborted');
  });

  it('after a normal finish, background daemons are left running', async () => {
    const id = newId();
    const started = Date.now();
    const r = await run(['sleep 60 >/dev/null 2>&1 &', 'echo $!', 'sleep 60 &'], {}, {}, undefined, id);
    try {
      expect(r.status).toBe('Success');
      // Even the one still holding stdout does not hold up the result.
      expect(Date.now() - started).toBeLessThan(1000);
      const pid = Number(r.stdout.text.trim());
      const alive = survivors(id).map((p) => p.pid);
      expect(alive).toContain(pid);
      expect(alive.length).toBe(2);
    } finally {
      await killInvocationProcesses({ invocationId: id });
    }
    expect(survivors(id)).toEqual([]);
  });
});
