import { describe, expect, it } from 'vitest';
import { parseReplicas, UsageError } from '../cli/output.js';
import { applyReplicaChange, describeCounts, replicasOf, sameCounts } from './replicas.js';
import { tmpdir } from 'node:os';
import { parseStacksFile } from '../stacks/spec.js';
import { scaleEnvironmentBody, scalesInPlace } from './scale.js';
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

describe('a service-mode scale in place, or by a deploy', () => {
  // db listens and web depends on it; web listens, nothing depends on it; worker listens on nothing.
  const [stack] = parseStacksFile(
    ['stacks:', '  shop:', '    services:', '      db: {cmd: run-db, ready: {tcp: 5432}}', '      web: {cmd: run-web, ports: [8080], dependsOn: [db]}', '      worker: {cmd: run-worker, dependsOn: [db]}'].join('\n'),
    'berth.yaml',
    tmpdir(),
  );
  const from = { replicas: 1, serviceReplicas: {} };

  it('is in place when no host is told the changed services addresses: a top-level service, one without a port', () => {
    if (!stack) throw new Error('expected the stack');
    expect(scalesInPlace(stack, from, { replicas: 1, serviceReplicas: { web: 3 } })).toBe(true);
    expect(scalesInPlace(stack, from, { replicas: 1, serviceReplicas: { worker: 2, web: 2 } })).toBe(true);
    expect(scalesInPlace(stack, { replicas: 1, serviceReplicas: { web: 3 } }, from)).toBe(true);
  });

  it("is a deploy when the hosts above a changed service are told its addresses (db's, here)", () => {
    if (!stack) throw new Error('expected the stack');
    expect(scalesInPlace(stack, from, { replicas: 1, serviceReplicas: { db: 2 } })).toBe(false);
    expect(scalesInPlace(stack, from, { replicas: 2, serviceReplicas: {} })).toBe(false);
    expect(scalesInPlace(stack, from, { replicas: 2, serviceReplicas: { db: 1 } })).toBe(true);
  });
});
