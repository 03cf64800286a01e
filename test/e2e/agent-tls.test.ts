/**
 * The agent channel over TLS on real hosts (`--agent-tls-cert/--agent-tls-key/--agent-tls-ca`;
 * here through the server's config): hosts are told the CA and dial wss://, so a pool fills and
 * claims run commands as on a plain channel; a slug reaches its hosts over https:// (the agent's
 * fetch trusts the same CA); plain HTTP on the port gets only "use TLS"; and /metrics shows the certificate's
 * expiry. The certificate is issued by a test CA for the bridge's address, as an operator's would be.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create as createTar } from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCa, makeCertificate } from '../helpers/certs.js';
import { getUrl } from '../helpers/http-get.js';
import { berth, startServer, type InProcessServer } from '../helpers/server.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthatl0', subnet: '10.215.0.0/24', cgroupName: 'berthatl' };
const GATEWAY = '10.215.0.1';

const berthYaml = `stacks:
  app:
    services:
      web:
        cmd: exec python3 -m http.server 8080
        ports: [8080]
        ready: {http: 8080}
        stopTimeout: 1s
pools:
  - name: app
    size: 1
    template: {tags: {berth.stack: app, berth.mode: review}}
`;

describe('the agent channel over TLS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-agent-tls-'));
  const ca = makeCa(dir, 'hosts');
  // The files the server reads, rewritten in place as an operator's renewal would.
  const live = { certFile: join(dir, 'live.crt'), keyFile: join(dir, 'live.key'), caFile: join(dir, 'live-ca.pem') };
  const install = (c: { cert: Buffer; key: Buffer }) => {
    writeFileSync(live.keyFile, c.key);
    writeFileSync(live.certFile, c.cert);
  };
  let agentPort: number;
  let srv: InProcessServer;
  let env: Record<string, string>;

  beforeAll(async () => {
    install(makeCertificate(dir, 'agent', [GATEWAY], ca));
    writeFileSync(live.caFile, ca.cert);
    agentPort = await freePort(); // hosts dial the same port after the restart below
    srv = await startServer(NET, { agentTls: live, agentPort });
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    const file = join(dir, 'berth.yaml');
    writeFileSync(file, berthYaml);
    const applied = await berth(['apply', '-f', file], env);
    expect(applied.code, applied.stderr).toBe(0);
    await waitFor('the pool full', async () => ((await srv.api.get<{ status: { ready: number } }>('/v1/pools/app')).body.status.ready >= 1) || undefined, { timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fills a pool over wss://, and a claim runs commands that see the CA they may use', async () => {
    expect(srv.server.agentUrl).toMatch(new RegExp(`^wss://${GATEWAY.replace(/\./g, '\\.')}:\\d+/v1/agent$`));
    const claimed = await berth(['claim', 'app', '--group', 'tls-user', '--init', 'echo ready', '--json'], env);
    expect(claimed.code, claimed.stderr).toBe(0);
    const hostId = (JSON.parse(claimed.stdout) as { host: { id: string } }).host.id;
    const ran = await berth(['run', '--host', hostId, '--json', '--', 'cat "$BERTH_SERVER_CA_FILE"'], env);
    expect(ran.code, ran.stderr).toBe(0);
    // The CA's own lines (base64, no JSON escapes in them), not only a PEM header.
    for (const line of ca.cert.toString().trim().split('\n')) expect(ran.stdout).toContain(line);
    const released = await berth(['release', hostId], env);
    expect(released.code, released.stderr).toBe(0);
  });

  it('serves a slug to its hosts over https://, and answers plain HTTP on the port only with "use TLS"', async () => {
    const app = join(dir, 'app');
    mkdirSync(app, { recursive: true });
    writeFileSync(join(app, 'index.html'), 'slug over tls\n');
    writeFileSync(join(app, 'Procfile'), 'web: exec python3 -m http.server $PORT\n');
    const slug = join(dir, 'app.tgz');
    await createTar({ gzip: true, file: slug, cwd: app, portable: true }, ['.']);
    const created = await berth(['env', 'create', 'sluggy', '--stack', 'app', '--ref', slug, '--json'], env);
    expect(created.code, created.stderr).toBe(0);
    const { url } = JSON.parse(created.stdout) as { url: string };
    const page = await getUrl(new URL(url), { address: '127.0.0.1' });
    expect(page).toMatchObject({ status: 200, body: 'slug over tls\n' });
    await berth(['env', 'rm', 'sluggy'], env);

    const port = new URL(srv.server.agentUrl).port;
    // Plain HTTP on the agent port gets only "use TLS" (agents launched before TLS are told to switch:
    // agent-tls-switch.test.ts); over TLS with the CA it is answered (and says what it is for).
    const plain = await fetch(`http://${GATEWAY}:${port}/`);
    expect(plain.status).toBe(426);
    expect(await plain.text()).toContain('this port serves the agent channel over TLS');
    const answered = await getUrl(new URL(`https://${GATEWAY}:${port}/`), { ca: ca.cert });
    expect(answered.status).toBe(404);
    expect(answered.body).toContain('this port serves only the agent channel');
    // Nobody who does not trust the CA gets that far.
    await expect(getUrl(new URL(`https://${GATEWAY}:${port}/`))).rejects.toThrow(/unable to (verify the first certificate|get local issuer certificate)/);
  });

  it('rolls the CA over under running hosts, which keep it across a restart of the server', async () => {
    const claimed = await berth(['claim', 'app', '--group', 'roll', '--json'], env);
    expect(claimed.code, claimed.stderr).toBe(0);
    const hostId = (JSON.parse(claimed.stdout) as { host: { id: string } }).host.id;
    const identity = async (): Promise<string> => {
      const ran = await berth(['run', '--host', hostId, '--json', '--', 'cat /etc/berth/agent.json'], env);
      expect(ran.code, ran.stderr).toBe(0);
      return ran.stdout;
    };
    const lineOf = (c: { cert: Buffer }) => c.cert.toString().split('\n')[1] ?? 'none';
    // The next CA beside the old: the running host is told, and keeps both in its identity.
    const next = makeCa(dir, 'next');
    writeFileSync(live.caFile, `${ca.cert.toString().trim()}\n${next.cert.toString().trim()}\n`);
    await waitFor('the host to keep the bundle', async () => ((await identity()).includes(lineOf(next)) ? true : undefined), { timeoutMs: 10_000 });
    expect(await identity()).toContain(lineOf(ca));
    // The certificate renewed from the next CA, then the old CA dropped.
    install(makeCertificate(dir, 'of-next', [GATEWAY], next));
    await waitFor('the next certificate served', () => getUrl(new URL(`https://${GATEWAY}:${agentPort}/`), { ca: next.cert }).then(() => true, () => undefined), { timeoutMs: 10_000 });
    writeFileSync(live.caFile, next.cert);
    await waitFor('the host to drop the old CA', async () => ((await identity()).includes(lineOf(ca)) ? undefined : true), { timeoutMs: 10_000 });
    // A restart: the host's agent dials again, trusting only the next CA now, and is served.
    await srv.stop({ removeHosts: false });
    srv = await startServer(NET, { dataDir: srv.dataDir, agentTls: live, agentPort });
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    await waitFor('the host\'s agent back', async () => ((await srv.api.get<{ agent: { connected: boolean } }>(`/v1/hosts/${hostId}`)).body.agent.connected ? true : undefined), { timeoutMs: 20_000 });
    const ran = await berth(['run', '--host', hostId, '--json', '--', 'echo still-here'], env);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout).toContain('still-here');
    await berth(['release', hostId], env);
  });

  it('reports when the agent channel certificate expires', async () => {
    const metrics = await (await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } })).text();
    const expiry = /berth_tls_certificate_expiry_timestamp_seconds\{listener="agent"\} (\d+)/.exec(metrics);
    expect(expiry).not.toBeNull();
    const seconds = Number(expiry?.[1]);
    expect(seconds * 1000).toBeGreaterThan(Date.now() + 86_400_000); // two days, as made
  });
});
