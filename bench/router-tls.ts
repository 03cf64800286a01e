/**
 * What HTTPS costs a request through the router (`npm run bench -- spinup`): two routers of the same
 * build to the same backend, one plain and one with a certificate (P-256, made by openssl as the
 * tests make theirs), GETs taking turns in blocks (ABBA): over one kept-alive connection, and on a
 * new connection each (for HTTPS, a full TLS handshake). The client runs in this process, the same
 * for both, so the difference is the router's TLS.
 */
import http from 'node:http';
import https from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnvironmentRouter } from '../src/router/router.js';
import { makeCertificate } from '../test/helpers/certs.js';
import { ms, summarize } from './stats.js';

const DOMAIN = 'envs.test';

export async function routerTlsBench(opts: { requests: number; connections: number; progress: (line: string) => void }): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-tls-'));
  const cert = makeCertificate(dir, 'router', [`*.${DOMAIN}`]);
  const backend = http.createServer((_req, res) => res.end('ok\n'));
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  const plain = new EnvironmentRouter({ domain: DOMAIN });
  const secure = new EnvironmentRouter({ domain: DOMAIN });
  const ports = { http: await plain.listen({ port: 0, host: '127.0.0.1' }), https: await secure.listen({ port: 0, host: '127.0.0.1', tls: { cert: cert.cert, key: cert.key } }) };
  for (const router of [plain, secure]) router.setRoute('b', { backends: [{ id: 'b1', url }], healthIntervalMs: 60_000 });
  const kept = { http: new http.Agent({ keepAlive: true, maxSockets: 1 }), https: new https.Agent({ keepAlive: true, maxSockets: 1, ca: cert.cert }) };
  const get = (scheme: 'http' | 'https', agent: http.Agent | false): Promise<number> =>
    new Promise((resolve, reject) => {
      const t0 = performance.now();
      const options = { host: '127.0.0.1', port: ports[scheme], path: '/', headers: { host: `b.${DOMAIN}` }, agent, ...(scheme === 'https' ? { servername: `b.${DOMAIN}`, ca: cert.cert } : {}) };
      const req = (scheme === 'https' ? https : http).get(options, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`router answered ${res.statusCode ?? 0}`))));
      });
      req.on('error', reject);
    });
  const samples = { keptHttp: [] as number[], keptHttps: [] as number[], newHttp: [] as number[], newHttps: [] as number[] };
  try {
    // Warm both paths (the routers' backend connections, V8's code) before counting.
    for (let i = 0; i < 50; i++) await Promise.all([get('http', kept.http), get('https', kept.https)]);
    const block = 100;
    for (let done = 0; done < opts.requests; done += block) {
      opts.progress(`router over HTTPS: kept-alive ${done}/${opts.requests}`);
      // ABBA: each order half the time.
      const order: Array<'http' | 'https'> = (done / block) % 2 === 0 ? ['http', 'https'] : ['https', 'http'];
      for (const scheme of order) for (let i = 0; i < block; i++) (scheme === 'http' ? samples.keptHttp : samples.keptHttps).push(await get(scheme, kept[scheme]));
    }
    for (let i = 0; i < opts.connections; i++) {
      if (i % 50 === 0) opts.progress(`router over HTTPS: new connections ${i}/${opts.connections}`);
      const order: Array<'http' | 'https'> = i % 2 === 0 ? ['http', 'https'] : ['https', 'http'];
      for (const scheme of order) (scheme === 'http' ? samples.newHttp : samples.newHttps).push(await get(scheme, false));
    }
  } finally {
    kept.http.destroy();
    kept.https.destroy();
    await Promise.all([plain.close(), secure.close()]);
    await new Promise((resolve) => backend.close(resolve));
    rmSync(dir, { recursive: true, force: true });
    opts.progress('');
  }
  const [kh, ks, nh, ns] = [samples.keptHttp, samples.keptHttps, samples.newHttp, samples.newHttps].map(summarize) as [ReturnType<typeof summarize>, ReturnType<typeof summarize>, ReturnType<typeof summarize>, ReturnType<typeof summarize>];
  return [
    `| router GET, one kept-alive connection: HTTP / HTTPS (ABBA) | ${kh.n} / ${ks.n} | ${ms(kh.p50)} / ${ms(ks.p50)} | ${ms(kh.p99)} / ${ms(ks.p99)} | HTTPS / HTTP p50 ${(ks.p50 / kh.p50).toFixed(2)}x | |`,
    `| router GET, a new connection each: HTTP / HTTPS (a TLS handshake, P-256) | ${nh.n} / ${ns.n} | ${ms(nh.p50)} / ${ms(ns.p50)} | ${ms(nh.p99)} / ${ms(ns.p99)} | HTTPS / HTTP p50 ${(ns.p50 / nh.p50).toFixed(2)}x | |`,
  ];
}
