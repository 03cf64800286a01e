/** The store's compare-and-sets are where changes are decided: each change, and only a change, is an event. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClaimsRepo } from '../store/claims-repo.js';
import { CommandsRepo } from '../store/commands-repo.js';
import { EnvironmentsRepo } from '../store/environments-repo.js';
import { HostsRepo } from '../store/hosts-repo.js';
import { DEFAULT_TENANT as T } from '../store/migrations.js';
import { PoolsRepo, type PoolSpec } from '../store/pools-repo.js';
import { openStore, type Store } from '../store/store.js';
import { EventBus } from './event-bus.js';
import type { BerthEvent } from './types.js';
import { poolSpec } from '../../test/helpers/metrics-seed.js';

const spec = (name: string, over: Partial<PoolSpec> = {}): PoolSpec => poolSpec(name, { size: 1, maxSize: 2, maxLaunching: 1, ...over });

/** Events without their seq and time, for comparing. */
const plain = (events: BerthEvent[]) => events.map(({ seq: _seq, at: _at, ...rest }) => rest);

describe('events from the store', () => {
  let store: Store;
  let bus: EventBus;
  let hosts: HostsRepo;
  let claims: ClaimsRepo;
  let pools: PoolsRepo;
  let commands: CommandsRepo;
  let envs: EnvironmentsRepo;
  let seen = 0;
  /** The events since the last call. */
  const fresh = () => {
    const events = bus.since(seen);
    seen = bus.lastSeq;
    return plain(events);
  };

  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
    bus = new EventBus();
    hosts = new HostsRepo(store.db, bus);
    claims = new ClaimsRepo(store.db, bus);
    pools = new PoolsRepo(store.db, bus);
    commands = new CommandsRepo(store.db, bus);
    envs = new EnvironmentsRepo(store.db, bus);
  });
  afterAll(async () => {
    await store?.close();
  });

  it('pools, their hosts and a claim, from launch to release', async () => {
    await pools.create(T, spec('web'));
    await pools.update(T, spec('web', { size: 2 }));
    await pools.update(T, spec('web', { size: 2, image: '/other' }));
    expect(fresh()).toEqual([
      { kind: 'pool', id: 'web', tenantId: T, state: 'created', pool: 'web' },
      { kind: 'pool', id: 'web', tenantId: T, state: 'updated', pool: 'web' },
      { kind: 'pool', id: 'web', tenantId: T, state: 'rolled', pool: 'web' },
    ]);

    await hosts.insert({ id: 'h-1', tenantId: T, driver: 'local', image: '/', hostname: 'h-1', tags: {}, resources: {}, agentTokenHash: 'x', pool: { name: 'web', generation: 2, slot: 'warming' } });
    await hosts.transition('h-1', ['launching'], 'booting');
    expect(await hosts.transition('h-1', ['launching'], 'failed')).toBeUndefined(); // lost the race: no event
    await hosts.transition('h-1', ['launching', 'booting', 'lost'], 'running', { reason: '' });
    await hosts.setAgent('h-1', true, new Date());
    await hosts.setSlot('h-1', ['warming'], 'ready');
    const pool = { pool: 'web', hostId: 'h-1' };
    expect(fresh()).toEqual([
      { kind: 'host', id: 'h-1', tenantId: T, state: 'launching', ...pool },
      { kind: 'pool', id: 'h-1', tenantId: T, state: 'warming', ...pool },
      { kind: 'host', id: 'h-1', tenantId: T, state: 'booting', from: 'launching', ...pool },
      // Of several states it could have left, which one is not known.
      { kind: 'host', id: 'h-1', tenantId: T, state: 'running', ...pool },
      { kind: 'pool', id: 'h-1', tenantId: T, state: 'ready', from: 'warming', ...pool },
    ]);

    const first = await claims.insertAndPick({ id: 'cl-1', tenantId: T, pool: 'web', group: 'alice', idempotencyKey: null, request: {} });
    expect(first.picked?.host.id).toBe('h-1');
    await claims.complete({ claimId: 'cl-1', tenantId: T, pool: 'web', hostId: 'h-1', tags: {}, hit: true, attempts: 1, timings: {}, durationMs: 3 });
    const claimed = { pool: 'web', group: 'alice', claimId: 'cl-1' };
    expect(fresh()).toEqual([
      { kind: 'claim', id: 'cl-1', tenantId: T, state: 'pending', ...claimed },
      { kind: 'pool', id: 'h-1', tenantId: T, state: 'claiming', from: 'ready', hostId: 'h-1', ...claimed },
      { kind: 'pool', id: 'h-1', tenantId: T, state: 'claimed', from: 'claiming', hostId: 'h-1', ...claimed },
      { kind: 'claim', id: 'cl-1', tenantId: T, state: 'ready', from: 'pending', hostId: 'h-1', ...claimed },
    ]);

    await hosts.setSlot('h-1', ['claimed'], 'retiring');
    await claims.finish('cl-1', 'ready', 'released', {});
    expect(await claims.finish('cl-1', 'ready', 'released', {})).toBeUndefined();
    await hosts.transition('h-1', ['launching', 'booting', 'running', 'lost', 'failed'], 'terminating', { reason: 'released from group alice' });
    await hosts.transition('h-1', ['terminating'], 'terminated', { terminatedAt: new Date() });
    await hosts.setSlot('h-1', ['retiring'], 'released');
    expect(fresh().map((e) => `${e.kind} ${e.state}${e.from ? ` from ${e.from}` : ''}${e.reason ? ` (${e.reason})` : ''}`)).toEqual([
      'pool retiring from claimed',
      'claim released from ready',
      'host terminating (released from group alice)',
      'host terminated from terminating',
      'pool released from retiring',
    ]);

    // A claim that fails says why.
    await claims.insertAndPick({ id: 'cl-2', tenantId: T, pool: 'web', group: 'bob', idempotencyKey: null, request: {} });
    await claims.finish('cl-2', 'pending', 'failed', { hostId: null, error: { message: 'no ready host' } });
    expect(fresh()).toEqual([
      { kind: 'claim', id: 'cl-2', tenantId: T, state: 'pending', claimId: 'cl-2', pool: 'web', group: 'bob' },
      { kind: 'claim', id: 'cl-2', tenantId: T, state: 'failed', from: 'pending', claimId: 'cl-2', pool: 'web', group: 'bob', reason: 'no ready host' },
    ]);
    await pools.remove(T, 'web');
    expect(fresh()).toEqual([{ kind: 'pool', id: 'web', tenantId: T, state: 'removed', pool: 'web' }]);
  });

  it('a plain host reset, a command and its invocations', async () => {
    await hosts.insert({ id: 'h-2', tenantId: T, driver: 'local', image: '/', hostname: 'h-2', tags: {}, resources: {}, agentTokenHash: 'x' });
    await hosts.transition('h-2', ['launching'], 'running');
    await hosts.beginReset('h-2', 'y', {}, { image: '/', imageId: null });
    expect(fresh().map((e) => [e.kind, e.state, e.from ?? null, e.reason ?? null])).toEqual([
      ['host', 'launching', null, null],
      ['host', 'running', 'launching', null],
      ['host', 'booting', 'running', 'resetting'],
    ]);

    await hosts.insert({ id: 'h-3', tenantId: T, driver: 'local', image: '/', hostname: 'h-3', tags: {}, resources: {}, agentTokenHash: 'x' });
    fresh();
    await commands.create({ id: 'c-1', tenantId: T, document: 'RunShellScript', parameters: {}, targets: {}, deliveryTimeoutS: 30, invocations: [{ hostId: 'h-2', status: 'Pending', statusDetail: '' }, { hostId: 'h-3', status: 'Undeliverable', statusDetail: 'not connected' }] });
    await commands.updateInvocation('c-1', 'h-2', ['Pending'], { status: 'InProgress', statusDetail: '' });
    await commands.updateInvocation('c-1', 'h-2', ['Pending', 'InProgress'], { status: 'Success', statusDetail: 'exit 0' });
    expect(await commands.updateInvocation('c-1', 'h-2', ['Pending', 'InProgress'], { status: 'Failed', statusDetail: 'late' })).toBeUndefined();
    expect(fresh()).toEqual([
      // Two targets: the command names no single host.
      { kind: 'command', id: 'c-1', tenantId: T, state: 'InProgress', commandId: 'c-1' },
      { kind: 'invocation', id: 'c-1/h-2', tenantId: T, state: 'Pending', commandId: 'c-1', hostId: 'h-2' },
      { kind: 'invocation', id: 'c-1/h-3', tenantId: T, state: 'Undeliverable', commandId: 'c-1', hostId: 'h-3', reason: 'not connected' },
      { kind: 'invocation', id: 'c-1/h-2', tenantId: T, state: 'InProgress', from: 'Pending', commandId: 'c-1', hostId: 'h-2' },
      { kind: 'invocation', id: 'c-1/h-2', tenantId: T, state: 'Success', commandId: 'c-1', hostId: 'h-2', reason: 'exit 0' },
    ]);
  });

  it('environments, from creating to removed', async () => {
    const env = { tenantId: T, name: 'alice', stack: 'shop', pool: 'shop', mode: 'review' as const, ref: null, command: null, replicas: 1, owner: null, settings: {}, expiresAt: null };
    expect(await envs.insert(env)).toBe(true);
    expect(await envs.insert(env)).toBe(false);
    await envs.transition(T, 'alice', ['creating'], 'ready');
    await envs.transition(T, 'alice', ['ready', 'failed'], 'removing', { reason: 'removed by request' });
    await envs.delete(T, 'alice');
    await envs.delete(T, 'alice');
    expect(fresh()).toEqual([
      { kind: 'environment', id: 'alice', tenantId: T, state: 'creating', environment: 'alice', pool: 'shop' },
      { kind: 'environment', id: 'alice', tenantId: T, state: 'ready', from: 'creating', environment: 'alice', pool: 'shop' },
      { kind: 'environment', id: 'alice', tenantId: T, state: 'removing', environment: 'alice', pool: 'shop', reason: 'removed by request' },
      { kind: 'environment', id: 'alice', tenantId: T, state: 'removed', from: 'removing', environment: 'alice', pool: 'shop' },
    ]);
  });
});
