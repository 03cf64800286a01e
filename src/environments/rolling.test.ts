/**
 * Changing hosts one at a time: each is drained out of the router's rotation first (when another
 * backend can serve), changed, waited for, then put back; the next starts only once it is back.
 */
import { describe, expect, it } from 'vitest';
import type { RouteView } from '../router/router.js';
import { rollOver, routerDrain } from './rolling.js';

function fakeRouter(ids: string[]) {
  const draining = new Set<string>();
  const healthy = new Set(ids);
  const events: string[] = [];
  const router = {
    route: (): RouteView => ({ backends: ids.map((id) => ({ id, healthy: healthy.has(id), draining: draining.has(id) })) }) as unknown as RouteView,
    setDraining: (_name: string, id: string, on: boolean) => {
      events.push(`${on ? 'drain' : 'undrain'} ${id}`);
      if (on) draining.add(id);
      else draining.delete(id);
      return ids.includes(id);
    },
  };
  return { router, events, healthy };
}

describe('rollOver', () => {
  it('drains each host before its change and puts it back after, one host at a time', async () => {
    const { router, events } = fakeRouter(['h-a', 'h-b']);
    const deps = { ...routerDrain(router, 5), awaitServicesReady: () => Promise.resolve(void events.push('ready')), backendHealthy: () => true };
    await rollOver(deps, { tenantId: 't', name: 'shop' }, ['h-a', 'h-b'], (id) => Promise.resolve(void events.push(`change ${id}`)), { deadline: Date.now() + 5000 });
    expect(events).toEqual(['drain h-a', 'change h-a', 'ready', 'undrain h-a', 'drain h-b', 'change h-b', 'ready', 'undrain h-b']);
  });

  it('does not drain a host no other healthy backend can stand in for, and puts a drained one back when its change fails', async () => {
    const alone = fakeRouter(['h-a']);
    const lone = { ...routerDrain(alone.router, 5), awaitServicesReady: () => Promise.resolve(), backendHealthy: () => true };
    await rollOver(lone, { tenantId: 't', name: 'shop' }, ['h-a'], () => Promise.resolve(), { deadline: Date.now() + 5000 });
    expect(alone.events).toEqual([]);

    const pair = fakeRouter(['h-a', 'h-b']);
    const deps = { ...routerDrain(pair.router, 5), awaitServicesReady: () => Promise.reject(new Error('web failed')), backendHealthy: () => true };
    await expect(rollOver(deps, { tenantId: 't', name: 'shop' }, ['h-a'], () => Promise.resolve(), { deadline: Date.now() + 5000 })).rejects.toThrow('web failed');
    expect(pair.events).toEqual(['drain h-a', 'undrain h-a']);
  });
});
