/**
 * A server that serves HTTPS everywhere (`--tls-cert/--tls-key` for the API, `--router-tls-cert/
 * --router-tls-key` for the router; here through its config), on real hosts through the real CLI:
 * the CLI trusts a self-signed API certificate through BERTH_CA_FILE (or, on the server's machine,
 * through the data dir) and refuses it otherwise; `env create` prints an https:// URL that answers
 * the app's page, the app is told the request came over https, a private environment's link gives
 * a cookie marked Secure, and plain HTTP on the redirect port is sent to HTTPS.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCertificate } from '../helpers/certs.js';
import { getUrl } from '../helpers/http-get.js';
import { berth, startServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthtls0', subnet: '10.243.0.0/24', cgroupName: 'berthtls' };
const DOMAIN = 'envs.test';

// The page shows what the app was told about the request.
const berthYaml = `stacks:
  app:
    services:
      web:
        cmd: |
          cat > /tmp/app.py <<'EOF'
          import http.server as h
          class H(h.BaseHTTPRequestHandler):
              def do_GET(self):
                  body = ('proto=%s\\n' % self.headers.get('X-Forwarded-Proto')).encode()
                  self.send_response(200)
                  self.send_header('Content-Length', str(len(body)))
                  self.end_headers()
                  self.wfile.write(body)
          h.ThreadingHTTPServer(('', 8080), H).serve_forever()
          EOF
          exec python3 /tmp/app.py
        ports: [8080]
        ready: {http: 8080}
        stopTimeout: 1s
pools:
  - name: app
    size: 1
    template: {tags: {berth.stack: app, berth.mode: review}}
`;

/** Names under DOMAIN resolve nowhere: every request goes to this machine, as the name's. */
const request = (url: URL, ca: Buffer, headers: Record<string, string> = {}) => getUrl(url, { ca, headers, address: '127.0.0.1' });

describe('environments over HTTPS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-https-'));
  // One certificate for both: the router's names and the API's address.
  const cert = makeCertificate(dir, 'server', [`*.${DOMAIN}`, '127.0.0.1']);
  let srv: InProcessServer;
  let env: Record<string, string>;
  const redirectPort = 9611;

  beforeAll(async () => {
    const files = { certFile: cert.certFile, keyFile: cert.keyFile };
    srv = await startServer(NET, { router: { domain: DOMAIN, tls: files, redirectPort }, tls: files });
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token, BERTH_CA_FILE: cert.certFile };
    const file = join(dir, 'berth.yaml');
    writeFileSync(file, berthYaml);
    const applied = await berth(['apply', '-f', file], env);
    expect(applied.code, applied.stderr).toBe(0);
    await waitFor('the pool full', async () => ((await srv.api.get<{ status: { ready: number } }>('/v1/pools/app')).body.status.ready >= 1) || undefined, { timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the API over HTTPS: the CLI trusts it through BERTH_CA_FILE or the data dir, and refuses an unknown certificate', async () => {
    expect(srv.server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const listed = await berth(['pool', 'ls', '--json'], env);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ name: 'app' })]);
    const untrusted = await berth(['pool', 'ls'], { BERTH_URL: env['BERTH_URL'] ?? '', BERTH_TOKEN: env['BERTH_TOKEN'] ?? '' });
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/cannot reach the berth server at https:\/\/127\.0\.0\.1:\d+: self-signed certificate/);
    // On the server's machine the data dir says where the server is and which certificate it shows.
    const local = await berth(['--data-dir', srv.dataDir, 'pool', 'ls', '--json'], {});
    expect(local.code, local.stderr).toBe(0);
    // Both certificates' expiry, for an alert before a renewal that did not happen.
    const metrics = await request(new URL(`${srv.server.url}/metrics`), cert.cert, { authorization: `Bearer ${srv.server.token}` });
    const expiry = new Date(new X509Certificate(cert.cert).validTo).getTime() / 1000;
    for (const listener of ['api', 'router']) expect(metrics.body).toContain(`berth_tls_certificate_expiry_timestamp_seconds{listener="${listener}"} ${expiry}\n`);
    // The dashboard's token cookie is for HTTPS only.
    const dashboard = await request(new URL(`${srv.server.url}/dashboard?token=${encodeURIComponent(srv.server.token)}`), cert.cert);
    expect(dashboard.headers['set-cookie']?.[0]).toMatch(/; HttpOnly; SameSite=Strict; Path=\/; Secure$/);
    const missing = await berth(['pool', 'ls'], { ...env, BERTH_CA_FILE: join(dir, 'none.pem') });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/the CA file .*none\.pem cannot be read/);
  });

  it('prints an https:// URL that answers, tells the app it came over https, and redirects plain HTTP', async () => {
    const created = await berth(['env', 'create', 'shop', '--stack', 'app'], env, { timeoutMs: 60_000 });
    expect(created.code, created.stderr).toBe(0);
    const url = new URL(created.stdout.trim());
    expect(url.protocol).toBe('https:');
    expect(url.hostname).toBe(`shop.${DOMAIN}`);
    expect(await request(url, cert.cert)).toMatchObject({ status: 200, body: 'proto=https\n' });
    const plain = await request(new URL(`http://shop.${DOMAIN}:${redirectPort}/x?y=1`), cert.cert);
    expect([plain.status, plain.headers.location]).toEqual([308, `https://shop.${DOMAIN}:${url.port}/x?y=1`]);
  });

  it("gives a private environment's browser a cookie marked Secure", async () => {
    expect((await berth(['env', 'access', 'shop', 'private'], env)).code).toBe(0);
    const anonymous = await request(new URL(`https://shop.${DOMAIN}:${new URL(srv.server.router.urlFor('shop') ?? '').port}/`), cert.cert);
    expect(anonymous.status).toBe(401);
    const opened = await berth(['env', 'open', 'shop'], env);
    expect(opened.code, opened.stderr).toBe(0);
    const link = new URL(opened.stdout.trim());
    expect(link.protocol).toBe('https:');
    const exchanged = await request(link, cert.cert);
    expect(exchanged.status).toBe(303);
    const setCookie = exchanged.headers['set-cookie']?.[0] ?? '';
    expect(setCookie).toMatch(/^berth_access=[^;]+; HttpOnly; SameSite=Lax; Path=\/; Max-Age=43200; Secure$/);
    const page = await request(new URL(link.origin), cert.cert, { cookie: setCookie.split(';')[0] ?? '' });
    expect(page).toMatchObject({ status: 200, body: 'proto=https\n' });
    expect((await berth(['env', 'rm', 'shop'], env)).code).toBe(0);
  });

  it('serves renewed files on the API and the router without a restart', async () => {
    const shown = (port: string, servername: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: Number(port), servername, rejectUnauthorized: false }, () => {
          resolve(socket.getPeerCertificate().fingerprint256);
          socket.end();
        });
        socket.on('error', reject);
      });
    const apiPort = new URL(srv.server.url).port;
    const routerPort = new URL(srv.server.router.urlFor('x') ?? '').port;
    const before = cert.cert.toString();
    const renewed = makeCertificate(dir, 'renewed', [`*.${DOMAIN}`, '127.0.0.1']);
    writeFileSync(cert.keyFile, renewed.key);
    writeFileSync(cert.certFile, renewed.cert);
    const fingerprint = new X509Certificate(renewed.cert).fingerprint256;
    await waitFor('the renewed certificate on both', async () => ((await shown(apiPort, '127.0.0.1')) === fingerprint && (await shown(routerPort, `x.${DOMAIN}`)) === fingerprint) || undefined, { timeoutMs: 10_000 });
    expect(renewed.cert.toString()).not.toBe(before);
    // The CLI trusts the file as it is now.
    expect((await berth(['pool', 'ls'], env)).code).toBe(0);
  });
});
