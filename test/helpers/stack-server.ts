/**
 * For the e2e files about environments: an in-process server on `net` with a berth.yaml applied and
 * its pools full before the file's tests, stopped after them (every host removed); a restart on the
 * same data dir; and GETs through its router as a browser at http://NAME.localhost:PORT/ sends them.
 */
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { berth, startServer, type InProcessServer, type TestNetwork } from './server.js';
import { waitFor } from './wait.js';

export interface StackServer {
  readonly srv: InProcessServer;
  /** BERTH_URL and BERTH_TOKEN of the server as it is now, for the CLI. */
  readonly env: Record<string, string>;
  routerPort(): number;
  /** Stops the server (hosts keep running) and starts another on its data dir. */
  restart(): Promise<void>;
}

/** `pools`: how many ready hosts each pool must have before the tests start. Call inside describe. */
export function useStackServer(net: TestNetwork, berthYaml: string, pools: Record<string, number>): StackServer {
  let srv: InProcessServer | undefined;
  let project: string | undefined;
  const current = (): InProcessServer => {
    if (!srv) throw new Error('the server has not started');
    return srv;
  };
  beforeAll(async () => {
    srv = await startServer(net);
    project = await mkdtemp(join(tmpdir(), 'berth-stack-'));
    await writeFile(join(project, 'berth.yaml'), berthYaml);
    const applied = await berth(['apply', '-f', join(project, 'berth.yaml')], envOf(srv));
    expect(applied.code, applied.stderr).toBe(0);
    await waitFor('the pools full', async () => {
      const { body } = await current().api.get<{ pools: { name: string; status: { ready: number } }[] }>('/v1/pools');
      return body.pools.every((p) => p.status.ready >= (pools[p.name] ?? 0)) || undefined;
    }, { timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await srv?.stop();
    if (project) await rm(project, { recursive: true, force: true });
  });
  return {
    get srv() {
      return current();
    },
    get env() {
      return envOf(current());
    },
    routerPort: () => Number(new URL(current().server.router.urlFor('x') ?? 'http://x:0').port),
    async restart() {
      const before = current();
      await before.server.stop();
      srv = { ...before, ...(await startServer(net, { dataDir: before.dataDir })) };
    },
  };
}

function envOf(srv: InProcessServer): Record<string, string> {
  return { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
}

export interface RouterAnswer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** One GET through the router to environment `name`, on a connection of its own. */
export function routerGet(port: number, name: string, opts: { path?: string; headers?: Record<string, string> } = {}): Promise<RouterAnswer> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: opts.path ?? '/', headers: { host: `${name}.localhost:${port}`, ...opts.headers }, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      })
      .on('error', reject);
  });
}

/**
 * A berth.yaml with stack `shop` — web: python's http.server on 8080 serving a page that `printf`
 * writes from its env (`page`: the format and its arguments, e.g. `'%s from %s\\n' "$GREETING"
 * "$BERTH_ENVIRONMENT"`), depending on api, which only sleeps (the rest of a stack) — and a pool
 * `shop` of `poolSize` review hosts. `env`: web's own env, as YAML flow (`{GREETING: "hi"}`).
 */
export function shopYaml(page: string, poolSize: number, env?: string): string {
  return `stacks:
  shop:
    services:
      api:
        cmd: exec sleep 1000000
      web:
        cmd: mkdir -p /tmp/www && printf ${page} > /tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www
${env ? `        env: ${env}\n` : ''}        ports: [8080]
        ready: {http: 8080}
        dependsOn: [api]
        stopTimeout: 1s
pools:
  - name: shop
    size: ${poolSize}
    template: {tags: {berth.stack: shop, berth.mode: review}}
`;
}
