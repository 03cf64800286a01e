/**
 * `npm run bench -- dashboard`: the dashboard's first load in real Chromium (a new browser context
 * each time, so nothing cached: the token redirect, page, script, style, the live stream's first
 * snapshot, the hosts table holding every host with the rows in its window drawn, every environment,
 * painted) against a store holding 1,000 hosts in 10
 * pools, 200 environments and a month of claims and invocations (test/helpers/metrics-seed.ts), on
 * the embedded store. Also GET /v1/dashboard over HTTP, and the snapshot's size. Target: first
 * load < 1 s. The pool, host and command services are the server's own; the store's hosts run
 * nowhere (no agent answers), and environments are listed without the router (no route views).
 */
import Fastify from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { CommandService } from '../src/commands/command-service.js';
import { LiveOutput } from '../src/commands/live-output.js';
import { hashSecret } from '../src/core/ids.js';
import { DashboardFeed } from '../src/dashboard/dashboard-feed.js';
import { PoolLevels } from '../src/dashboard/pool-levels.js';
import { dashboardRoutes } from '../src/dashboard/routes-dashboard.js';
import { LocalDriver } from '../src/drivers/local/local-driver.js';
import { toEnvironmentView } from '../src/environments/views.js';
import { EventBus } from '../src/events/event-bus.js';
import { HostService } from '../src/hosts/host-service.js';
import { MetricsCollector } from '../src/metrics/metrics.js';
import { PoolService } from '../src/pools/pool-service.js';
import { installAuth } from '../src/server/http/auth.js';
import { installErrorHandling } from '../src/server/http/errors.js';
import { ClaimsRepo } from '../src/store/claims-repo.js';
import { CommandsRepo } from '../src/store/commands-repo.js';
import { EnvironmentsRepo } from '../src/store/environments-repo.js';
import { HostsRepo } from '../src/store/hosts-repo.js';
import { openStore } from '../src/store/store.js';
import { TokensRepo } from '../src/store/tokens-repo.js';
import { TokenService } from '../src/tokens/token-service.js';
import { DEFAULT_TENANT } from '../src/store/migrations.js';
import { chromiumPath, launchChromium, type PageDocument } from '../test/helpers/browser.js';
import { seedLarge } from '../test/helpers/metrics-seed.js';
import { driverConfig } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

/** Only in functions that run in the page. */
declare const document: PageDocument;

const notInBench = (what: string) => () => {
  throw new Error(`${what} does not happen in the dashboard bench`);
};

/**
 * Opens `address` in a new browser context (nothing cached) and times it until `loaded` resolves;
 * `then` reads the page, off the clock, before the context closes.
 */
async function timedLoad(browser: Browser, address: string, loaded: (page: Page) => Promise<unknown>, then?: (page: Page) => Promise<void>): Promise<number> {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const t0 = performance.now();
    await page.goto(address);
    await loaded(page);
    const ms = performance.now() - t0;
    await then?.(page);
    return ms;
  } finally {
    await context.close();
  }
}

export async function dashboardBench(opts: { loads: number; claims: number; progress: (line: string) => void }): Promise<string[]> {
  try {
    chromiumPath();
  } catch (err) {
    return [`| dashboard first load | skipped: ${(err as Error).message} | | | | |`];
  }
  const store = await openStore({ dataDir: 'memory://' });
  const app = Fastify();
  const browser = await launchChromium();
  try {
    opts.progress(`dashboard: seeding 1,000 hosts, 200 environments, ${opts.claims} claims…`);
    const pools = await seedLarge(store, opts.claims, opts.claims);
    const token = 'bench-token';
    await new TokensRepo(store.db).add({ id: 't-bench', tenantId: DEFAULT_TENANT, name: 'bench', tokenHash: hashSecret(token), role: 'admin', origin: 'api' });
    const hostsRepo = new HostsRepo(store.db);
    const commandsRepo = new CommandsRepo(store.db);
    const envsRepo = new EnvironmentsRepo(store.db);
    const isConnected = () => true;
    const hosts = new HostService({
      hosts: hostsRepo,
      driver: new LocalDriver(driverConfig('/nonexistent-bench', { bridge: 'berthbench9', subnet: '10.219.0.0/24', cgroupName: 'berthbench9' })),
      agents: { isConnected, disconnect: notInBench('disconnecting an agent') },
      agentChannel: { url: 'ws://127.0.0.1:1/v1/agent' },
      defaultImage: '/',
      defaultResources: {},
      images: { resolve: notInBench('resolving an image') },
      onHostGone: () => Promise.resolve(),
      log: () => {},
    });
    const poolService = new PoolService({
      pools,
      claims: new ClaimsRepo(store.db),
      hosts: hostsRepo,
      reconciler: { kick: notInBench('a pool pass'), forget: notInBench('a pool pass'), retire: notInBench('a pool pass'), progressOf: () => ({ notFullReason: '' }) },
      isConnected,
      checkSpec: () => Promise.resolve(),
      log: () => {},
    });
    const commands = new CommandService({ commands: commandsRepo, hosts: hostsRepo, agents: { isConnected, session: () => undefined, send: () => false }, live: new LiveOutput(64 * 1024) });
    const environments = { list: async (tenantId: string) => (await envsRepo.list(tenantId)).map((row) => toEnvironmentView(row, `http://${row.name}.localhost:7080/`, undefined)) };
    const events = new EventBus();
    const feed = new DashboardFeed({
      sources: { pools: poolService, hosts, environments, commands, metrics: new MetricsCollector({ db: store.db }), levels: new PoolLevels() },
      events,
    });
    app.setValidatorCompiler(validatorCompiler);
    app.setSerializerCompiler(serializerCompiler);
    installErrorHandling(app);
    installAuth(app, (secret) => new TokenService(new TokensRepo(store.db)).authenticate(secret));
    await app.register(dashboardRoutes(feed));
    app.get('/v1/health', () => ({ ok: true }));
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const expectedHosts = (await hosts.list(DEFAULT_TENANT)).length;

    const snapshot = async (): Promise<{ ms: number; bytes: number }> => {
      const t0 = performance.now();
      const res = await fetch(`${url}/v1/dashboard`, { headers: { authorization: `Bearer ${token}` } });
      const body = await res.text();
      if (!res.ok) throw new Error(`/v1/dashboard answered ${res.status}`);
      return { ms: performance.now() - t0, bytes: Buffer.byteLength(body) };
    };
    const first = await snapshot(); // the metrics' first pass adds the month of history up once
    const snapshots: number[] = [];
    for (let i = 0; i < opts.loads; i++) snapshots.push((await snapshot()).ms);

    const loads: number[] = [];
    const pageReady: number[] = [];
    const firstSnapshot: number[] = [];
    const drawing: number[] = [];
    const painting: number[] = [];
    for (let i = 0; i < opts.loads; i++) {
      opts.progress(`dashboard: first load ${i + 1}/${opts.loads} in Chromium…`);
      const ms = await timedLoad(
        browser,
        `${url}/dashboard?token=${token}`,
        // Every host and environment in the page, and the frame that shows them painted.
        // (A function, not a string: the page's CSP forbids eval.)
        (page) =>
          page.waitForFunction(
            (n) =>
              document.querySelector('#host-table table')?.getAttribute('data-rows') === String(n) &&
              document.querySelectorAll('#host-table tr[data-host]').length > 0 &&
              document.querySelectorAll('#env-table tr[data-env]').length === 200 &&
              performance.getEntriesByName('berth:first-paint').length > 0,
            expectedHosts,
            { timeout: 30_000, polling: 'raf' },
          ),
        async (page) => {
          // No named helpers inside: tsx would wrap them in its own __name, which the page lacks.
          // ('navigation' is a browser entry type Node's types do not list.)
          const marks = await page.evaluate(() => ({
            page: (performance.getEntriesByType('navigation' as 'mark')[0] as unknown as { domContentLoadedEventEnd?: number } | undefined)?.domContentLoadedEventEnd ?? Number.NaN,
            snapshot: performance.getEntriesByName('berth:first-snapshot')[0]?.startTime ?? Number.NaN,
            render: performance.getEntriesByName('berth:first-render')[0]?.startTime ?? Number.NaN,
            paint: performance.getEntriesByName('berth:first-paint')[0]?.startTime ?? Number.NaN,
          }));
          pageReady.push(marks.page);
          firstSnapshot.push(marks.snapshot - marks.page);
          drawing.push(marks.render - marks.snapshot);
          painting.push(marks.paint - marks.render);
        },
      );
      loads.push(ms);
    }
    // Baseline, the same way: a new context loading the server's smallest page (the health JSON).
    const baseline: number[] = [];
    for (let i = 0; i < opts.loads; i++) {
      opts.progress(`dashboard: baseline load ${i + 1}/${opts.loads} in Chromium…`);
      baseline.push(await timedLoad(browser, `${url}/v1/health`, (page) => page.waitForFunction(() => document.body.dataset !== undefined, undefined, { polling: 'raf' })));
    }
    opts.progress('');
    const b = summarize(baseline);
    const l = summarize(loads);
    const s = summarize(snapshots);
    return [
      `| dashboard first load in Chromium (page, script, stream; the table of ${expectedHosts} hosts with the rows in its window, 200 environments; painted), 10 pools, ${opts.claims} claims (PGlite) | ${l.n} | ${ms(l.p50)} | ${ms(l.p99)} | target < 1 s: ${l.p99 < 1000 ? 'met' : 'MISSED'} | |`,
      `| of which: page loaded (redirect, page, script, style) | ${l.n} | ${ms(summarize(pageReady).p50)} | ${ms(summarize(pageReady).p99)} | | |`,
      `| of which: then the stream's first snapshot (built on connect) | ${l.n} | ${ms(summarize(firstSnapshot).p50)} | ${ms(summarize(firstSnapshot).p99)} | | |`,
      `| of which: then its DOM built (every table, chart and card) | ${l.n} | ${ms(summarize(drawing).p50)} | ${ms(summarize(drawing).p99)} | | |`,
      `| of which: then laid out and painted (the next frame) | ${l.n} | ${ms(summarize(painting).p50)} | ${ms(summarize(painting).p99)} | | |`,
      `| baseline: a new Chromium context loading the server's smallest page (GET /v1/health) the same way | ${b.n} | ${ms(b.p50)} | ${ms(b.p99)} | first load / baseline: ${(l.p50 / b.p50).toFixed(1)}x (p50) | |`,
      `| GET /v1/dashboard over HTTP (the snapshot the page renders; ${(first.bytes / 1024).toFixed(0)} KiB) | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | | |`,
      `| of which the first after a start (the metrics add the finished history up once) | 1 | ${ms(first.ms)} | | | |`,
    ];
  } finally {
    await browser.close();
    await app.close();
    await store.close();
  }
}
