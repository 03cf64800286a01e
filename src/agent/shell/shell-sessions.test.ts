/**
 * The agent's terminals, on this machine: a real pty (util-linux `script`), real programs. What a
 * person at the other end sees: the prompt's output, their program's exit code, the size they set,
 * nothing left running after they leave, and output that waits for them when they read slowly.
 */
import { existsSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentMessage } from '../../protocol/messages.js';
import { ShellSessions } from './shell-sessions.js';

type Sent = AgentMessage & { sessionId?: string };

function harness(opts: { windowBytes?: number; maxSessions?: number; script?: string; shell?: string } = {}) {
  const sent: Sent[] = [];
  const waiters: (() => void)[] = [];
  const shells = new ShellSessions({
    send: (msg) => {
      sent.push(msg);
      for (const w of waiters.splice(0)) w();
      return true;
    },
    env: () => ({ PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: '/root' }),
    log: () => undefined,
    ...opts,
  });
  const output = (id: string) =>
    Buffer.concat(sent.filter((m): m is Extract<AgentMessage, { type: 'shellOutput' }> => m.type === 'shellOutput' && m.sessionId === id).map((m) => Buffer.from(m.data, 'base64'))).toString('utf8');
  const until = async (test: () => boolean, ms = 10_000): Promise<void> => {
    const end = Date.now() + ms;
    while (!test()) {
      if (Date.now() > end) throw new Error(`timed out; sent: ${JSON.stringify(sent.map((m) => m.type))}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
  };
  const exitOf = (id: string) => sent.find((m): m is Extract<AgentMessage, { type: 'shellExit' }> => m.type === 'shellExit' && m.sessionId === id);
  const open = (id: string, extra: Record<string, unknown> = {}) => shells.handle({ type: 'shellOpen', sessionId: id, term: 'xterm-256color', cols: 100, rows: 30, ...extra } as never);
  const type = (id: string, text: string) => shells.handle({ type: 'shellInput', sessionId: id, data: Buffer.from(text).toString('base64') });
  return { shells, sent, output, until, exitOf, open, type };
}

/** Running (a zombie whose parent has not reaped it yet is not). */
function alive(pid: number | undefined): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

let live: ShellSessions | undefined;
afterEach(() => live?.closeAll());

describe.skipIf(!existsSync('/usr/bin/script'))('shell sessions', () => {
  it('gives a terminal: a login shell that echoes, sees a tty of the asked size, and exits with its code', async () => {
    const h = harness();
    live = h.shells;
    h.open('s1');
    await h.until(() => h.sent.some((m) => m.type === 'shellOpened'));
    h.type('s1', 'tty; stty size; echo "term=$TERM"; exit 7\n');
    await h.until(() => h.exitOf('s1') !== undefined);
    const out = h.output('s1');
    expect(out).toMatch(/\/dev\/pts\/\d+\r\n30 100\r\nterm=xterm-256color\r\n/);
    expect(h.exitOf('s1')).toMatchObject({ code: 7, signal: null });
    expect(h.shells.count).toBe(0);
  });

  it('runs a given command in a given directory, and tells a missing directory apart', async () => {
    const h = harness();
    live = h.shells;
    h.open('c1', { command: 'pwd; exit 3', cwd: '/tmp' });
    await h.until(() => h.exitOf('c1') !== undefined);
    expect(h.output('c1')).toContain('/tmp\r\n');
    expect(h.exitOf('c1')?.code).toBe(3);
    h.open('c2', { command: 'true', cwd: '/no/such/dir' });
    expect(h.exitOf('c2')).toMatchObject({ code: null, error: 'working directory /no/such/dir does not exist on the host' });
    // A name no directory can have is refused the same way (it threw, and took the agent down).
    h.open('c3', { command: 'true', cwd: `/${'x'.repeat(300)}` });
    expect(h.exitOf('c3')).toMatchObject({ code: null, error: expect.stringContaining('does not exist on the host') as unknown });
  });

  it('resizes a running terminal: the program in it sees the new size', async () => {
    const h = harness();
    live = h.shells;
    h.open('r1', { command: 'trap "stty size; exit 0" WINCH; echo ready; while :; do sleep 0.05; done' });
    await h.until(() => h.output('r1').includes('ready'));
    h.shells.handle({ type: 'shellResize', sessionId: 'r1', cols: 132, rows: 43 });
    await h.until(() => h.exitOf('r1') !== undefined);
    expect(h.output('r1')).toContain('43 132');
  });

  it('hangs up on close: the shell and its jobs are gone; a nohup job stays, as after an SSH logout', async () => {
    const h = harness();
    live = h.shells;
    h.open('k1');
    h.type('k1', 'sleep 300 & j=$!; nohup sleep 301 >/dev/null 2>&1 & echo "pids $$ $j $!"\n');
    await h.until(() => /pids \d+ \d+ \d+/.test(h.output('k1')));
    const [shellPid, jobPid, nohupPid] = (/pids (\d+) (\d+) (\d+)/.exec(h.output('k1')) ?? []).slice(1).map(Number);
    // nohup ignores SIGHUP before it becomes sleep: a hang-up sooner would reach it (as in a real terminal).
    await h.until(() => readFileSync(`/proc/${nohupPid}/comm`, 'utf8').trim() === 'sleep');
    h.shells.handle({ type: 'shellClose', sessionId: 'k1' });
    await h.until(() => h.exitOf('k1') !== undefined);
    expect(h.exitOf('k1')?.error).toBe('the session was closed');
    await h.until(() => !alive(shellPid) && !alive(jobPid));
    expect(alive(nohupPid)).toBe(true);
    process.kill(nohupPid ?? 0, 'SIGKILL');
  });

  it("hangs up a shell's jobs whatever the shell (dash does not pass SIGHUP on to them)", async () => {
    const h = harness({ shell: '/bin/sh' });
    live = h.shells;
    h.open('d1', { command: 'set -m; sleep 300 & echo "job $!"; wait' }); // set -m: the job in a group of its own
    await h.until(() => /job \d+/.test(h.output('d1')));
    const job = Number(/job (\d+)/.exec(h.output('d1'))?.[1]);
    expect(alive(job)).toBe(true);
    h.shells.handle({ type: 'shellClose', sessionId: 'd1' });
    await h.until(() => !alive(job));
  });

  it('stops reading output while the window is unacknowledged, and loses nothing', async () => {
    const h = harness({ windowBytes: 64 * 1024 });
    live = h.shells;
    h.open('w1', { command: 'seq 1 100000; exit 0' });
    await new Promise((r) => setTimeout(r, 500));
    const sentBytes = () => Buffer.from(h.output('w1')).length;
    const early = sentBytes();
    expect(early).toBeLessThan(4 * 64 * 1024); // seq's 589 kB are held back
    expect(h.exitOf('w1')).toBeUndefined();
    let acked = 0;
    while (!h.exitOf('w1')) {
      const owed = sentBytes() - acked;
      if (owed > 0) h.shells.handle({ type: 'shellAck', sessionId: 'w1', bytes: owed });
      acked += owed;
      await new Promise((r) => setTimeout(r, 10));
    }
    const lines = h.output('w1').split('\r\n').filter(Boolean);
    expect(lines.at(-1)).toBe('100000');
    expect(lines.length).toBe(100000);
  });

  it('says what to install when the host has no `script`', async () => {
    const h = harness({ script: '/nonexistent/script' });
    live = h.shells;
    h.open('n1');
    await h.until(() => h.exitOf('n1') !== undefined);
    expect(h.exitOf('n1')).toMatchObject({ code: null, signal: null, error: expect.stringMatching(/no `script` program .*bsdutils/) as unknown });
    expect(h.sent.some((m) => m.type === 'shellOpened')).toBe(false);
  });

  it('refuses a session over the limit, with a reason', () => {
    const h = harness({ maxSessions: 1 });
    live = h.shells;
    h.open('m1', { command: 'sleep 30' });
    h.open('m2', { command: 'true' });
    expect(h.exitOf('m2')?.error).toMatch(/1 shell sessions open already/);
  });
});
