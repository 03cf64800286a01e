/**
 * What a restarted server does with environments it finds mid-operation, against the store: a
 * scale cut short gives back the hosts that were joining or leaving (recorded outside the routed
 * generation) and is ready on the hosts its route had; a sleep or wake cut short goes to sleep.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TENANT } from '../store/migrations.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';
import { readyEnvironment, useEnvironmentsRepo } from '../../test/helpers/environments.js';
import { recoverEnvironments, type RecoveryOps } from './recovery.js';

const T = DEFAULT_TENANT;
const route = { service: 'web', port: 8080, healthPath: '/', generation: 1 };

describe('recovery after a restart', () => {
  const repo = useEnvironmentsRepo();

  it('gives back the hosts a scale had joining or leaving, and routes the rest; sleeps what was asleep or waking', async () => {
    const steps: string[] = [];
    const ops: RecoveryOps = {
      envs: repo.envs,
      letGo: (row, hosts) => Promise.resolve(void steps.push(`let go ${row.name} ${hosts.map((h) => h.hostId).join(',')}`)),
      releaseStale: (row, hosts) => Promise.resolve(void steps.push(`release ${row.name} ${hosts.map((h) => h.hostId).join(',')}`)),
      finishRemoval: (row) => Promise.resolve(void steps.push(`remove ${row.name}`)),
      settleSettings: () => Promise.resolve(),
      recoverAsleep: (row) => Promise.resolve(void steps.push(`asleep ${row.name} (${row.state})`)),
      restoreRoute: (row: EnvironmentRow, r) => Promise.resolve(void steps.push(`route ${row.name} gen ${r.generation}: ${row.hosts.map((h) => h.hostId).join(',')}`)),
      log: (line) => steps.push(`log ${line}`),
    };
    // "up": scaling from 2 to 3, the third host claimed; "down": scaling to 1, the second leaving.
    for (const [name, hosts] of [
      ['up', [{ hostId: 'up-1', generation: 1 }, { hostId: 'up-2', generation: 1 }, { hostId: 'up-3', generation: 2 }]],
      ['down', [{ hostId: 'down-1', generation: 1 }, { hostId: 'down-2', generation: 2 }]],
    ] as const) {
      await repo.envs.insert({ tenantId: T, name, stack: 's', pool: 's', mode: 'review', ref: null, command: null, replicas: 2, owner: null, settings: {}, expiresAt: null });
      await repo.envs.transition(T, name, ['creating'], 'ready', { route });
      await repo.envs.transition(T, name, ['ready'], 'scaling', { hosts: hosts.map((h): EnvHostRecord => ({ ...h, service: null })) });
    }
    await readyEnvironment(repo.envs, 'nap');
    await repo.envs.transition(T, 'nap', ['ready'], 'sleeping');
    expect(await recoverEnvironments(ops)).toEqual({ routed: ['up', 'down', 'nap'], cleaned: [] });
    expect(steps).toEqual(['release up up-3', 'route up gen 1: up-1,up-2', 'release down down-2', 'route down gen 1: down-1', 'asleep nap (sleeping)']);
    // Its count is the hosts it kept: `env scale down 1` again is not taken for nothing to do.
    for (const [name, hosts] of [['up', ['up-1', 'up-2']], ['down', ['down-1']]] as const) {
      const row = await repo.envs.get(T, name);
      expect({ state: row?.state, reason: row?.state_reason, hosts: row?.hosts.map((h) => h.hostId), replicas: row?.replicas }).toEqual({ state: 'ready', reason: 'a scale was cut short by a server restart', hosts, replicas: hosts.length });
    }

    // A heal cut short: its replacement given back, the lost host kept in the record for the next sweep.
    steps.length = 0;
    await repo.envs.insert({ tenantId: T, name: 'heal', stack: 's', pool: 's', mode: 'review', ref: null, command: null, replicas: 1, owner: null, settings: {}, expiresAt: null });
    await repo.envs.transition(T, 'heal', ['creating'], 'ready', { route });
    await repo.envs.transition(T, 'heal', ['ready'], 'healing', { hosts: [{ hostId: 'lost-1', service: null, generation: 1 }, { hostId: 'new-1', service: null, generation: 2 }] });
    await recoverEnvironments(ops);
    expect(steps).toContain('release heal new-1');
    expect(await repo.envs.get(T, 'heal')).toMatchObject({ state: 'ready', state_reason: 'replacing lost hosts was cut short by a server restart', hosts: [{ hostId: 'lost-1' }] });
  });
});
