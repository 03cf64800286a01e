/**
 * The web dashboard in real Chromium, against a real server with real hosts, driven through the
 * real CLI: it refuses a missing or wrong token (and gets in with the right one), shows a pool
 * filling after `berth pool create` and an environment after `berth env create` without a reload,
 * follows a command's output live, never shows a secret, and every number it shows equals /metrics
 * and the CLI's --json at the same moment. A screenshot of each page goes to test-results/screenshots.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { DashboardSnapshot } from '../../src/dashboard/snapshot.js';
import type { EnvironmentView } from '../../src/environments/views.js';
import type { HostView } from '../../src/hosts/views.js';
import type { PoolStatusView } from '../../src/pools/views.js';
import { attributes, chromiumAvailable, launchChromium, numbersIn, screenshotPath, type PageDocument } from '../helpers/browser.js';
import { samples } from '../helpers/metrics-text.js';
import { berth, useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

/** Only in functions that run in the page. */
declare const document: PageDocument;

const NET = { bridge: 'berthdsh0', subnet: '10.242.0.0/22', cgroupName: 'berthdsh' };
const SECRET = 'hunter2-do-not-show';

const berthYaml = `stacks:
  site:
    services:
      web:
        cmd: mkdir -p /tmp/www && echo "$GREETING" > /tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www
        env: {GREETING: "hello"}
        ports: [8080]
        ready: {http: 8080}
        stopTimeout: 1s
`;

describe.runIf(chromiumAvailable('dashboard in Chromium'))('dashboard in Chromium', () => {
  let srv: InProcessServer;
  let env: Record<string, string>;
  let browser: Browser;
  let project: string;
  const server = useServer(NET);
  const open = async (): Promise<Page> => {
    const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // The address `berth dashboard` prints, as a person would open it.
    const printed = await berth(['dashboard', '--json'], env);
    expect(printed.code, printed.stderr).toBe(0);
    const res = await page.goto((JSON.parse(printed.stdout) as { url: string }).url);
    expect(res?.status()).toBe(200);
    // The token went into the cookie and out of the address bar (and the history).
    expect(page.url()).toBe(`${srv.server.url}/dashboard`);
    await page.waitForSelector('#live[data-state="live"]');
    // The stream opens before its first snapshot is drawn (on a busy machine, a while before).
    await page.waitForSelector('body[data-snapshot-at]', { timeout: 20_000 });
    expect(errors).toEqual([]);
    return page;
  };
  /** Waits until the page renders a snapshot taken after `t` (epoch ms). */
  const freshAfter = (page: Page, t: number) =>
    page.waitForFunction((after) => Date.parse(document.body.dataset['snapshotAt'] ?? '') > after, t, { timeout: 20_000 });

  beforeAll(async () => {
    srv = server.srv;
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
    browser = await launchChromium();
    project = await mkdtemp(join(tmpdir(), 'berth-dash-'));
    await writeFile(join(project, 'berth.yaml'), berthYaml);
    const applied = await berth(['apply', '-f', join(project, 'berth.yaml')], env);
    expect(applied.code, applied.stderr).toBe(0);
  });
  afterAll(async () => {
    await browser?.close();
    await rm(project, { recursive: true, force: true });
  });

  it('refuses a missing or wrong token, page and data alike, and lets the right one in', async () => {
    const refused = await berth(['dashboard'], { ...env, BERTH_TOKEN: 'not-the-token' });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('invalid API token');
    const page = await browser.newPage();
    const missing = await page.goto(`${srv.server.url}/dashboard`);
    expect(missing?.status()).toBe(401);
    await expect(page.textContent('#login-error')).resolves.toContain('missing API token');
    const wrong = await page.goto(`${srv.server.url}/dashboard?token=not-the-token`);
    expect(wrong?.status()).toBe(401);
    await expect(page.textContent('#login-error')).resolves.toContain('invalid API token');
    await page.screenshot({ path: screenshotPath('dashboard-login'), fullPage: true });
    // Nothing behind the page answers without the token either.
    for (const path of ['/v1/dashboard', '/v1/dashboard/stream', '/dashboard/app.js', '/metrics']) {
      const res = await fetch(`${srv.server.url}${path}`);
      expect(res.status, path).toBe(401);
      expect(((await res.json()) as { code: string }).code).toBe('unauthorized');
    }
    // The form takes the token and the page opens, without the token in its address.
    await page.fill('input[name="token"]', srv.server.token);
    await Promise.all([page.waitForURL(`${srv.server.url}/dashboard`), page.click('button[type="submit"]')]);
    await page.waitForSelector('#live[data-state="live"]');
    expect(await page.content()).not.toContain(srv.server.token);
    await page.close();
  });

  it('shows a pool filling after `berth pool create`, live, and its hosts', async () => {
    const page = await open();
    await expect(page.textContent('#pool-cards')).resolves.toContain('No pools yet');
    const created = await berth(['pool', 'create', 'dash', '--size', '2', '--schedule', '* * * * *=2'], env);
    expect(created.code, created.stderr).toBe(0);
    await page.waitForSelector('[data-pool="dash"]', { timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('[data-pool="dash"] [data-k="ready"]')?.getAttribute('data-v') === '2', undefined, { timeout: 60_000 });
    // Its schedule says what sizes it now (a rule that holds all week has no next change).
    await expect(page.textContent('[data-pool="dash"]')).resolves.toContain('schedule rule 1');
    const hostIds = await attributes(page, '#host-table tr[data-host]', 'data-host');
    const listed = JSON.parse((await berth(['host', 'ls', '--json'], env)).stdout) as HostView[];
    expect(hostIds.sort()).toEqual(listed.map((h) => h.id).sort());
    await expect(page.textContent('#activity-list')).resolves.toContain('pool');
    await page.screenshot({ path: screenshotPath('dashboard-pools'), fullPage: true });
    await page.close();
  });

  it('shows a new environment after `berth env create`: its URL and create timing, and no secret', async () => {
    const page = await open();
    const created = await berth(['env', 'create', 'site', '--stack', 'site', '--pool', 'dash', '--user', 'ana', '--set', `API_KEY=${SECRET}`, '--json'], env, { timeoutMs: 120_000 });
    expect(created.code, created.stderr).toBe(0);
    const view = JSON.parse(created.stdout) as EnvironmentView;
    const row = page.locator('tr[data-env="site"]');
    await row.waitFor({ timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('tr[data-env="site"] .state')?.textContent === 'ready', undefined, { timeout: 10_000 });
    await expect(row.locator('a').getAttribute('href')).resolves.toBe(view.url);
    await expect(row.textContent()).resolves.toContain('API_KEY');
    expect(Number(await row.locator('[data-k="totalMs"]').getAttribute('data-v'))).toBe(view.timings['totalMs']);
    // The value is nowhere: not in the page, not in what it is sent, not in the snapshot route.
    expect(await page.content()).not.toContain(SECRET);
    const snapshot = await page.evaluate(async () => (await fetch('/v1/dashboard')).text());
    expect(snapshot).not.toContain(SECRET);
    expect(snapshot).not.toContain(srv.server.token);
    // Nor in its host's tags, as the API and `berth host show` give them: masked there, set on the host.
    const hostId = view.hosts[0]?.hostId ?? '';
    const hostView = await srv.api.get<HostView>(`/v1/hosts/${hostId}`);
    expect(hostView.body.tags['berth.env.API_KEY']).toBe('********');
    expect(JSON.stringify(hostView.body)).not.toContain(SECRET);
    const shown = await berth(['host', 'show', hostId], env);
    expect([shown.code, shown.stdout.includes(SECRET)]).toEqual([0, false]);
    const onHost = await berth(['run', '--host', hostId, '--json', '--', 'printf %s "$BERTH_TAGS"'], env);
    expect(onHost.stdout).toContain(SECRET);
    await page.locator('#environments').scrollIntoViewIfNeeded();
    await page.screenshot({ path: screenshotPath('dashboard-environments'), fullPage: true });
    await page.close();
  });

  it("follows a command's output live when it is clicked", async () => {
    const page = await open();
    const hostId = (JSON.parse((await berth(['host', 'ls', '--json'], env)).stdout) as HostView[])[0]?.id ?? '';
    const sent = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['echo first line', 'sleep 1.5', 'echo second line'] } });
    expect(sent.status).toBe(201);
    const row = page.locator(`tr[data-command="${sent.body.id}"]`);
    await row.waitFor({ timeout: 10_000 });
    await row.click();
    await page.waitForFunction(() => document.querySelector('#output-text')?.textContent?.includes('first line'), undefined, { timeout: 10_000 });
    // Shown before the command ends: the page follows it, it did not wait for the end.
    expect((await srv.api.get<CommandView>(`/v1/commands/${sent.body.id}`)).body.completedAt).toBeNull();
    await page.waitForFunction(() => document.querySelector('#output-text')?.textContent?.includes('second line'), undefined, { timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('#output-status')?.textContent === 'Success', undefined, { timeout: 10_000 });
    await page.locator('#commands').scrollIntoViewIfNeeded();
    await page.screenshot({ path: screenshotPath('dashboard-commands'), fullPage: true });
    await page.close();
  });

  it("opens a terminal on a host from its row: keys typed run there, its output shows, closing ends the session", async () => {
    const page = await open();
    const host = (await srv.api.post<HostView>('/v1/hosts', { hostname: 'dash-shell' })).body;
    await page.fill('#host-filter', host.id);
    const button = page.locator(`button[data-shell="${host.id}"]`);
    await button.waitFor({ timeout: 20_000 });
    await button.click();
    await page.waitForSelector('#shell-status[data-state="open"]', { timeout: 20_000 });
    // The prompt names the host; what is typed runs in its shell.
    await page.waitForFunction(() => document.querySelector('#shell-screen .xterm-rows')?.textContent?.includes('root@dash-shell'), undefined, { timeout: 10_000 });
    await page.keyboard.type('echo "sum=$((6*7))"; tput cols\n');
    await page.waitForFunction(() => document.querySelector('#shell-screen .xterm-rows')?.textContent?.includes('sum=42'), undefined, { timeout: 10_000 });
    // The terminal was sized to the dialog, not left at 80 columns.
    const cols = await page.evaluate(() => /sum=42\s*(\d+)/.exec(document.querySelector('#shell-screen .xterm-rows')?.textContent ?? '')?.[1]);
    expect(Number(cols)).toBeGreaterThan(80);
    await page.screenshot({ path: screenshotPath('dashboard-terminal') });
    await page.click('#shell-close');
    await page.waitForSelector('#shell-dialog', { state: 'hidden' });
    await waitFor('the session to close', async () => {
      const events = (await srv.api.get<{ state: string; reason?: string }[]>(`/v1/events?kind=shell&host=${host.id}`)).body;
      return events.at(-1)?.state === 'closed' ? events : undefined;
    });
    await srv.api.delete(`/v1/hosts/${host.id}`);
    await page.close();
  });

  it('opened with a read-only token: names it in the header and offers no terminal', async () => {
    const made = await srv.api.post<{ token: string }>('/v1/tokens', { name: 'wallboard', role: 'read' });
    expect(made.status).toBe(201);
    const host = (await srv.api.post<HostView>('/v1/hosts', { hostname: 'dash-readonly' })).body;
    const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
    try {
      await page.goto(`${srv.server.url}/dashboard?token=${encodeURIComponent(made.body.token)}`);
      await page.waitForFunction(() => document.querySelector('#whoami')?.textContent === 'wallboard · read', undefined, { timeout: 20_000 });
      await page.fill('#host-filter', host.id);
      await page.locator(`tr[data-host="${host.id}"] td.agent.on`).waitFor({ timeout: 20_000 });
      expect(await page.locator('button[data-shell]').count()).toBe(0);
    } finally {
      await page.close();
      await srv.api.delete(`/v1/hosts/${host.id}`);
      await srv.api.delete('/v1/tokens/wallboard');
    }
  });

  it('keeps a table of 1,000 hosts light: the rows in view drawn, every host reached by scrolling or the filter', async () => {
    const page = await open();
    // The server's own snapshot, with 1,000 hosts in it, fed to the page as its stream.
    const real = JSON.parse(await page.evaluate(async () => (await fetch('/v1/dashboard')).text())) as DashboardSnapshot;
    const template = real.hosts[0];
    if (!template) throw new Error('no host to copy');
    const many = { ...real, hosts: Array.from({ length: 1000 }, (_, i) => ({ ...template, id: `h-many${String(i).padStart(4, '0')}` })) };
    await page.route('**/v1/dashboard/stream', (route) =>
      route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: `retry: 60000\n\nevent: snapshot\ndata: ${JSON.stringify(many)}\n\n` }),
    );
    await page.reload();
    await page.waitForFunction(() => document.querySelector('#host-table table')?.getAttribute('data-rows') === '1000');
    const drawn = await attributes(page, '#host-table tr[data-host]', 'data-host');
    expect(drawn[0]).toBe('h-many0000');
    expect(drawn.length).toBeLessThan(60);
    await expect(page.textContent('#hosts-count')).resolves.toBe('1000');
    // Scrolled to the end: the last host is drawn.
    await page.locator('#host-table').hover();
    await page.mouse.wheel(0, 1_000_000);
    await page.waitForSelector('tr[data-host="h-many0999"]');
    // The filter finds one among them all.
    await page.fill('#host-filter', 'h-many0500');
    await expect(attributes(page, '#host-table tr[data-host]', 'data-host')).resolves.toEqual(['h-many0500']);
    await expect(page.textContent('#hosts-count')).resolves.toBe('1 of 1000');
    await page.close();
  });

  it('shows the same numbers as /metrics and the CLI --json at the same moment', async () => {
    const page = await open();
    const claimed = await berth(['claim', 'dash', '--group', 'ops', '--json'], env);
    expect(claimed.code, claimed.stderr).toBe(0);
    // A quiet moment: the pool refilled and nothing is moving.
    await waitFor('pool dash to refill', async () => ((await srv.api.get<PoolStatusView>('/v1/pools/dash')).body.status.full ? true : undefined), { timeoutMs: 60_000 });
    await srv.server.pools.reconciler.settled();
    const quietFrom = Date.now();
    await freshAfter(page, quietFrom);

    const shown = await numbersIn(page, '[data-pool="dash"]');
    const totals = await numbersIn(page, '#totals');
    const les = await attributes(page, '#latency-chart g[data-le]', 'data-le');
    const bars = (await attributes(page, '#latency-chart g[data-le]', 'data-v')).map((n, i) => ({ le: les[i] ?? '', n: Number(n) }));
    const hostRows = await attributes(page, '#host-table tr[data-host]', 'data-host');
    const envRows = await attributes(page, '#env-table tr[data-env]', 'data-env');
    const shownAt = Date.parse((await page.getAttribute('body', 'data-snapshot-at')) ?? '');

    const m = samples(await (await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } })).text());
    const show = JSON.parse((await berth(['pool', 'show', 'dash', '--json'], env)).stdout) as PoolStatusView;
    const hosts = JSON.parse((await berth(['host', 'ls', '--json'], env)).stdout) as HostView[];
    const envs = JSON.parse((await berth(['env', 'ls', '--json'], env)).stdout) as EnvironmentView[];
    const elapsedS = (Date.now() - shownAt) / 1000;
    const metric = (name: string, labels: string) => m.get(`${name}{tenant="default",pool="dash"${labels}}`);

    for (const slot of ['ready', 'warming', 'claimed', 'quarantined', 'stale'] as const) {
      expect(shown[slot], slot).toBe(show.status[slot]);
      expect(shown[slot], slot).toBe(metric('berth_pool_hosts', `,slot="${slot}"`));
    }
    expect(shown['targetSize']).toBe(show.status.targetSize);
    expect(shown['targetSize']).toBe(metric('berth_pool_target_ready_hosts', ''));
    expect(show.status.targetSize).toBe(show.size); // a pool of fixed size
    expect(metric('berth_pool_size', '')).toBe(show.size);
    expect(shown['hits']).toBe(show.status.hits);
    expect(shown['hits']).toBe(metric('berth_claims_total', ',outcome="hit"'));
    expect(shown['misses']).toBe(show.status.misses);
    expect(shown['misses']).toBe(metric('berth_claims_total', ',outcome="miss"'));
    expect(shown['failed']).toBe(metric('berth_claims_total', ',outcome="failed"'));
    expect(shown['rollbacks']).toBe(metric('berth_claim_rollbacks_total', ''));
    expect(shown['hits']).toBeGreaterThanOrEqual(2); // the environment's claim and ours
    expect(shown['hitRate']).toBe(show.status.hits / (show.status.hits + show.status.misses));
    // Idle time grows while hosts wait: equal up to what the ready hosts idled since the page's snapshot.
    const idleSlack = (show.status.ready + 1) * (elapsedS + 1);
    expect(Math.abs((shown['idleHostSeconds'] ?? 0) - show.status.idleHostSeconds)).toBeLessThanOrEqual(idleSlack);
    expect(Math.abs((shown['idleHostSeconds'] ?? 0) - (metric('berth_pool_idle_host_seconds_total', '') ?? 0))).toBeLessThanOrEqual(idleSlack);

    const refillCount = metric('berth_pool_refill_seconds_count', '') ?? 0;
    expect(refillCount).toBeGreaterThanOrEqual(4); // 2 to fill, 2 to replace the claimed ones
    expect(shown['refillMeanMs']).toBeCloseTo(((metric('berth_pool_refill_seconds_sum', '') ?? 0) / refillCount) * 1000, 0);
    expect(totals['serviceRestarts']).toBe([...m].filter(([k]) => k.startsWith('berth_service_restarts_total{')).reduce((n, [, v]) => n + v, 0));
    // The environment's create is in the history of creates, by stage, as `env ls` shows its timings.
    const site = envs.find((e) => e.name === 'site');
    const envSeries = (stage: string, suffix: string) => m.get(`berth_environment_ready_seconds${suffix}{tenant="default",pool="dash",operation="create",stage="${stage}"}`);
    expect(envSeries('total', '_count')).toBe(1);
    expect(envSeries('total', '_sum')).toBeCloseTo((site?.timings['totalMs'] ?? 0) / 1000, 6);
    expect(envSeries('claim', '_sum')).toBeCloseTo((site?.timings['claimMs'] ?? 0) / 1000, 6);
    expect(totals['hosts']).toBe(hosts.length);
    expect(hostRows.sort()).toEqual(hosts.map((h) => h.id).sort());
    expect(totals['environments']).toBe(envs.length);
    expect(envRows).toEqual(envs.map((e) => e.name));
    expect(totals['claims.hit']).toBe(show.status.hits);
    expect(totals['poolReady']).toBe(show.status.ready);

    // The histogram's bars are /metrics' cumulative buckets (total stage, hits and misses) undone.
    const cumulative = (le: string) =>
      ['hit', 'miss'].reduce((n, outcome) => n + (m.get(`berth_claim_duration_seconds_bucket{tenant="default",pool="dash",outcome="${outcome}",stage="total",le="${le}"}`) ?? 0), 0);
    const snapshot = JSON.parse(await page.evaluate(async () => (await fetch('/v1/dashboard')).text())) as DashboardSnapshot;
    const bounds = [...snapshot.latency.boundsMs.map((ms) => String(ms / 1000)), '+Inf'];
    const perBucket = bounds.map((le, i) => cumulative(le) - (i === 0 ? 0 : cumulative(bounds[i - 1] ?? '')));
    const nonEmpty = perBucket.map((n, i) => ({ le: i < snapshot.latency.boundsMs.length ? String(snapshot.latency.boundsMs[i]) : '+Inf', n })).filter((b) => b.n > 0);
    expect(bars.filter((b) => b.n > 0)).toEqual(nonEmpty);
    expect(bars.reduce((n, b) => n + b.n, 0)).toBe(show.status.hits + show.status.misses);
    await page.screenshot({ path: screenshotPath('dashboard-overview'), fullPage: true });
    await page.close();
  });
});
