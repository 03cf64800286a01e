/** What the control plane tells the driver about groups (the driver's side: test/e2e/network-groups.test.ts). */
import { describe, expect, it } from 'vitest';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';
import { NetworkGroups } from './network-groups.js';

const host = (id: string, group: string | null = 'alice', tags: Record<string, string> = {}): HostRow => ({ id, tenant_id: 't', group_name: group, hostname: id, tags, driver_data: { initPid: id.length } }) as unknown as HostRow;
const mate = (id: string, tags: Record<string, string> = {}) => ({ id, hostname: id, tags, driver_data: { initPid: id.length } });

function setup(running: HostRow[] = []) {
  const calls: string[][][] = [];
  const all: boolean[] = [];
  const names: Record<string, string[] | undefined>[] = [];
  const groups = new NetworkGroups({
    driver: {
      setNetworkGroups: (g, opts) => {
        all.push(opts?.all === true);
        calls.push(g.map((members) => members.map((m) => m.id).sort()));
        names.push(Object.fromEntries(g.flat().map((m) => [m.id, m.names])));
        return Promise.resolve();
      },
    },
    hosts: { groupMembers: () => Promise.resolve([]), listInStates: () => Promise.resolve(running) } as unknown as HostsRepo,
    log: () => undefined,
  });
  return { calls, names, groups, all };
}

describe('network groups', () => {
  it('asks nothing of the driver for a host alone in its group', async () => {
    const { calls, groups } = setup();
    await groups.joined(host('h-a'), []);
    expect(calls).toEqual([]);
  });

  it('gives the driver the whole group when a host joins others', async () => {
    const { calls, groups } = setup();
    await groups.joined(host('h-c'), [mate('h-a'), mate('h-bb')]);
    expect(calls).toEqual([[['h-a', 'h-bb', 'h-c']]]);
  });

  it('names each member by its hostname and, on a service-mode host, its service', async () => {
    const { names, groups } = setup();
    await groups.joined(host('h-web', 'env-a', { 'berth.service': 'web' }), [mate('h-api', { 'berth.service': 'api' }), mate('h-x', { 'berth.service': 'Not a label!' })]);
    expect(names).toEqual([{ 'h-web': ['h-web', 'web'], 'h-api': ['h-api', 'api'], 'h-x': ['h-x'] }]);
  });

  it('connects two hosts whose claims ended at once and did not see each other in the store', async () => {
    const { calls, groups } = setup();
    await Promise.all([groups.joined(host('h-a'), []), groups.joined(host('h-b'), [])]);
    expect(calls).toEqual([[['h-a', 'h-b']]]);
  });

  it('forgets a host that left (terminated or reset) instead of asking the driver about it again', async () => {
    const { calls, groups } = setup();
    await groups.joined(host('h-a'), []);
    groups.left('h-a');
    await groups.joined(host('h-b'), []);
    expect(calls).toEqual([]);
  });

  it('keeps groups apart, and a host without a group out', async () => {
    const { calls, groups } = setup();
    await groups.joined(host('h-a', 'alice'), []);
    await groups.joined(host('h-b', 'bob'), []);
    await groups.joined(host('h-c', null), []);
    expect(calls).toEqual([]);
  });

  it('sets the whole truth from the store, with the joins of this process the store did not show yet', async () => {
    const claimed = (id: string, group: string): HostRow => ({ ...host(id, group), slot: 'claimed' });
    const spare = { ...host('h-spare', null), slot: 'ready' } as HostRow;
    const { calls, all, groups } = setup([claimed('h-a', 'alice'), claimed('h-b', 'alice'), claimed('h-c', 'bob'), spare]);
    // h-d joined bob after the store was read (its claim committed meanwhile): it stays in bob's group.
    await groups.joined(host('h-d', 'bob'), [mate('h-c')]);
    await groups.syncAll();
    expect(all).toEqual([false, true]);
    expect(calls.at(-1)).toEqual([['h-a', 'h-b'], ['h-c', 'h-d']]);
    // One that left is not put back.
    groups.left('h-d');
    await groups.syncAll();
    expect(calls.at(-1)).toEqual([['h-a', 'h-b'], ['h-c']]);
  });
});
