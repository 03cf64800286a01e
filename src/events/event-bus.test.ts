import { describe, expect, it } from 'vitest';
import { ServiceStates } from './changes.js';
import { EventBus } from './event-bus.js';
import { actorContext, asSystem } from './actor.js';
import { eventLog, formatEvent, resolveLogFormat } from './format.js';
import type { BerthEvent, NewEvent } from './types.js';

const host = (id: string, state: string, extra: Partial<NewEvent> = {}): NewEvent => ({ kind: 'host', id, tenantId: 't1', state, hostId: id, ...extra });

describe('EventBus', () => {
  it('numbers events from 1 and timestamps them', () => {
    const bus = new EventBus({ now: () => new Date('2030-01-02T03:04:05.000Z') });
    expect(bus.lastSeq).toBe(0);
    expect(bus.since(0)).toEqual([]);
    const first = bus.emit(host('h-1', 'launching'));
    bus.emit(host('h-1', 'running'));
    expect(first).toEqual({ seq: 1, at: '2030-01-02T03:04:05.000Z', kind: 'host', id: 'h-1', tenantId: 't1', state: 'launching', hostId: 'h-1' });
    expect(bus.lastSeq).toBe(2);
    expect(bus.since(0).map((e) => e.state)).toEqual(['launching', 'running']);
    expect(bus.since(1).map((e) => e.seq)).toEqual([2]);
    expect(bus.since(2)).toEqual([]);
  });

  it('keeps only the last `capacity` events, and answers since from what is left', () => {
    const bus = new EventBus({ capacity: 5 });
    for (let i = 1; i <= 12; i++) bus.emit(host(`h-${i}`, 'running'));
    expect(bus.oldestSeq).toBe(8);
    expect(bus.since(0).map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
    expect(bus.since(3).map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
    expect(bus.since(10).map((e) => e.seq)).toEqual([11, 12]);
    expect(bus.since(0, {}, 2).map((e) => e.seq)).toEqual([8, 9]);
    expect(bus.since(12)).toEqual([]);
  });

  it('gives every buffered event to a client whose seq is beyond the newest (it saw an earlier server process)', () => {
    const bus = new EventBus();
    bus.emit(host('h-1', 'launching'));
    bus.emit(host('h-1', 'running'));
    expect(bus.since(5000).map((e) => e.seq)).toEqual([1, 2]);
  });

  it('filters by tenant, kinds, pool and host', () => {
    const bus = new EventBus();
    bus.emit(host('h-1', 'running', { pool: 'web' }));
    bus.emit({ kind: 'pool', id: 'h-1', tenantId: 't1', state: 'ready', from: 'warming', hostId: 'h-1', pool: 'web' });
    bus.emit({ kind: 'claim', id: 'cl-1', tenantId: 't1', state: 'ready', claimId: 'cl-1', hostId: 'h-1', pool: 'web', group: 'alice' });
    bus.emit(host('h-2', 'running', { tenantId: 't2', pool: 'web' }));
    bus.emit(host('h-3', 'running'));
    const ids = (events: BerthEvent[]) => events.map((e) => `${e.kind}:${e.id}`);
    expect(ids(bus.since(0, { tenantId: 't1' }))).toEqual(['host:h-1', 'pool:h-1', 'claim:cl-1', 'host:h-3']);
    expect(ids(bus.since(0, { tenantId: 't1', kinds: ['claim', 'pool'] }))).toEqual(['pool:h-1', 'claim:cl-1']);
    expect(ids(bus.since(0, { tenantId: 't1', pool: 'web' }))).toEqual(['host:h-1', 'pool:h-1', 'claim:cl-1']);
    expect(ids(bus.since(0, { hostId: 'h-1' }))).toEqual(['host:h-1', 'pool:h-1', 'claim:cl-1']);
    expect(ids(bus.since(0, { tenantId: 't2' }))).toEqual(['host:h-2']);
    expect(ids(bus.since(0, { kinds: [] }))).toHaveLength(5);
  });

  it('hands new matching events to subscribers until they unsubscribe', () => {
    const bus = new EventBus();
    const all: number[] = [];
    const claims: number[] = [];
    const offAll = bus.subscribe((e) => all.push(e.seq));
    const offClaims = bus.subscribe((e) => claims.push(e.seq), { filter: { kinds: ['claim'] } });
    expect(bus.subscriberCount).toBe(2);
    bus.emit(host('h-1', 'running'));
    bus.emit({ kind: 'claim', id: 'cl-1', tenantId: 't1', state: 'pending' });
    offAll();
    bus.emit({ kind: 'claim', id: 'cl-1', tenantId: 't1', state: 'ready' });
    offClaims();
    offClaims(); // twice is harmless
    bus.emit({ kind: 'claim', id: 'cl-2', tenantId: 't1', state: 'pending' });
    expect(all).toEqual([1, 2]);
    expect(claims).toEqual([2, 3]);
    expect(bus.subscriberCount).toBe(0);
  });

  it('lets a subscriber unsubscribe while it is called, and survives one that throws', () => {
    const bus = new EventBus();
    const seen: number[] = [];
    const off = bus.subscribe(() => off());
    bus.subscribe(() => {
      throw new Error('broken subscriber');
    });
    bus.subscribe((e) => seen.push(e.seq));
    expect(() => bus.emit(host('h-1', 'running'))).not.toThrow();
    bus.emit(host('h-1', 'lost'));
    expect(seen).toEqual([1, 2]);
    expect(bus.subscriberCount).toBe(2);
  });

  it('close ends every subscription (onClose) and keeps buffering', () => {
    const bus = new EventBus();
    const closed: string[] = [];
    const seen: number[] = [];
    bus.subscribe((e) => seen.push(e.seq), { onClose: () => closed.push('a') });
    bus.subscribe(() => {}, { onClose: () => closed.push('b') });
    bus.close();
    expect(closed).toEqual(['a', 'b']);
    expect(bus.subscriberCount).toBe(0);
    bus.emit(host('h-1', 'running'));
    expect(seen).toEqual([]);
    expect(bus.since(0)).toHaveLength(1);
    // Subscribing to a closed bus ends at once.
    bus.subscribe(() => {}, { onClose: () => closed.push('c') });
    expect(closed).toEqual(['a', 'b', 'c']);
    expect(bus.subscriberCount).toBe(0);
  });
});

describe('ServiceStates', () => {
  it('turns agent reports into one event per change of a service state', () => {
    const states = new ServiceStates();
    const report = (...list: [string, string][]) => states.changes('t1', 'h-1', list.map(([name, state]) => ({ name, state, reason: state === 'failed' ? 'crashed' : '' })));
    expect(report(['web', 'starting'], ['db', 'ready'])).toEqual([
      { kind: 'service', id: 'h-1/web', tenantId: 't1', state: 'starting', hostId: 'h-1', service: 'web' },
      { kind: 'service', id: 'h-1/db', tenantId: 't1', state: 'ready', hostId: 'h-1', service: 'db' },
    ]);
    expect(report(['web', 'starting'], ['db', 'ready'])).toEqual([]);
    expect(report(['web', 'failed'], ['db', 'ready'])).toEqual([{ kind: 'service', id: 'h-1/web', tenantId: 't1', state: 'failed', from: 'starting', hostId: 'h-1', service: 'web', reason: 'crashed' }]);
    states.forget('h-1');
    expect(report(['web', 'failed'])).toHaveLength(1);
  });
});

describe('event log', () => {
  const event: BerthEvent = { seq: 7, at: '2030-01-02T03:04:05.000Z', kind: 'claim', id: 'cl-1', tenantId: 'default', state: 'ready', from: 'pending', claimId: 'cl-1', hostId: 'h-9', pool: 'web', group: 'alice' };

  it('reads as a line for people', () => {
    const time = new Date(event.at).toTimeString().slice(0, 8);
    expect(formatEvent(event)).toBe(`${time} claim cl-1 ready host=h-9 pool=web group=alice`);
    expect(formatEvent({ ...event, kind: 'invocation', id: 'c-1/h-9', state: 'Failed', claimId: undefined, commandId: 'c-1', pool: undefined, group: undefined, reason: 'exit code 1' })).toBe(
      `${time} invocation c-1/h-9 Failed reason="exit code 1"`,
    );
  });

  it('is one JSON object a line in json format, messages included', () => {
    const lines: string[] = [];
    const log = eventLog('json', (t) => lines.push(t), () => new Date('2030-01-01T00:00:00.000Z'));
    log.event(event);
    log.line('host h-1: lost', { extra: 1 });
    expect(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual([event, { at: '2030-01-01T00:00:00.000Z', kind: 'log', message: 'host h-1: lost', extra: 1 }]);
    const text: string[] = [];
    eventLog('text', (t) => text.push(t)).line('host h-1: lost');
    expect(text).toEqual(['berth: host h-1: lost\n']);
  });

  it('auto is text on a terminal and json elsewhere', () => {
    expect(resolveLogFormat('auto', true)).toBe('text');
    expect(resolveLogFormat('auto', false)).toBe('json');
    expect(resolveLogFormat('json', true)).toBe('json');
    expect(resolveLogFormat('text', false)).toBe('text');
    expect(resolveLogFormat('yaml', false)).toBeUndefined();
  });
});

describe('actors', () => {
  const change: NewEvent = { kind: 'host', id: 'h-1', tenantId: 'default', state: 'terminating' };

  it('stamps events emitted inside a request with its token, including after awaits; berth work (asSystem) and other work carry none', async () => {
    const bus = new EventBus();
    bus.emit(change);
    await actorContext.run({ tokenId: 't-1', name: 'ci-bot' }, async () => {
      bus.emit(change);
      await new Promise((r) => setTimeout(r, 1));
      bus.emit(change);
      // Started from the request but berth's own (a refill): no actor, even later.
      await asSystem(async () => {
        await new Promise((r) => setImmediate(r));
        bus.emit(change);
      });
      bus.emit({ ...change, actor: 'alice' }); // an explicit one wins (a terminal's opener)
    });
    expect(bus.since(0).map((e) => e.actor ?? null)).toEqual([null, 'ci-bot', 'ci-bot', null, 'alice']);
  });

  it('a line names the actor, quoted when the name has spaces', () => {
    const at = '2026-11-23T10:00:00.000Z';
    expect(formatEvent({ ...change, seq: 1, at, actor: 'ci-bot' })).toMatch(/ by=ci-bot$/);
    expect(formatEvent({ ...change, seq: 1, at, actor: 'data dir token' })).toMatch(/ by="data dir token"$/);
    expect(formatEvent({ ...change, seq: 1, at })).not.toContain('by=');
  });
});
