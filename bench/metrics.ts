/**
 * `npm run bench -- metrics`: a `/metrics` scrape over HTTP (auth included) against a store holding
 * what a busy installation has — 1,000 hosts in 10 pools, 200 environments, a month of claims and
 * command invocations (test/helpers/metrics-seed.ts) — on the embedded store. The first scrape after
 * a start adds the finished history up once; later ones read only what changed. Target: < 100 ms.
 */
import Fastify from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { hashSecret } from '../src/core/ids.js';
import { MetricsCollector, RouterRequestCounts } from '../src/metrics/metrics.js';
import { metricsRoutes } from '../src/metrics/routes-metrics.js';
import { installAuth } from '../src/server/http/auth.js';
import { installErrorHandling } from '../src/server/http/errors.js';
import { DEFAULT_TENANT } from '../src/store/migrations.js';
import { openStore } from '../src/store/store.js';
import { TokensRepo } from '../src/store/tokens-repo.js';
import { TokenService } from '../src/tokens/token-service.js';
import { seedLarge } from '../test/helpers/metrics-seed.js';
import { ms, summarize } from './stats.js';

export async function metricsBench(opts: { scrapes: number; claims: number; progress: (line: string) => void }): Promise<string[]> {
  const store = await openStore({ dataDir: 'memory://' });
  const app = Fastify();
  try {
    opts.progress(`metrics: seeding 1,000 hosts, 200 environments, ${opts.claims} claims…`);
    await seedLarge(store, opts.claims, opts.claims);
    const token = 'bench-token';
    await new TokensRepo(store.db).add({ id: 't-bench', tenantId: DEFAULT_TENANT, name: 'bench', tokenHash: hashSecret(token), role: 'admin', origin: 'api' });
    app.setValidatorCompiler(validatorCompiler);
    app.setSerializerCompiler(serializerCompiler);
    installErrorHandling(app);
    installAuth(app, (secret) => new TokenService(new TokensRepo(store.db)).authenticate(secret));
    await app.register(metricsRoutes(new MetricsCollector({ db: store.db, routerRequests: new RouterRequestCounts() })));
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const scrape = async (): Promise<number> => {
      const t0 = performance.now();
      const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      await res.text();
      if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
      return performance.now() - t0;
    };
    const first = await scrape();
    const samples: number[] = [];
    for (let i = 0; i < opts.scrapes; i++) {
      opts.progress(`metrics: scrape ${i + 1}/${opts.scrapes}…`);
      samples.push(await scrape());
    }
    opts.progress('');
    const s = summarize(samples);
    return [
      `| /metrics scrape over HTTP, 1,000 hosts, 200 environments, ${opts.claims} claims and invocations (PGlite) | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | target < 100 ms: ${s.p99 < 100 ? 'met' : 'MISSED'} | |`,
      `| of which the first scrape after a start (sums the finished history once) | 1 | ${ms(first)} | | | |`,
    ];
  } finally {
    await app.close();
    await store.close();
  }
}
