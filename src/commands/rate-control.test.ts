import { describe, expect, it } from 'vitest';
import { isBerthError } from '../core/errors.js';
import { decide, resolveRateControl, type RateInvocation } from './rate-control.js';

const inv = (hostId: string, status: RateInvocation['status'], sent = true): RateInvocation => ({ hostId, status, sentAt: sent ? new Date() : null });

describe('resolveRateControl', () => {
  it('is undefined without limits', () => {
    expect(resolveRateControl({}, 5)).toBeUndefined();
  });

  it('takes counts as given, and percentages of the targets: concurrency rounds up (at least 1), errors round down', () => {
    expect(resolveRateControl({ maxConcurrency: 3, maxErrors: '2' }, 10)).toEqual({ targets: 10, maxConcurrency: { spec: '3', limit: 3 }, maxErrors: { spec: '2', limit: 2 } });
    expect(resolveRateControl({ maxConcurrency: '25%', maxErrors: '25%' }, 10)).toEqual({ targets: 10, maxConcurrency: { spec: '25%', limit: 3 }, maxErrors: { spec: '25%', limit: 2 } });
    expect(resolveRateControl({ maxConcurrency: '1%', maxErrors: '10%' }, 5)).toMatchObject({ maxConcurrency: { limit: 1 }, maxErrors: { limit: 0 } });
    expect(resolveRateControl({ maxConcurrency: ' 100% ' }, 7)).toMatchObject({ maxConcurrency: { spec: '100%', limit: 7 } });
  });

  it.each([
    ['maxConcurrency', 0],
    ['maxConcurrency', '0'],
    ['maxConcurrency', '0%'],
    ['maxConcurrency', '101%'],
    ['maxConcurrency', 'x'],
    ['maxConcurrency', '1.5'],
    ['maxErrors', -1],
    ['maxErrors', '200%'],
    ['maxErrors', ''],
  ])('refuses %s %j with a validation error naming the field', (field, value) => {
    try {
      resolveRateControl({ [field]: value }, 4);
      expect.unreachable();
    } catch (err) {
      expect(isBerthError(err) && err.code).toBe('validation_failed');
      expect((err as Error).message).toContain(field);
    }
  });
});

describe('decide', () => {
  const rc = resolveRateControl({ maxConcurrency: 2, maxErrors: 1 }, 5);
  if (!rc) throw new Error('no rate control');

  it('fills the room left by running invocations, in host id order', () => {
    expect(decide(rc, [inv('h1', 'InProgress'), inv('h5', 'Pending', false), inv('h3', 'Pending', false), inv('h4', 'Pending', false), inv('h2', 'Success')])).toEqual({
      send: ['h3'],
      cancel: [],
      cancelDetail: '',
    });
    expect(decide(rc, [inv('h1', 'Cancelling'), inv('h2', 'Pending'), inv('h3', 'Pending', false)]).send).toEqual([]);
  });

  it('Undeliverable and Cancelled do not count as errors; Failed, TimedOut and DeliveryTimedOut do', () => {
    expect(decide(rc, [inv('h1', 'Undeliverable', false), inv('h2', 'Cancelled'), inv('h3', 'Failed'), inv('h4', 'Pending', false)]).send).toEqual(['h4']);
    const stop = decide(rc, [inv('h1', 'TimedOut'), inv('h2', 'DeliveryTimedOut'), inv('h3', 'InProgress'), inv('h4', 'Pending', false), inv('h5', 'Pending', false)]);
    expect(stop).toEqual({ send: [], cancel: ['h4', 'h5'], cancelDetail: 'not sent: 2 invocations failed, more than maxErrors 1 allows' });
  });

  it('without maxConcurrency sends every waiting one', () => {
    const errorsOnly = resolveRateControl({ maxErrors: 0 }, 3);
    if (!errorsOnly) throw new Error('no rate control');
    expect(decide(errorsOnly, [inv('h1', 'Pending', false), inv('h2', 'Pending', false)]).send).toEqual(['h1', 'h2']);
  });
});
