/**
 * `node berth-agent.cjs fetch URL`: writes what an http:// or https:// URL answers to stdout (an
 * environment's slug from the server's agent port, piped into tar on the host). Hosts need no curl
 * or wget for it. Over https it trusts BERTH_SERVER_CA_FILE when the agent set it (the agent
 * channel's CA), else the system's roots.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';

export async function fetchMain(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const url = args[0];
  const secure = url?.startsWith('https://') ?? false;
  if (!url || !(secure || url.startsWith('http://'))) {
    process.stderr.write('usage: fetch http(s)://HOST:PORT/PATH\n');
    return 2;
  }
  const caFile = env['BERTH_SERVER_CA_FILE'];
  const ca = secure && caFile ? readFileSync(caFile, 'utf8') : undefined;
  const { get } = secure ? await import('node:https') : await import('node:http');
  return new Promise((resolve) => {
    const fail = (why: string) => {
      process.stderr.write(`fetch ${url}: ${why}\n`);
      resolve(1);
    };
    const req = get(url, ca ? { ca } : {}, (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        res.resume();
        fail(`HTTP ${res.statusCode ?? '?'}`);
        return;
      }
      res.pipe(process.stdout);
      res.on('end', () => resolve(0));
      res.on('error', (err) => fail(err.message));
    });
    req.on('error', (err) => fail(err.message));
  });
}
