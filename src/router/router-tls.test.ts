/**
 * The router over HTTPS, with certificates made by openssl: pages and WebSockets through TLS with
 * `X-Forwarded-Proto: https`, https:// URLs, a renewed pair served to new connections without a
 * restart (and a broken one ignored), the plain-HTTP redirect, and every bad pair refused with
 * what to fix.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { makeCertificate, type TestCertificate } from '../../test/helpers/certs.js';
import { thrown } from '../../test/helpers/errors.js';
import { waitFor } from '../../test/helpers/wait.js';
import { EnvironmentRouter } from './router.js';
import { CertificateWatcher, loadTlsPair, routerTlsUse } from '../server/tls-files.js';
import { send, startBackend } from './test-backends.js';

const DOMAIN = 'envs.test';

/** A GET over TLS to 127.0.0.1:port as a browser at https://HOST/ sends it, trusting `ca` only; with the certificate the router showed. */
function getTls(port: number, host: string, ca: Buffer, path = '/'): Promise<{ status: number; body: string; headers: IncomingMessage['headers']; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path, servername: host, headers: { host: `${host}:${port}` }, ca, agent: false }, (res) => {
      const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers, fingerprint }));
    });
    req.on('error', reject);
  });
}

describe('the router over HTTPS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-router-tls-'));
  const first = makeCertificate(dir, 'first', [`*.${DOMAIN}`]);
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const setUp = async (cert: TestCertificate = first) => {
    const router = new EnvironmentRouter({ domain: DOMAIN });
    const port = await router.listen({ port: 0, host: '127.0.0.1', tls: { cert: cert.cert, key: cert.key } });
    cleanups.push(() => router.close());
    const backend = await startBackend('h-tls');
    cleanups.push(() => backend.kill());
    router.setRoute('shop', { backends: [{ id: backend.id, url: backend.url }], healthIntervalMs: 60_000 });
    return { router, port, backend };
  };

  it('serves pages over TLS, tells the app the request came over https, and gives https:// URLs', async () => {
    const { router, port, backend } = await setUp();
    const res = await getTls(port, `shop.${DOMAIN}`, first.cert, '/cart?x=1');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ backend: 'h-tls', url: '/cart?x=1' });
    expect(backend.seen[0]?.headers).toMatchObject({ 'x-forwarded-proto': 'https', 'x-forwarded-host': `shop.${DOMAIN}:${port}`, host: `shop.${DOMAIN}:${port}` });
    expect(router.urlFor('shop')).toBe(`https://shop.${DOMAIN}:${port}/`);
    // Plain HTTP to the TLS port is not answered as a page.
    await expect(send(port, `shop.${DOMAIN}`)).rejects.toThrow();
    // A client that does not trust the certificate gives up (nothing is sent on).
    await expect(getTls(port, `shop.${DOMAIN}`, makeCertificate(dir, 'stranger', [`*.${DOMAIN}`]).cert)).rejects.toThrow(/self-signed|verify/);
    expect(backend.seen).toHaveLength(1);
  });

  it('passes WebSockets through over TLS', async () => {
    const { port, backend } = await setUp();
    const wss = new WebSocketServer({ server: backend.server });
    cleanups.push(() => wss.close());
    const upgrades: IncomingMessage[] = [];
    wss.on('connection', (socket, req) => {
      upgrades.push(req);
      socket.on('message', (data) => socket.send(`echo: ${(data as Buffer).toString()}`));
    });
    // ws hands its options to https.request, servername included (its types leave it out).
    const options = { headers: { host: `shop.${DOMAIN}:${port}` }, servername: `shop.${DOMAIN}`, ca: first.cert };
    const ws = new WebSocket(`wss://127.0.0.1:${port}/live`, options);
    cleanups.push(() => ws.terminate());
    await once(ws, 'open');
    ws.send('hi');
    const [reply] = (await once(ws, 'message')) as [Buffer];
    expect(reply.toString()).toBe('echo: hi');
    expect(upgrades[0]?.headers['x-forwarded-proto']).toBe('https');
  });

  it('serves a renewed pair to new connections without a restart, and keeps serving when the files go bad', async () => {
    const live = { certFile: join(dir, 'live.crt'), keyFile: join(dir, 'live.key') };
    writeFileSync(live.certFile, first.cert);
    writeFileSync(live.keyFile, first.key);
    const { router, port } = await setUp();
    const logs: string[] = [];
    const watcher = new CertificateWatcher(live, routerTlsUse(DOMAIN), loadTlsPair(live, routerTlsUse(DOMAIN)), (pair) => router.setCertificate(pair), (line) => logs.push(line), { intervalMs: 50 });
    watcher.start();
    cleanups.push(() => watcher.stop());
    const before = await getTls(port, `shop.${DOMAIN}`, first.cert);

    const renewed = makeCertificate(dir, 'renewed', [`*.${DOMAIN}`, DOMAIN]);
    writeFileSync(live.keyFile, renewed.key);
    writeFileSync(live.certFile, renewed.cert);
    await waitFor('the renewed certificate served', () => Promise.resolve(logs.find((l) => l.startsWith('router: serving the new certificate'))), { timeoutMs: 5000 });
    const after = await getTls(port, `shop.${DOMAIN}`, renewed.cert);
    expect(after.status).toBe(200);
    expect(after.fingerprint).not.toBe(before.fingerprint);
    expect(logs).toEqual([expect.stringMatching(/^router: serving the new certificate \(DNS:\*\.envs\.test, DNS:envs\.test, valid until \d{4}-/)]);

    // Half-written (a key that does not match yet): logged, and the renewed pair keeps serving.
    writeFileSync(live.keyFile, first.key);
    await waitFor('the bad pair reported', () => Promise.resolve(logs.find((l) => l.includes('were not loaded'))), { timeoutMs: 5000 });
    expect(logs.at(-1)).toMatch(/the previous certificate keeps serving: the router's TLS key .* does not go with/);
    expect((await getTls(port, `shop.${DOMAIN}`, renewed.cert)).fingerprint).toBe(after.fingerprint);
  });

  it('redirects plain HTTP to HTTPS, path and query kept; a name outside its domain gets its page', async () => {
    const { router, port } = await setUp();
    const plain = await router.listenRedirect({ port: 0, host: '127.0.0.1' });
    const res = await send(plain, `shop.${DOMAIN}:${plain}`, '/a/b?c=1', { method: 'POST', body: 'x' });
    expect(res.status).toBe(308);
    expect(res.headers.location).toBe(`https://shop.${DOMAIN}:${port}/a/b?c=1`);
    expect((await send(plain, 'example.org')).status).toBe(404);
    expect(thrown(() => new EnvironmentRouter().setCertificate(first)).code).toBe('invalid_state');
  });

  it('refuses a pair that cannot serve, saying what to fix', () => {
    const other = makeCertificate(dir, 'other', ['*.other.test']);
    const garbage = join(dir, 'garbage.crt');
    writeFileSync(garbage, 'not a certificate');
    const cases: Array<[{ certFile: string; keyFile: string }, Date | undefined, RegExp]> = [
      [{ certFile: join(dir, 'missing.crt'), keyFile: first.keyFile }, undefined, /certificate .*missing\.crt cannot be read: ENOENT/],
      [{ certFile: garbage, keyFile: first.keyFile }, undefined, /holds no PEM certificate/],
      [{ certFile: first.certFile, keyFile: other.keyFile }, undefined, /key .*other\.key does not go with .*first\.crt/],
      [{ certFile: other.certFile, keyFile: other.keyFile }, undefined, /certificate is for DNS:\*\.other\.test, which does not cover the environments' names \(NAME\.envs\.test\)/],
      [first, new Date(Date.now() + 5 * 86_400_000), /is valid from .* to .*, not now/],
    ];
    for (const [files, now, message] of cases) {
      const err = thrown(() => loadTlsPair(files, routerTlsUse(DOMAIN), now));
      expect([err.code, err.message]).toEqual(['validation_failed', expect.stringMatching(message)]);
      expect(err.hint.length).toBeGreaterThan(10);
    }
    expect(loadTlsPair(first, routerTlsUse(DOMAIN)).names).toBe('DNS:*.envs.test');
  });
});
