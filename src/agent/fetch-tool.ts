/**
 * `node berth-agent.cjs fetch URL`: writes what an http:// URL answers to stdout (an environment's
 * slug from the server's agent port, piped into tar on the host). Hosts need no curl or wget for it.
 */
import http from 'node:http';

export function fetchMain(args: string[]): Promise<number> {
  const url = args[0];
  if (!url || !url.startsWith('http://')) {
    process.stderr.write('usage: fetch http://HOST:PORT/PATH\n');
    return Promise.resolve(2);
  }
  return new Promise((resolve) => {
    const req = http.get(url, (res) => {
      if (res.statusCode !== 200) {
        process.stderr.write(`fetch ${url}: HTTP ${res.statusCode ?? '?'}\n`);
        res.resume();
        resolve(1);
        return;
      }
      res.pipe(process.stdout);
      res.on('end', () => resolve(0));
      res.on('error', (err) => {
        process.stderr.write(`fetch ${url}: ${err.message}\n`);
        resolve(1);
      });
    });
    req.on('error', (err) => {
      process.stderr.write(`fetch ${url}: ${err.message}\n`);
      resolve(1);
    });
  });
}
