/** `berth run` end to end: CLI -> server -> agent in a real host, and back. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentGateway } from '../../src/agents/gateway.js';
import type { CommandView } from '../../src/commands/views.js';
import { CommandsRepo } from '../../src/store/commands-repo.js';
import type { HostView } from '../../src/hosts/views.js';
import { agentPidOf, berth, startServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthrun0', subnet: '10.217.0.0/24', cgroupName: 'berthrun' };

describe('berth run', () => {
  let srv: InProcessServer;
  let host: HostView;
  let env: Record<string, string>;

  const runJson = async (...args: string[]) => {
    const res = await berth(['run', '--host', host.id, '--json', ...args], env);
    const view = JSON.parse(res.stdout) as CommandView;
    const inv = view.invocations[0];
    if (!inv) throw new Error(`no invocation: ${res.stdout} ${res.stderr}`);
    return { code: res.code, view, inv };
  };

  beforeAll(async () => {
    srv = await startServer(NET);
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    const launched = await berth(['host', 'launch', '--json', '--tag', 'suite=run'], env);
    expect(launched.code).toBe(0);
    host = JSON.parse(launched.stdout) as HostView;
    expect(host).toMatchObject({ state: 'running', tags: { suite: 'run' } });
    expect(host.id).toMatch(/^h-/);
    expect(host.ip).toBeTruthy();
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it('echo hi: Success, its output, exit code 0', async () => {
    const { code, view, inv } = await runJson('--', 'echo', 'hi');
    expect(code).toBe(0);
    expect(view.status).toBe('Success');
    expect(inv).toMatchObject({ hostId: host.id, status: 'Success', exitCodes: [0], stdout: 'hi\n', stderr: '', truncated: false });
  });

  it('prints plain output for humans', async () => {
    const res = await berth(['run', '--host', host.id, '--', 'echo', 'hello world'], env);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('hello world\n');
    expect(res.stderr).toContain('Success');
  });

  it('false: Failed, exit code 1, CLI exits 1', async () => {
    const { code, view, inv } = await runJson('--', 'false');
    expect(code).toBe(1);
    expect(view.status).toBe('Failed');
    expect(inv.exitCodes).toEqual([1]);
  });

  it('stops at the first failing command and reports every exit code', async () => {
    const { inv } = await runJson('-c', 'true', '-c', 'false', '-c', 'echo never');
    expect(inv.status).toBe('Failed');
    expect(inv.exitCodes).toEqual([0, 1]);
    expect(inv.stdout).not.toContain('never');
    expect(inv.statusDetail).toContain('command 2 of 3');
  });

  it('sleep 30 with --timeout 1: TimedOut, and no process of it is left', async () => {
    const started = Date.now();
    const { code, inv } = await runJson('--timeout', '1', '--', 'sleep 30 & sleep 31; wait');
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(code).toBe(1);
    expect(inv.status).toBe('TimedOut');
    const left = await runJson('--', "ps -eo args= | grep -E '^sleep 3[01]$' | wc -l");
    expect(left.inv.stdout.trim()).toBe('0');
  });

  it("--kill-grace sets the command's time between TERM and KILL: 0 gives a trapped clean-up none", async () => {
    const cleanup = "trap 'sleep 0.5; echo cleaned; exit 7' TERM; sleep 30 & wait";
    const graced = await runJson('--timeout', '1', '--', cleanup);
    expect([graced.inv.status, graced.inv.exitCodes, graced.inv.stdout]).toEqual(['TimedOut', [7], 'cleaned\n']);
    const none = await runJson('--timeout', '1', '--kill-grace', '0', '--', cleanup);
    expect([none.inv.status, none.inv.exitCodes, none.inv.stdout]).toEqual(['TimedOut', [137], '']);
    expect((await berth(['run', '--host', host.id, '--kill-grace', '-1', '--', 'true'], env)).code).toBe(2);
    const tooLong = await fetch(`${srv.server.url}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${srv.server.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ targets: { hostIds: [host.id] }, parameters: { commands: ['true'], killGrace: 601 } }),
    });
    expect(tooLong.status).toBe(400);
  });

  it('a command printing 1 MiB: head and tail kept, marked truncated', async () => {
    const { inv } = await runJson('--', "head -c 1048576 /dev/zero | tr '\\0' 'x'; echo; echo END");
    expect(inv.status).toBe('Success');
    expect(inv.truncated).toBe(true);
    expect(inv.stdoutBytes).toBe(1048576 + 1 + 4);
    expect(inv.stdout.startsWith('xxxx')).toBe(true);
    expect(inv.stdout.endsWith('END\n')).toBe(true);
    expect(inv.stdout).toMatch(/\[berth: \d+ bytes omitted\]/);
    expect(Buffer.byteLength(inv.stdout)).toBeLessThan(70 * 1024);
  });

  it('a working directory that does not exist: Failed, nothing runs, a clear message', async () => {
    const { code, inv } = await runJson('--cwd', '/no/such/dir', '--', 'touch /tmp/should-not-exist');
    expect(code).toBe(1);
    expect(inv.status).toBe('Failed');
    expect(inv.exitCodes).toEqual([]);
    expect(inv.statusDetail).toContain('/no/such/dir');
    const check = await runJson('--', 'test -e /tmp/should-not-exist && echo yes || echo no');
    expect(check.inv.stdout).toBe('no\n');
  });

  it('runs in the working directory and with the environment given', async () => {
    const { inv } = await runJson('--cwd', '/etc', '--env', 'GREETING=hej', '--', 'pwd; echo $GREETING');
    expect(inv.stdout).toBe('/etc\nhej\n');
  });

  it('follows output live, as the host prints it', async () => {
    const arrivals: { at: number; text: string }[] = [];
    const res = await berth(['run', '--host', host.id, '--follow', '--', 'echo one; sleep 1; echo two'], env, {
      onStdout: (text) => arrivals.push({ at: Date.now(), text }),
    });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('one\ntwo\n');
    const one = arrivals.find((a) => a.text.includes('one'));
    const two = arrivals.find((a) => a.text.includes('two'));
    expect(one && two && two.at - one.at).toBeGreaterThan(700);
  });

  it('cancels a running command: Cancelled, nothing left', async () => {
    const sent = await berth(['run', '--host', host.id, '--no-wait', '--json', '--', 'sleep 120'], env);
    const id = (JSON.parse(sent.stdout) as CommandView).id;
    await new Promise((r) => setTimeout(r, 300));
    const cancelled = await berth(['cmd', 'cancel', id, '--json'], env);
    expect(cancelled.code).toBe(0);
    const shown = await berth(['cmd', 'show', id, '--wait', '10', '--json'], env);
    expect((JSON.parse(shown.stdout) as CommandView).status).toBe('Cancelled');
    const left = await runJson('--', "ps -eo args= | grep -E '^sleep 120$' | wc -l");
    expect(left.inv.stdout.trim()).toBe('0');
  });

  it('a command its agent does not accept in time ends DeliveryTimedOut, and never runs later', async () => {
    // A stopped agent keeps its connection open but accepts nothing.
    const agent = agentPidOf(srv.dataDir, host.id);
    process.kill(agent, 'SIGSTOP');
    try {
      const res = await srv.api.post<CommandView>('/v1/commands', {
        targets: { hostIds: [host.id] },
        parameters: { commands: ['touch /tmp/ran-too-late'] },
        deliveryTimeout: 1,
        wait: 10,
      });
      expect(res.body.status).toBe('DeliveryTimedOut');
      expect(res.body.invocations[0]?.statusDetail).toContain('not delivered within 1 s');
    } finally {
      process.kill(agent, 'SIGCONT');
    }
    await new Promise((r) => setTimeout(r, 500));
    expect((await runJson('--', 'test -e /tmp/ran-too-late && echo ran || echo never-ran')).inv.stdout).toBe('never-ran\n');
  });

  it('stops a run the server had already ended when its agent reconnects still running it', async () => {
    const sent = await berth(['run', '--host', host.id, '--no-wait', '--json', '--', 'sleep 121'], env);
    const id = (JSON.parse(sent.stdout) as CommandView).id;
    await new Promise((r) => setTimeout(r, 300));
    // As when the server's watchdog ended it while the agent was away (or its acceptance was lost).
    const ended = await new CommandsRepo(srv.server.store.db).updateInvocation(id, host.id, ['InProgress'], { status: 'TimedOut', statusDetail: 'ended by the server (test)', finishedAt: new Date() });
    expect(ended?.status).toBe('TimedOut');
    (srv.server as unknown as { gateway: AgentGateway }).gateway.disconnect(host.id, 'test: drop the connection');
    const left = async () => (await runJson('--', "ps -eo args= | grep -E '^sleep 121$' | wc -l")).inv.stdout.trim();
    await waitFor('the run to be stopped', async () => ((await left().catch(() => '?')) === '0' ? true : undefined), { timeoutMs: 15_000 });
    expect((await srv.api.get<CommandView>(`/v1/commands/${id}`)).body.status).toBe('TimedOut');
  });

  it('targets hosts by tag', async () => {
    const res = await berth(['run', '--tag', 'suite=run', '--json', '--', 'echo tagged'], env);
    const view = JSON.parse(res.stdout) as CommandView;
    expect(view.invocations.map((i) => i.hostId)).toEqual([host.id]);
    expect(view.invocations[0]?.stdout).toBe('tagged\n');
  });

  it('lists hosts and commands as JSON', async () => {
    const hosts = JSON.parse((await berth(['host', 'ls', '--json'], env)).stdout) as HostView[];
    expect(hosts.map((h) => h.id)).toContain(host.id);
    const cmds = JSON.parse((await berth(['cmd', 'ls', '--json'], env)).stdout) as CommandView[];
    expect(cmds.length).toBeGreaterThan(5);
  });

  it('refuses a host whose agent is not connected, naming it, its state and when it was last seen', async () => {
    // Kill the agent from inside (the host's init restarts it after a second): while it is away,
    // a command to this host must fail at once with a useful message.
    const killed = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: ['kill -KILL $PPID'] } });
    expect(killed.status).toBe(201);
    const deadline = Date.now() + 5000;
    while ((await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.agent.connected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const res = await srv.api.post<{ code: string; message: string; details: Record<string, unknown> }>('/v1/commands', {
      targets: { hostIds: [host.id] },
      parameters: { commands: ['true'] },
    });
    expect(res.status).toBe(409);
    expect(res.body.code).toBe('host_not_connected');
    expect(res.body.message).toContain(host.id);
    expect(res.body.message).toContain('running');
    expect(res.body.message).toMatch(/agent last seen \d{4}-/);
    expect(res.body.details).toMatchObject({ hostId: host.id, state: 'running' });

    // The agent comes back by itself; the command that killed it ends in a defined status.
    const reconnectBy = Date.now() + 10_000;
    while (!(await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.agent.connected && Date.now() < reconnectBy) await new Promise((r) => setTimeout(r, 50));
    const settled = await srv.api.get<CommandView>(`/v1/commands/${killed.body.id}?wait=10`);
    expect(settled.body.status).toBe('Failed');
    expect(settled.body.invocations[0]?.statusDetail).toContain('agent restarted');
    expect((await runJson('--', 'echo', 'back')).inv.stdout).toBe('back\n');
  });

  it("kills what is left of a command whose agent died, the shell running its script included", async () => {
    await new Promise((r) => setTimeout(r, 300)); // the agent's warm shell is ready again
    const loop = await srv.api.post<CommandView>('/v1/commands', {
      targets: { hostIds: [host.id] },
      // Its output goes nowhere: no write to the dead agent's pipes stops it (SIGPIPE) on its own.
      parameters: { commands: ['exec >/dev/null 2>&1; while :; do date +%s%N > /tmp/loop-alive; sleep 0.1; done'] },
    });
    expect(loop.status).toBe(201);
    await new Promise((r) => setTimeout(r, 500));
    process.kill(agentPidOf(srv.dataDir, host.id), 'SIGKILL');
    const settled = await srv.api.get<CommandView>(`/v1/commands/${loop.body.id}?wait=15`);
    expect(settled.body.invocations[0]?.statusDetail).toContain('its processes were killed');
    const alive = async () => (await runJson('--', 'cat /tmp/loop-alive')).inv.stdout;
    const before = await alive();
    await new Promise((r) => setTimeout(r, 600));
    expect(await alive()).toBe(before);
  });

  it('gives the agent the tags that changed while it was away', async () => {
    process.kill(agentPidOf(srv.dataDir, host.id), 'SIGKILL');
    const awayBy = Date.now() + 5000;
    while ((await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.agent.connected && Date.now() < awayBy) await new Promise((r) => setTimeout(r, 20));
    // The host's init starts it again a second later: meanwhile its tags change.
    expect((await berth(['host', 'tag', host.id, 'while-away=yes'], env)).code).toBe(0);
    const backBy = Date.now() + 10_000;
    while (!(await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.agent.connected && Date.now() < backBy) await new Promise((r) => setTimeout(r, 50));
    await waitFor('the tags file to follow', async () => ((await runJson('--', 'cat /etc/berth/tags.json')).inv.stdout.includes('"while-away":"yes"') ? true : undefined), { timeoutMs: 5000 });
    expect(JSON.parse((await runJson('--', 'printf %s "$BERTH_TAGS"')).inv.stdout)).toMatchObject({ 'while-away': 'yes' });
  });

  it('exits 2 on bad usage and changes nothing', async () => {
    const before = (JSON.parse((await berth(['cmd', 'ls', '--json', '--limit', '1000'], env)).stdout) as CommandView[]).length;
    expect((await berth(['run', '--host', host.id], env)).code).toBe(2);
    expect((await berth(['run', '--', 'true'], env)).code).toBe(2);
    expect((await berth(['run', '--host', host.id, '--timeout', '-1', '--', 'true'], env)).code).toBe(2);
    expect((await berth(['run', '--host', 'h-doesnotexist', '--', 'true'], env)).code).toBe(2);
    expect((await berth(['frobnicate'], env)).code).toBe(2);
    const after = (JSON.parse((await berth(['cmd', 'ls', '--json', '--limit', '1000'], env)).stdout) as CommandView[]).length;
    expect(after).toBe(before);
  });
});
