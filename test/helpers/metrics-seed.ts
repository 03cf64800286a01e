/**
 * A store as a busy installation has it, for the metrics test and `npm run bench -- metrics`: 10
 * pools of 100 hosts, 200 environments, and a month of claims and command invocations.
 */
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import { PoolsRepo, type PoolSpec } from '../../src/store/pools-repo.js';
import type { NewHostRow } from '../../src/store/schema.js';
import type { Store } from '../../src/store/store.js';

const T = DEFAULT_TENANT;

/** A complete pool spec for store-level tests, with `over` on top. */
export const poolSpec = (name: string, over: Partial<PoolSpec> = {}): PoolSpec => ({
  name,
  image: '/',
  template: { tags: {} },
  size: 3,
  maxSize: 8,
  maxLaunching: 2,
  maxIdleAgeS: null,
  warmup: [],
  healthCheck: null,
  onEmpty: 'launch',
  onRelease: 'terminate',
  demand: null,
  schedule: null,
  ...over,
});

/**
 * 10 pools of 100 hosts (every slot, a rolled generation, terminated ones), `claims` claims and
 * `invocations` invocations spread over the past 30 days (a few claims running now), 200
 * environments. Returns the pools.
 */
export async function seedLarge(store: Store, claimCount: number, invocationCount: number): Promise<PoolsRepo> {
  const pools = new PoolsRepo(store.db);
  const poolNames = Array.from({ length: 10 }, (_, i) => `pool${i}`);
  for (const name of poolNames) await pools.create(T, poolSpec(name, { size: 20 }));
  await store.db.updateTable('pools').set({ generation: 2 }).execute();
  const slotOf = (i: number): { slot: string; generation: number; state: string } =>
    i < 20 ? { slot: 'ready', generation: 2, state: 'running' }
    : i < 30 ? { slot: 'warming', generation: 2, state: 'booting' }
    : i < 80 ? { slot: 'claimed', generation: i % 2 ? 1 : 2, state: 'running' }
    : i < 85 ? { slot: 'quarantined', generation: 2, state: 'running' }
    : i < 88 ? { slot: 'retiring', generation: 1, state: 'terminating' }
    : i < 95 ? { slot: 'ready', generation: 1, state: 'running' }
    : { slot: 'released', generation: 2, state: 'terminated' };
  const now = Date.now();
  const month = 30 * 86_400_000;
  const hostRows: NewHostRow[] = poolNames.flatMap((pool, p) =>
    Array.from({ length: 100 }, (_, i) => {
      const { slot, generation, state } = slotOf(i);
      const id = `h-${p}-${i}`;
      return {
        id,
        tenant_id: T,
        driver: 'local',
        state,
        image: '/',
        hostname: id,
        tags: JSON.stringify({ app: pool, n: String(i) }),
        resources: JSON.stringify({ cpus: 1, memoryMiB: 512 }),
        driver_data: JSON.stringify({ pid: 1000 + i }),
        agent_token_hash: id,
        agent_connected: state === 'running',
        created_at: new Date(now - 3_600_000 + i * 1000),
        ready_at: new Date(now - 3_500_000 + i * 1000),
        pool,
        generation,
        slot,
        slot_since: new Date(now - 600_000 + i * 1000),
        group_name: slot === 'claimed' ? `g${i}` : null,
      };
    }),
  );
  for (let i = 0; i < hostRows.length; i += 250) await store.db.insertInto('hosts').values(hostRows.slice(i, i + 250)).execute();

  const claimRows = Array.from({ length: claimCount }, (_, k) => {
    const i = k % 200;
    const pool = poolNames[k % 10] ?? 'pool0';
    const state = i < 150 ? 'ready' : i < 180 ? 'released' : i < 195 ? 'failed' : k >= claimCount - 20 ? 'pending' : 'failed';
    const hit = state === 'failed' || state === 'pending' ? null : i % 6 !== 0;
    const total = hit ? 5 + (i % 40) : 900 + i * 3;
    const timings = hit === null ? {} : hit ? { pickMs: 0.5 + (i % 3) / 10, initMs: total - 1, totalMs: total } : { pickMs: 0.9, launchMs: total - 30, initMs: 25, totalMs: total };
    const createdAt = new Date(state === 'pending' ? now - 1000 : now - month + (k * month) / claimCount);
    return {
      id: `cl-${k}`,
      tenant_id: T,
      pool,
      group_name: `g${i}`,
      host_id: null,
      idempotency_key: null,
      state,
      request: JSON.stringify({ init: ['echo hi'], env: {}, tags: {}, deadline: 30 }),
      hit,
      attempts: hit === null ? 0 : 1 + (i % 10 === 0 ? 1 : 0),
      timings: JSON.stringify(timings),
      duration_ms: state === 'pending' ? null : total,
      error: JSON.stringify(state === 'failed' ? { message: 'init failed', attempts: [{ hostId: `h-${k % 10}-1`, hit: true, error: 'exit 1' }] } : null),
      created_at: createdAt,
      finished_at: state === 'pending' ? null : new Date(createdAt.getTime() + total),
    };
  });
  for (let i = 0; i < claimRows.length; i += 500) await store.db.insertInto('claims').values(claimRows.slice(i, i + 500)).execute();

  // 200 environments, ready (a tenth still being created), half of them deployed since.
  const envRows = Array.from({ length: 200 }, (_, i) => ({
    tenant_id: T,
    name: `env${i}`,
    stack: `pool${i % 10}`,
    pool: `pool${i % 10}`,
    mode: 'review',
    replicas: 1,
    settings: JSON.stringify({ GREETING: 'hi' }),
    state: i % 20 === 0 ? 'creating' : 'ready',
    hosts: JSON.stringify([{ hostId: `h-${i % 10}-${30 + (i % 50)}`, service: null, generation: 1 }]),
    route: JSON.stringify(i % 20 === 0 ? null : { service: 'web', port: 8080, healthPath: '/', generation: 1 + (i % 2) }),
    timings: JSON.stringify(i % 20 === 0 ? {} : { claimMs: 20 + i, initMs: 3, servicesMs: 300 + i, readyMs: 290, routeMs: 0.4, totalMs: 330 + i }),
  }));
  await store.db.insertInto('environments').values(envRows).execute();
  // Their history: a create or deploy for every tenth claim, over the month.
  const runCount = Math.ceil(claimCount / 10);
  const runRows = Array.from({ length: runCount }, (_, r) => ({
    tenant_id: T,
    environment: `env${r % 200}`,
    pool: `pool${r % 10}`,
    operation: r % 3 === 0 ? 'deploy' : 'create',
    timings: JSON.stringify({ claimMs: 20 + (r % 40), initMs: 3, servicesMs: 300 + (r % 300), readyMs: 290, routeMs: 0.4, totalMs: 330 + (r % 400) }),
    finished_at: new Date(now - month + (r * month) / runCount),
  }));
  for (let i = 0; i < runRows.length; i += 500) await store.db.insertInto('environment_timings').values(runRows.slice(i, i + 500)).execute();

  // Commands of 10 invocations each; the newest still running.
  const commandCount = Math.ceil(invocationCount / 10);
  const commandAt = (c: number) => new Date(c >= commandCount - 5 ? now - 1000 : now - month + (c * month) / commandCount);
  const commandRows = Array.from({ length: commandCount }, (_, c) => ({ id: `c-${c}`, tenant_id: T, document: 'run', parameters: JSON.stringify({ commands: ['uptime'] }), targets: JSON.stringify({ tags: {} }), delivery_timeout_s: 30, created_at: commandAt(c) }));
  for (let i = 0; i < commandRows.length; i += 500) await store.db.insertInto('commands').values(commandRows.slice(i, i + 500)).execute();
  const statuses = ['Success', 'Success', 'Success', 'Failed', 'TimedOut', 'Success'];
  const invocationRows = Array.from({ length: invocationCount }, (_, k) => {
    const c = Math.floor(k / 10);
    return {
      command_id: `c-${c}`,
      host_id: `h-${k % 10}-${30 + (c % 50)}`,
      tenant_id: T,
      status: c >= commandCount - 5 ? 'InProgress' : (statuses[k % statuses.length] ?? 'Success'),
      exit_codes: JSON.stringify([0]),
      stdout: 'up 3 days\n',
      created_at: commandAt(c),
    };
  });
  for (let i = 0; i < invocationRows.length; i += 500) await store.db.insertInto('invocations').values(invocationRows.slice(i, i + 500)).execute();
  return pools;
}
