/** GETs for tests of HTTP and HTTPS listeners, as a browser at the URL would send them. */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';

export interface GetOptions {
  /** Over https, trust only this certificate (or CA); default the public CAs. */
  ca?: Buffer;
  headers?: Record<string, string>;
  /** Connect here instead of the URL's host (a router on loopback answering NAME.localhost); Host and SNI stay the URL's. */
  address?: string;
}

export function getUrl(url: URL, opts: GetOptions = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const options = { host: opts.address ?? url.hostname, port: url.port, path: `${url.pathname}${url.search}`, headers: { host: url.host, ...opts.headers }, agent: false };
    const onResponse = (res: http.IncomingMessage) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    };
    const tls = { ...(isIP(url.hostname) ? {} : { servername: url.hostname }), ...(opts.ca ? { ca: opts.ca } : {}) };
    const req = url.protocol === 'https:' ? https.get({ ...options, ...tls }, onResponse) : http.get(options, onResponse);
    req.on('error', reject);
  });
}
