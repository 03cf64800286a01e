/**
 * Turning TLS on for the agent channel of a running installation: the server restarted with
 * `--agent-tls-*` on the same agent port. Hosts launched before dial it in plain; they are told to
 * switch (wss://, same address, the CA), keep that in their identity, and carry on as they were —
 * no host is lost or replaced, nothing on them is touched — and an agent that restarts dials TLS.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import { makeCa, makeCertificate } from '../helpers/certs.js';
import { agentPidOf, berth, startServer, type InProcessServer } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthsw0', subnet: '10.208.0.0/24', cgroupName: 'berthsw' };
const GATEWAY = '10.208.0.1';

describe('switching a running installation to TLS on the agent channel', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-tls-switch-'));
  let srv: InProcessServer | undefined;
  afterAll(async () => {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps every host: their agents are told to dial wss:// and keep doing so', async () => {
    const agentPort = await freePort();
    srv = await startServer(NET, { agentPort });
    expect(srv.server.agentUrl).toMatch(/^ws:\/\//);
    const launched = await srv.api.post<HostView>('/v1/hosts', {});
    expect(launched.status).toBe(201);
    const hostId = launched.body.id;
    let env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    const run = async (script: string): Promise<string> => {
      const ran = await berth(['run', '--host', hostId, '--json', '--', script], env);
      expect(ran.code, ran.stderr).toBe(0);
      return ran.stdout;
    };
    // Its user's state, which a replacement host would not have.
    await run('echo mine > /root/state; sleep 1000 >/dev/null 2>&1 & echo $! > /root/sleeper');

    // The operator turns TLS on: same data dir, same agent port.
    const ca = makeCa(dir, 'hosts');
    const live = { certFile: join(dir, 'agent.crt'), keyFile: join(dir, 'agent.key'), caFile: join(dir, 'ca.pem') };
    const pair = makeCertificate(dir, 'agent', [GATEWAY], ca);
    writeFileSync(live.certFile, pair.cert);
    writeFileSync(live.keyFile, pair.key);
    writeFileSync(live.caFile, ca.cert);
    await srv.stop({ removeHosts: false });
    srv = await startServer(NET, { dataDir: srv.dataDir, agentTls: live, agentPort });
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    expect(srv.server.agentUrl).toBe(`wss://${GATEWAY}:${agentPort}/v1/agent`);
    const api = srv.api;
    const connected = () => waitFor("the host's agent back", async () => ((await api.get<HostView>(`/v1/hosts/${hostId}`)).body.agent.connected ? true : undefined), { timeoutMs: 20_000 });
    await connected();

    // The same host, untouched: its file, its process; and its agent keeps the new channel.
    expect((await api.get<{ hosts: HostView[] }>('/v1/hosts')).body.hosts.map((h) => [h.id, h.state])).toEqual([[hostId, 'running']]);
    expect(await run('cat /root/state; kill -0 "$(cat /root/sleeper)" && echo sleeper-alive')).toMatch(/mine[\s\S]*sleeper-alive/);
    const kept = await run('cat /etc/berth/agent.json');
    expect(kept).toContain(`wss://${GATEWAY}:${agentPort}/v1/agent`);
    expect(kept).toContain(ca.cert.toString().split('\n')[1] ?? 'none');
    // Commands get the CA for what they fetch from the server (slugs): as on a host launched with TLS.
    expect(await run('test -s "$BERTH_SERVER_CA_FILE" && echo has-ca')).toContain('has-ca');

    // The agent restarts (its init starts it again): it dials TLS straight away from its identity.
    const before = agentPidOf(srv.dataDir, hostId);
    process.kill(before, 'SIGKILL');
    await waitFor('a new agent process', () => Promise.resolve(agentPidOrNone(srv?.dataDir ?? '', hostId, before)), { timeoutMs: 10_000 });
    await connected();
    expect(await run('echo after-restart')).toContain('after-restart');
    // Told once: the restarted agent did not dial in plain again.
    const consoleLog = readFileSync(join(srv.dataDir, 'hosts', hostId, 'console.log'), 'utf8');
    expect(consoleLog.split('the server now serves the agent channel over TLS').length - 1).toBe(1);
  }, 120_000);
});

function agentPidOrNone(dataDir: string, hostId: string, old: number): true | undefined {
  try {
    return agentPidOf(dataDir, hostId) !== old ? true : undefined;
  } catch {
    return undefined;
  }
}
