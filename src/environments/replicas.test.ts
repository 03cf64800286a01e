import { describe, expect, it } from 'vitest';
import { parseReplicas, UsageError } from '../cli/output.js';
import { applyReplicaChange, describeCounts, replicasOf, sameCounts } from './replicas.js';
import { scaleEnvironmentBody } from './scale.js';
import { createEnvironmentBody } from './spec.js';

describe('replica counts per service', () => {
  const current = { replicas: 2, serviceReplicas: { web: 3 } };

  it('reads a change as a person means it: N alone is every service, SERVICE=N alone keeps the rest, both replace', () => {
    expect(applyReplicaChange(current, { replicas: 1 })).toEqual({ replicas: 1, serviceReplicas: {} });
    expect(applyReplicaChange(current, { services: { worker: 1 } })).toEqual({ replicas: 2, serviceReplicas: { web: 3, worker: 1 } });
    expect(applyReplicaChange(current, { services: { web: 1 } })).toEqual({ replicas: 2, serviceReplicas: { web: 1 } });
    expect(applyReplicaChange(current, { replicas: 4, services: { api: 1 } })).toEqual({ replicas: 4, serviceReplicas: { api: 1 } });
    expect(applyReplicaChange(current, {})).toEqual(current);
  });

  it('gives each service its count, compares counts whatever their order, and says them in a line', () => {
    expect([replicasOf(current, 'web'), replicasOf(current, 'api')]).toEqual([3, 2]);
    expect(sameCounts({ replicas: 1, serviceReplicas: { a: 1, b: 2 } }, { replicas: 1, serviceReplicas: { b: 2, a: 1 } })).toBe(true);
    expect(sameCounts({ replicas: 1, serviceReplicas: { a: 1 } }, { replicas: 1, serviceReplicas: {} })).toBe(false);
    expect(sameCounts({ replicas: 1, serviceReplicas: {} }, { replicas: 2, serviceReplicas: {} })).toBe(false);
    expect(describeCounts({ replicas: 1, serviceReplicas: {} })).toBe('1 replica');
    expect(describeCounts({ replicas: 2, serviceReplicas: { web: 3, worker: 1 } })).toBe('2 replicas (web 3, worker 1)');
  });

  it('takes the CLI forms N and SERVICE=N, repeated or comma-separated; anything else is a usage error', () => {
    expect(parseReplicas([])).toEqual({});
    expect(parseReplicas(['2'])).toEqual({ replicas: 2 });
    expect(parseReplicas(['1', 'web=3,worker=2'])).toEqual({ replicas: 1, serviceReplicas: { web: 3, worker: 2 } });
    for (const bad of ['two', 'web=', '=3', 'Web=2', '-1', 'web=1.5']) expect(() => parseReplicas([bad])).toThrow(UsageError);
  });

  it('refuses counts below one or above the limit, bad service names, and a scale that gives no count', () => {
    const body = { name: 'e', stack: 's', mode: 'service' };
    expect(createEnvironmentBody.parse({ ...body, serviceReplicas: { web: 3 } })).toMatchObject({ replicas: 1, serviceReplicas: { web: 3 } });
    expect(createEnvironmentBody.parse(body).serviceReplicas).toEqual({});
    for (const serviceReplicas of [{ web: 0 }, { web: 101 }, { web: 1.5 }, { 'No Such': 1 }]) expect(createEnvironmentBody.safeParse({ ...body, serviceReplicas }).success).toBe(false);
    expect(scaleEnvironmentBody.safeParse({}).success).toBe(false);
    expect(scaleEnvironmentBody.safeParse({ serviceReplicas: { web: 2 } }).success).toBe(true);
  });
});
