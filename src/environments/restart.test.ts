/**
 * Restarts against the store, with hosts whose supervisors are simulated in memory: only the named
 * service restarts, host by host, a host counts as done only with a new process ready; a service
 * that fails after its restart stops the roll there, and the environment is ready again, saying so.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import type { HostServicesView, ServiceView } from '../services/services-service.js';
import { DEFAULT_TENANT } from '../store/migrations.js';
import { readyEnvironment, useEnvironmentsRepo } from '../../test/helpers/environments.js';
import { rejection } from '../../test/helpers/errors.js';
import { restartServices, type RestartDeps } from './restart.js';

const T = DEFAULT_TENANT;

describe('environment restart', () => {
  const repo = useEnvironmentsRepo();
  let steps: string[];
  /** host -> service -> [pid, state] */
  let hosts: Map<string, Map<string, { pid: number; state: 'ready' | 'failed' }>>;
  let nextPid: number;
  let failing: string | undefined;

  const view = (hostId: string): HostServicesView => ({
    hostId,
    agentConnected: true,
    reportedAt: null,
    leaving: [],
    stack: null,
    services: [...(hosts.get(hostId) ?? new Map<string, { pid: number; state: 'ready' | 'failed' }>())].map(
      ([name, s]): ServiceView => ({ name, cmd: 'x', dependsOn: [], ports: [], envNames: [], configHash: 'c', status: { name, state: s.state, restarts: 0, pid: s.pid, lastExit: null, reason: s.state === 'failed' ? 'crashed 5 times in a row' : '', since: '', configHash: 'c' } }),
    ),
  });

  const deps = (): RestartDeps => ({
    envs: repo.envs,
    services: {
      get: (_t, hostId) => Promise.resolve(view(hostId)),
      act: (_t, hostId, name) => {
        steps.push(`restart ${hostId}/${name}`);
        hosts.get(hostId)?.set(name, { pid: nextPid++, state: failing === `${hostId}/${name}` ? 'failed' : 'ready' });
        return Promise.resolve();
      },
      // The simulated supervisor has already answered by the time anyone waits.
      waitFor: (_t, hostId) => {
        steps.push(`wait ${hostId}`);
        return Promise.resolve(view(hostId));
      },
    },
    awaitServicesReady: () => Promise.reject(new Error('restarts wait for new processes instead')),
    backendHealthy: (_name, hostId) => {
      steps.push(`routed? ${hostId}`);
      return true;
    },
  });

  const make = async (name: string) => {
    for (const id of [`${name}-1`, `${name}-2`]) {
      hosts.set(id, new Map([['api', { pid: nextPid++, state: 'ready' }], ['web', { pid: nextPid++, state: 'ready' }]]));
    }
    return readyEnvironment(repo.envs, name);
  };
  beforeEach(() => {
    steps = [];
    hosts = new Map();
    nextPid = 100;
    failing = undefined;
  });

  it('restarts only the named service, one host after the other', async () => {
    const row = await make('one');
    const apiBefore = hosts.get('one-1')?.get('api')?.pid;
    const done = await restartServices(deps(), row, { service: 'web', wait: 5 });
    expect(steps).toEqual(['restart one-1/web', 'wait one-1', 'routed? one-1', 'restart one-2/web', 'wait one-2', 'routed? one-2']);
    expect([done.state, done.state_reason]).toEqual(['ready', 'restarted web on 2 hosts']);
    expect(hosts.get('one-1')?.get('api')?.pid).toBe(apiBefore);
  });

  it('stops at a service that fails after its restart: the next host is not touched, and the environment is ready again saying why', async () => {
    const row = await make('two');
    failing = 'two-1/web';
    const err = await rejection(restartServices(deps(), row, { wait: 5 }));
    expect([err.code, err.message]).toEqual(['environment_failed', 'environment two: host two-1: service web failed after its restart: crashed 5 times in a row']);
    expect(steps).toEqual(['restart two-1/api', 'restart two-1/web', 'wait two-1']);
    const after = await repo.envs.get(T, 'two');
    expect([after?.state, after?.state_reason]).toEqual(['ready', expect.stringMatching(/^restart of its services stopped: environment two: host two-1: service web failed/)]);
  });

  it('refuses a service the environment does not run, and an environment that is not ready, changing nothing', async () => {
    const row = await make('three');
    const unknown = await rejection(restartServices(deps(), row, { service: 'db', wait: 5 }));
    expect([unknown.code, unknown.message]).toEqual(['validation_failed', 'environment three runs no service db (it runs api, web)']);
    await repo.envs.transition(T, 'three', ['ready'], 'deploying');
    const busy = await rejection(restartServices(deps(), { ...row, state: 'deploying' }, { wait: 5 }));
    expect([busy.code, busy.message]).toEqual(['conflict', 'environment three is deploying']);
    expect(steps).toEqual([]);
  });
});
