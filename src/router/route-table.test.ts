import { describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import { Route, validateRoute, type Backend } from './route-table.js';

const spec = (...ids: string[]) => ({ backends: ids.map((id, i) => ({ id, url: `http://10.0.0.${i + 1}:8080`, label: 'web' })) });

describe('Route', () => {
  it('goes round robin over healthy backends, skipping unhealthy and excluded ones', () => {
    const route = new Route('shop');
    route.update(spec('a', 'b', 'c'));
    expect([1, 2, 3, 4, 5, 6].map(() => route.pick()?.id)).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    route.backends[1]?.markDown('connection refused', Date.now(), true);
    expect([1, 2, 3, 4].map(() => route.pick()?.id)).toEqual(['a', 'c', 'a', 'c']);
    expect(route.pick(new Set([route.backends[0] as Backend]))?.id).toBe('c');
    route.backends[0]?.markDown('x', Date.now(), false);
    route.backends[2]?.markDown('x', Date.now(), false);
    expect(route.pick()).toBeUndefined();
  });

  it('sends nothing new to a draining backend while another is healthy, and falls back to it when none is', () => {
    const route = new Route('shop');
    route.update(spec('a', 'b'));
    const [a, b] = route.backends;
    if (!a || !b) throw new Error('no backends');
    a.draining = true;
    expect([1, 2, 3].map(() => route.pick()?.id)).toEqual(['b', 'b', 'b']);
    expect(a.view()).toMatchObject({ healthy: true, draining: true });
    b.markDown('connection refused', Date.now(), true);
    expect(route.pick()?.id).toBe('a'); // better a backend about to restart than a 503
    a.draining = false;
    expect(route.pick()?.id).toBe('a');
  });

  it('keeps health and counters of backends with the same id and url across updates', () => {
    const route = new Route('shop');
    route.update(spec('a', 'b'));
    const [a, b] = route.backends;
    a?.markDown('connection refused', 1000, false);
    if (b) b.requests = 7;
    route.update({ backends: [{ id: 'a', url: 'http://10.0.0.1:8080' }, { id: 'b', url: 'http://10.0.0.9:8080' }, { id: 'c', url: 'http://10.0.0.3:8080' }] });
    const [a2, b2, c2] = route.backends;
    expect(a2).toBe(a);
    expect(a2?.view()).toMatchObject({ healthy: false, lastError: 'connection refused', lastCheckedAt: new Date(1000).toISOString() });
    expect(b2).not.toBe(b);
    expect(b2?.view()).toMatchObject({ healthy: true, requests: 0, lastCheckedAt: null });
    expect(c2?.view().healthy).toBe(true);
  });

  it('does not let a check that began before a request failure put the backend back', () => {
    const route = new Route('shop');
    route.update(spec('a'));
    const [a] = route.backends;
    a?.markDown('connection refused', 2000, true);
    expect(a?.markUp(1500, 2100)).toBe(false);
    expect(a?.healthy).toBe(false);
    expect(a?.markUp(2050, 3000)).toBe(true);
    expect(a?.healthy).toBe(true);
  });
});

describe('validateRoute', () => {
  const rejects = (name: string, s: Parameters<typeof validateRoute>[1]) => {
    try {
      validateRoute(name, s);
    } catch (err) {
      expect(err).toBeInstanceOf(BerthError);
      expect((err as BerthError).code).toBe('validation_failed');
      return (err as BerthError).message;
    }
    throw new Error('accepted');
  };

  it('accepts a good spec and rejects bad names, urls, duplicates, paths and intervals', () => {
    validateRoute('shop', { ...spec('a', 'b'), healthPath: '/healthz', healthIntervalMs: 100 });
    validateRoute('shop', { backends: [] });
    expect(rejects('Shop_1', spec('a'))).toMatch(/invalid environment name/);
    expect(rejects('shop', { backends: [{ id: 'a', url: 'https://10.0.0.1' }] })).toMatch(/not http/);
    expect(rejects('shop', { backends: [{ id: 'a', url: 'http://10.0.0.1:80/app' }] })).toMatch(/not http/);
    expect(rejects('shop', { backends: [{ id: 'a', url: 'nope' }] })).toMatch(/invalid url/);
    expect(rejects('shop', { backends: [{ id: '', url: 'http://10.0.0.1' }] })).toMatch(/empty id/);
    expect(rejects('shop', { backends: [{ id: 'a', url: 'http://10.0.0.1:1' }, { id: 'a', url: 'http://10.0.0.1:1' }] })).toMatch(/twice/);
    expect(rejects('shop', { ...spec('a'), healthPath: 'healthz' })).toMatch(/health path/);
    expect(rejects('shop', { ...spec('a'), healthIntervalMs: 0 })).toMatch(/health interval/);
  });
});
