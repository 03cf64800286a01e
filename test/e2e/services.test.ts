/**
 * Supervised services on real hosts, through the API: the agent's supervisor converges to the set
 * the server sends, reports every state to the server, survives its own restart without touching
 * the services, and refuses a bad set without changing anything.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { HostView } from '../../src/hosts/views.js';
import type { HostServicesView } from '../../src/services/services-service.js';
import { agentPidOf, berth, useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthsvc0', subnet: '10.232.0.0/22', cgroupName: 'berthsvc' };

const web = { name: 'web', cmd: 'exec python3 -m http.server 8080 --bind 127.0.0.1', ports: [8080], env: { GREETING: 'hi' }, dependsOn: [], ready: { http: { port: 8080, path: '/' }, timeoutSeconds: 10 }, restart: { policy: 'always' } };
const worker = { name: 'worker', cmd: 'while :; do echo "tick $GREETING"; sleep 0.2; done', ports: [], env: { GREETING: 'worker' }, dependsOn: ['web'], restart: { policy: 'always' } };

describe('supervised services', () => {
  let srv: InProcessServer;
  let host: HostView;
  const server = useServer(NET);

  const put = (services: unknown[], wait = 20) => srv.api.put<HostServicesView & { code?: string; message?: string }>(`/v1/hosts/${host.id}/services?wait=${wait}`, { services });
  const get = async () => (await srv.api.get<HostServicesView>(`/v1/hosts/${host.id}/services`)).body;
  const byName = (view: HostServicesView, name: string) => view.services.find((s) => s.name === name)?.status;
  const run = async (command: string) => {
    const { body } = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: [command] }, wait: 30 });
    return body.invocations[0];
  };

  beforeAll(async () => {
    srv = server.srv;
    host = (await srv.api.post<HostView>('/v1/hosts', {})).body;
  });

  it('starts services in dependency order, each once its dependencies are ready, and reports them', async () => {
    const res = await put([worker, web]);
    expect(res.status).toBe(200);
    expect(byName(res.body, 'web')?.state).toBe('ready');
    expect(byName(res.body, 'worker')?.state).toBe('ready');
    const answer = await run('curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:8080/ || python3 -c "import urllib.request;print(urllib.request.urlopen(\'http://127.0.0.1:8080/\').status)"');
    expect(answer?.stdout).toContain('200');
    const since = (name: string) => new Date(byName(res.body, name)?.since ?? 0).getTime();
    expect(since('worker')).toBeGreaterThanOrEqual(since('web'));
  });

  it('restarts only the service whose configuration changed', async () => {
    const before = await get();
    const res = await put([{ ...worker, env: { GREETING: 'changed' } }, web]);
    expect(byName(res.body, 'web')?.pid).toBe(byName(before, 'web')?.pid);
    expect(byName(res.body, 'worker')?.pid).not.toBe(byName(before, 'worker')?.pid);
    const logs = await run('sleep 0.5; tail -n 3 /var/log/berth/worker.log');
    expect(logs?.stdout).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z tick changed$/m);
  });

  it('restarts a service that exits, and start/stop/restart act on one service', async () => {
    const before = byName(await get(), 'worker');
    await run(`kill -9 ${before?.pid ?? 0}`);
    const after = await waitFor('the worker restarted', async () => {
      const s = byName(await get(), 'worker');
      return s?.state === 'ready' && s.pid !== before?.pid ? s : undefined;
    });
    expect(after.restarts).toBe((before?.restarts ?? 0) + 1);
    expect(after.lastExit?.signal).toBe('SIGKILL');

    expect((await srv.api.post(`/v1/hosts/${host.id}/services/worker/stop`, {})).status).toBe(200);
    await waitFor('the worker stopped', async () => (byName(await get(), 'worker')?.state === 'stopped' ? true : undefined));
    expect((await srv.api.post(`/v1/hosts/${host.id}/services/worker/start`, {})).status).toBe(200);
    await waitFor('the worker ready again', async () => (byName(await get(), 'worker')?.state === 'ready' ? true : undefined));
    expect((await srv.api.post(`/v1/hosts/${host.id}/services/nope/restart`, {})).status).toBe(404);
  });

  it("keeps services running across the agent's own restart and re-adopts them", async () => {
    const before = await get();
    const agentPid = agentPidOf(srv.dataDir, host.id);
    execFileSync('kill', ['-9', String(agentPid)]);
    // The host's init restarts the agent; it reconnects, re-adopts, and reports the same processes.
    const after = await waitFor('the new agent to report', async () => {
      const view = await get();
      const fresh = view.reportedAt !== null && view.reportedAt !== before.reportedAt && view.agentConnected;
      return fresh && agentPidOf(srv.dataDir, host.id) !== agentPid && byName(view, 'web')?.state === 'ready' ? view : undefined;
    }, { timeoutMs: 30_000 });
    expect(byName(after, 'web')?.pid).toBe(byName(before, 'web')?.pid);
    expect(byName(after, 'worker')?.pid).toBe(byName(before, 'worker')?.pid);
  });

  it('refuses a bad set with a clear error and changes nothing', async () => {
    const before = await get();
    const cycle = await put([{ ...web, dependsOn: ['worker'] }, worker], 0);
    expect(cycle.status).toBe(400);
    expect(cycle.body.message).toMatch(/dependency cycle: (web -> worker -> web|worker -> web -> worker)/);
    const unknown = await put([{ ...worker, dependsOn: ['db'] }], 0);
    expect(unknown.body.message).toContain('depends on unknown service "db"');
    const badEnv = await put([{ ...web, env: { 'NOT-AN-ID': 'x' } }], 0);
    expect(badEnv.body.message).toContain('"NOT-AN-ID" is not a valid identifier');
    const after = await get();
    expect(after.services.map((s) => [s.name, s.configHash, s.status?.pid])).toEqual(before.services.map((s) => [s.name, s.configHash, s.status?.pid]));
  });

  it('host reset leaves nothing from before, and the services start again to ready', async () => {
    const before = await get();
    const setup = await run('echo junk > /root/leftover && echo BERTH_LEFTOVER=1 >> /etc/environment && (setsid sleep 1001 >/dev/null 2>&1 &) && echo ok');
    expect(setup?.stdout).toContain('ok');
    const reset = await srv.api.post<HostView>(`/v1/hosts/${host.id}/reset`, {});
    expect(reset.status).toBe(200);
    const after = await waitFor('the services to run again', async () => {
      const view = await get();
      return view.reportedAt !== before.reportedAt && view.services.every((s) => s.status?.state === 'ready') ? view : undefined;
    }, { timeoutMs: 30_000 });
    expect(after.services.map((s) => s.name).sort()).toEqual(['web', 'worker']);
    const check = await run('test -e /root/leftover && echo file-left; grep -c BERTH_LEFTOVER /etc/environment; ps -eo args | grep -c "^sleep 1001$"; true');
    expect(check?.stdout).not.toContain('file-left');
    expect(check?.stdout.trim().split('\n')).toEqual(['0', '0']);
  });

  it('a host removed while it is being reset is gone for good, nothing of it left running', async () => {
    const doomed = (await srv.api.post<HostView>('/v1/hosts', {})).body;
    const resetting = srv.api.post<HostView>(`/v1/hosts/${doomed.id}/reset`, {});
    await new Promise((r) => setTimeout(r, 30));
    const removed = await srv.api.delete<HostView>(`/v1/hosts/${doomed.id}`);
    await resetting;
    expect([removed.status, removed.body.state]).toEqual([200, 'terminated']);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await srv.api.get<HostView>(`/v1/hosts/${doomed.id}`)).body.state).toBe('terminated');
    // No machine of it: its network namespace and its directory are gone.
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(doomed.id);
    expect(existsSync(join(srv.dataDir, 'hosts', doomed.id))).toBe(false);
  });

  it('refuses to reset an unknown host, or a host waiting in a pool', async () => {
    const unknown = await srv.api.post<{ code: string }>('/v1/hosts/h-nope/reset', {});
    expect([unknown.status, unknown.body.code]).toEqual([404, 'host_not_found']);
    expect((await srv.api.post('/v1/pools', { name: 'resetpool', size: 1 })).status).toBe(201);
    const ready = await waitFor('a ready pool host', async () => {
      const { hosts } = (await srv.api.get<{ hosts: { id: string; slot: string | null }[] }>('/v1/pools/resetpool/hosts')).body;
      return hosts.find((h) => h.slot === 'ready');
    });
    const refused = await srv.api.post<{ code: string; hint: string }>(`/v1/hosts/${ready.id}/reset`, {});
    expect([refused.status, refused.body.code]).toEqual([409, 'invalid_state']);
    expect(refused.body.hint).toContain('release a claimed host with --reuse');
    await srv.api.delete('/v1/pools/resetpool');
  });

  it('stops services that are no longer wanted, in reverse dependency order', async () => {
    const before = await get();
    const res = await put([]);
    expect(res.body.services).toEqual([]);
    for (const name of ['web', 'worker']) {
      const pid = byName(before, name)?.pid;
      const alive = await run(`kill -0 ${pid ?? 0} 2>/dev/null && echo alive || echo gone`);
      expect(alive?.stdout.trim()).toBe('gone');
    }
  });

  it('rotates logs at the configured size and count while the service writes, and `svc logs -f` follows across rotation', async () => {
    // ~45 bytes a line with its timestamp: a 4 KiB file rotates about every 90 lines (a few per second).
    const chatty = { name: 'chatty', cmd: 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.004; done', logs: { maxBytes: 4096, keep: 2 }, restart: { policy: 'always' } };
    expect((await put([chatty])).status).toBe(200);
    const env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    const stop = new AbortController();
    const seen: number[] = [];
    let partial = '';
    const following = berth(['svc', 'logs', 'chatty', '--host', host.id, '-f', '-n', '0'], env, {
      interrupt: stop.signal,
      onStdout: (chunk) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          const n = /Z line (\d+)$/.exec(line)?.[1];
          if (n !== undefined) seen.push(Number(n));
        }
      },
    });
    await waitFor('several rotations followed', () => Promise.resolve(seen.length >= 1000 ? true : undefined), { timeoutMs: 30_000 });
    stop.abort();
    const done = await following;
    expect(done.code).toBe(0);
    // Every line once, in order, across the rotations that happened meanwhile.
    const first = seen[0] ?? 0;
    expect(seen.slice(0, 1000)).toEqual(Array.from({ length: 1000 }, (_, i) => first + i));
    const files = await run('ls /var/log/berth/ | grep chatty; wc -c < /var/log/berth/chatty.log.1');
    const lines = files?.stdout.trim().split('\n') ?? [];
    expect(lines.slice(0, -1)).toEqual(['chatty.log', 'chatty.log.1', 'chatty.log.2']);
    expect(Number(lines.at(-1))).toBeLessThanOrEqual(4096);
    // Ctrl-C ended the remote tail too: no command is left running on the host.
    const tails = await run('pgrep -f "follo[w] -n 0 /var/log/berth/chatty.log" || echo none');
    expect(tails?.stdout.trim()).toBe('none');
    expect((await put([])).status).toBe(200);
  });
});
