/**
 * `berth host shell` end to end: CLI (or a WebSocket client) -> API -> agent channel -> a terminal
 * in a real host, and back. What a person checks: they land on the right host, their program's exit
 * code comes back, the size follows their window, nothing of theirs runs on after they leave, a
 * flood of output arrives whole, and every refusal says why and changes nothing.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/cli/paths.js';
import { WebSocket } from 'ws';
import type { BerthEvent } from '../../src/events/types.js';
import type { HostView } from '../../src/hosts/views.js';
import { berth, startServer, type InProcessServer } from '../helpers/server.js';

const NET = { bridge: 'berthshl0', subnet: '10.247.0.0/24', cgroupName: 'berthshl' };

describe('berth host shell', () => {
  let srv: InProcessServer;
  let host: HostView;
  let env: Record<string, string>;

  const hostRun = async (script: string) => {
    const res = await berth(['run', '--host', host.id, '--', script], env);
    return res.stdout.trim();
  };

  /** A session driven as a program would: frames in, frames out. */
  const openSocket = (query: string, token = srv.server.token) =>
    new Promise<{ ws: WebSocket; text: () => string; exit: Promise<Record<string, unknown>> }>((resolve, reject) => {
      const ws = new WebSocket(`${srv.server.url.replace('http', 'ws')}/v1/hosts/${host.id}/shell?${query}`, { headers: { authorization: `Bearer ${token}` } });
      let out = '';
      const exit = new Promise<Record<string, unknown>>((done) => {
        ws.on('message', (data: Buffer, binary: boolean) => {
          if (binary) out += data.toString('utf8');
          else done(JSON.parse(data.toString('utf8')) as Record<string, unknown>);
        });
      });
      ws.once('open', () => resolve({ ws, text: () => out, exit }));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  const until = async (test: () => boolean | Promise<boolean>, what: string, ms = 10_000) => {
    const end = Date.now() + ms;
    while (!(await test())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  beforeAll(async () => {
    srv = await startServer(NET, { recordShells: true });
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    host = (await srv.api.post<HostView>('/v1/hosts', { hostname: 'shell-box' })).body;
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('types piped input into a login shell on the host and exits with its code', async () => {
    const res = await berth(['host', 'shell', host.id], env, { input: 'echo "on $(hostname) as $(id -un) in $(tty)"; exit 3\n' });
    expect(res.stderr).toBe('');
    expect(res.stdout).toMatch(/on shell-box as root in \/dev\/pts\/\d+\r\n/);
    expect(res.code).toBe(3);
  });

  it("on a terminal: the window's size, Ctrl-C stopping the host's program (not the CLI), and ~. to leave", async () => {
    // The CLI on a pty of this machine, as in a person's terminal (util-linux `script` makes it).
    const cli = spawn('script', ['-qfec', `stty rows 33 cols 111; exec ${process.execPath} ${join(packageRoot(), 'bin', 'berth.js')} host shell ${host.id}`, '/dev/null'], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: '/root', TERM: 'xterm', ...env },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let screen = '';
    cli.stdout.on('data', (d: Buffer) => (screen += d.toString()));
    const exited = new Promise<number | null>((resolve) => cli.once('exit', resolve));
    const prompts = () => screen.split('root@shell-box').length - 1;
    await until(() => prompts() >= 1, 'the prompt');
    cli.stdin.write('stty size; sleep 30\r');
    await until(() => /33 111\r?\r\n/.test(screen), 'the size of the window');
    const started = Date.now();
    cli.stdin.write('\x03');
    await until(() => prompts() >= 2, 'the prompt after Ctrl-C');
    expect(Date.now() - started).toBeLessThan(5000);
    cli.stdin.write('\r~.');
    expect(await exited).toBe(0);
    expect(screen).toContain('berth: left the session (~.); its terminal hung up');
    await until(async () => (JSON.parse((await berth(['shell', 'ls', '--json'], env)).stdout) as unknown[]).length === 0, 'the session to end');
  });

  it('runs a command in a terminal of the default size, in a directory and as a user', async () => {
    const size = await berth(['host', 'shell', host.id, '--', 'stty', 'size'], env, { input: '' });
    expect(size).toMatchObject({ code: 0, stdout: '24 80\r\n' });
    await hostRun('useradd --create-home --shell /bin/bash shelluser');
    const as = await berth(['host', 'shell', host.id, '--user', 'shelluser', '--cwd', '/tmp', '--', 'echo "$(id -un) $PWD"'], env, { input: '' });
    expect(as.stdout).toBe('shelluser /home/shelluser\r\n'); // su -l: the user's login, in their home
    const cwd = await berth(['host', 'shell', host.id, '--cwd', '/tmp', '--', 'pwd; exit 4'], env, { input: '' });
    expect(cwd).toMatchObject({ code: 4, stdout: '/tmp\r\n' });
  });

  it('delivers a flood of output whole, in order', async () => {
    const res = await berth(['host', 'shell', host.id, '--', 'seq 1 200000'], env, { input: '', timeoutMs: 60_000 });
    const lines = res.stdout.split('\r\n').filter(Boolean);
    expect(res.code).toBe(0);
    expect(lines.length).toBe(200000);
    expect(lines.at(-1)).toBe('200000');
  });

  it('delivers a large paste whole to a program that reads it only later', async () => {
    const lines = 160_000; // 16 MB, over 16 windows of the agent channel
    const s = await openSocket(`command=${encodeURIComponent('stty -echo; sleep 2; wc -l')}`);
    const line = Buffer.from(`${'x'.repeat(100)}\n`);
    const chunk = Buffer.concat(Array.from({ length: 1000 }, () => line));
    for (let i = 0; i < lines / 1000; i++) s.ws.send(chunk, { binary: true });
    s.ws.send(Buffer.from([4]), { binary: true }); // Ctrl-D: the end of wc's input, after the paste
    expect(await s.exit).toMatchObject({ code: 0 });
    expect(s.text().trim()).toBe(String(lines));
  });

  it('follows a resize, and leaves nothing running when the client goes away', async () => {
    const s = await openSocket('cols=100&rows=30');
    s.ws.send(Buffer.from('echo "pid=$$"; stty size\n'), { binary: true });
    await until(() => /pid=\d+\r\n30 100/.test(s.text()), 'the first size');
    const pid = /pid=(\d+)/.exec(s.text())?.[1] ?? '';
    s.ws.send(JSON.stringify({ type: 'resize', cols: 150, rows: 50 }));
    await new Promise((r) => setTimeout(r, 200));
    s.ws.send(Buffer.from('stty size; sleep 600 & echo "job=$!"\n'), { binary: true });
    await until(() => /50 150\r\n/.test(s.text()) && /job=\d+/.test(s.text()), 'the new size');
    const job = /job=(\d+)/.exec(s.text())?.[1] ?? '';
    expect(await hostRun(`kill -0 ${pid} ${job} && echo alive`)).toBe('alive');
    s.ws.close();
    // The hang-up reaches the shell and its job (both reaped by the host's init).
    await until(async () => (await hostRun(`kill -0 ${pid} 2>/dev/null || kill -0 ${job} 2>/dev/null || echo gone`)) === 'gone', 'the shell and its job to go');
    const { body: events } = await srv.api.get<BerthEvent[]>(`/v1/events?kind=shell&host=${host.id}`);
    expect(events.map((e) => e.state).slice(-3)).toEqual(['opening', 'open', 'closed']);
    expect(events.at(-1)).toMatchObject({ kind: 'shell', state: 'closed', hostId: host.id, reason: 'the client closed the session' });
  });

  it('refuses bad requests with a reason, before anything starts on the host', async () => {
    const before = await hostRun('ps -e --no-headers | wc -l');
    const unknown = await berth(['host', 'shell', 'h-0000000000'], env, { input: '' });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('host h-0000000000 does not exist');
    const relative = await berth(['host', 'shell', host.id, '--cwd', 'tmp'], env, { input: '' });
    expect(relative.code).toBe(2);
    expect(relative.stderr).toMatch(/cwd: an absolute path/);
    const badToken = await berth(['host', 'shell', host.id], { ...env, BERTH_TOKEN: 'not-the-token' }, { input: '' });
    expect(badToken.code).toBe(2);
    expect(badToken.stderr).toContain('invalid API token');
    await expect(openSocket('cols=0')).rejects.toThrow('HTTP 400');
    await expect(openSocket(`command=${'x'.repeat(9000)}`)).rejects.toThrow('HTTP 400');
    // An upgrade that is no WebSocket handshake (no key): refused, and no terminal left open.
    const noKey = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${srv.server.url}/v1/hosts/${host.id}/shell`, { headers: { authorization: `Bearer ${srv.server.token}`, connection: 'Upgrade', upgrade: 'websocket' } });
      req.on('response', (res) => resolve(res.statusCode ?? 0));
      req.on('upgrade', () => resolve(101));
      req.on('error', reject);
      req.end();
    });
    expect(noKey).toBe(400);
    expect(JSON.parse((await berth(['shell', 'ls', '--json'], env)).stdout)).toEqual([]);
    expect(await hostRun('ps -e --no-headers | wc -l')).toBe(before);
  });

  it('lists open sessions, and ends one from outside it, telling its user', async () => {
    const s = await openSocket(`command=${encodeURIComponent('echo started; sleep 600')}`);
    await until(() => s.text().includes('started'), 'the program to start');
    const listed = await berth(['shell', 'ls', '--host', host.id, '--json'], env);
    const sessions = JSON.parse(listed.stdout) as { id: string; hostId: string; state: string; command: string; pid: number; bytesOut: number }[];
    expect(sessions).toHaveLength(1);
    expect(sessions[0]).toMatchObject({ hostId: host.id, state: 'open', command: 'echo started; sleep 600' });
    expect(sessions[0]?.bytesOut).toBeGreaterThanOrEqual('started\r\n'.length);
    const id = sessions[0]?.id ?? '';
    expect((await berth(['shell', 'ls'], env)).stdout).toMatch(new RegExp(`${id}\\s+${host.id}\\s+open\\s+\\d+s\\s+data dir token\\s+0\\s+\\d+\\s+echo started; sleep 600`));
    const shown = await berth(['host', 'show', host.id], env);
    expect(shown.stdout).toMatch(new RegExp(`^ {2}shells +1 open \\(berth shell ls --host ${host.id}\\)$`, 'm'));
    expect(shown.stdout).toMatch(/^ {2}hostname +shell-box$/m);
    const ended = await berth(['shell', 'end', id], env);
    expect(ended).toMatchObject({ code: 0, stderr: `ended ${id} on ${host.id}\n` });
    expect(await s.exit).toMatchObject({ type: 'exit', code: null, error: 'the session was ended by `berth shell end`' });
    expect(JSON.parse((await berth(['shell', 'ls', '--json'], env)).stdout)).toEqual([]);
    const again = await berth(['shell', 'end', id], env);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`shell session ${id} is not open`);
  });

  it('counts sessions and their bytes in /metrics, by how they ended', async () => {
    const text = (await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } }).then((r) => r.text())).split('\n');
    const value = (prefix: string) => Number(text.find((l) => l.startsWith(prefix))?.split(' ').at(-1));
    // The sessions of the tests above: some ended by their program, some by their client, one by `berth shell end`.
    expect(value('berth_shell_sessions_ended_total{tenant="default",ended="exit"}')).toBeGreaterThanOrEqual(5);
    expect(value('berth_shell_sessions_ended_total{tenant="default",ended="client"}')).toBeGreaterThanOrEqual(1);
    expect(value('berth_shell_sessions_ended_total{tenant="default",ended="operator"}')).toBe(1);
    expect(value('berth_shell_sessions_open{tenant="default"}')).toBe(0);
    // At least the 16 MB paste in, and the 200,000 lines out.
    expect(value('berth_shell_bytes_total{tenant="default",direction="in"}')).toBeGreaterThan(16_000_000);
    expect(value('berth_shell_bytes_total{tenant="default",direction="out"}')).toBeGreaterThan(1_288_894);
  });

  it('records what each session showed, timed (asciicast), but not what was typed with echo off', async () => {
    const s = await openSocket(`command=${encodeURIComponent('stty -echo; printf "password: "; read pw; stty echo; echo; echo "got ${#pw} characters"; printf "caf\\303\\251\\n"')}`);
    // Typed once the prompt is there, so echo is off by then (typed sooner, any terminal would echo it).
    await until(() => s.text().includes('password: '), 'the prompt');
    s.ws.send(Buffer.from('hunter2\n'), { binary: true });
    await s.exit;
    expect(s.text()).toContain('got 7 characters');
    const listed = JSON.parse((await berth(['shell', 'recordings', '--host', host.id, '--json'], env)).stdout) as { session: string; hostId: string; command: string; ended?: { how: string }; bytes: number }[];
    const rec = listed[0];
    expect(rec).toMatchObject({ hostId: host.id, command: expect.stringContaining('read pw') as unknown, openedBy: 'data dir token', ended: { how: 'exit code 0' } });
    const cast = await berth(['shell', 'recording', rec?.session ?? ''], env);
    const [header, ...events] = cast.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(header).toMatchObject({ version: 2, width: 80, height: 24, berth: { session: rec?.session, hostId: host.id } });
    const output = events.filter((e): e is [number, string, string] => Array.isArray(e) && e[1] === 'o').map((e) => e[2]).join('');
    expect(output).toContain('password: \r\ngot 7 characters\r\ncafé\r\n');
    expect(output).not.toContain('hunter2');
    expect(events.at(-1)).toEqual([expect.any(Number), 'm', 'ended: exit code 0']);
    const text = await berth(['shell', 'recording', rec?.session ?? '', '--text'], env);
    expect(text.stdout).toBe(output);
    const missing = await berth(['shell', 'recording', 'sh-0000000000'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no recording of shell session sh-0000000000');
  });

  it("takes the dashboard's cookie only from a page of this server (no cross-site terminal)", async () => {
    const withCookie = (origin: string) =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`${srv.server.url.replace('http', 'ws')}/v1/hosts/${host.id}/shell?command=true`, { headers: { cookie: `berth_token=${srv.server.token}`, origin } });
        ws.once('open', () => {
          ws.close();
          resolve(101);
        });
        ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.once('error', reject);
      });
    expect(await withCookie('http://attacker.example')).toBe(403);
    expect(await withCookie(srv.server.url)).toBe(101);
  });

  it('ends the session with a reason when its host goes away', async () => {
    const other = (await srv.api.post<HostView>('/v1/hosts', {})).body;
    const session = berth(['host', 'shell', other.id, '--', 'echo started; sleep 600'], env, { input: '', timeoutMs: 30_000 });
    await until(async () => (await srv.api.get<BerthEvent[]>(`/v1/events?kind=shell&host=${other.id}`)).body.some((e) => e.state === 'open'), 'the session to open');
    await srv.api.delete(`/v1/hosts/${other.id}`);
    const res = await session;
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`the agent of host ${other.id} disconnected`);
  });
});
