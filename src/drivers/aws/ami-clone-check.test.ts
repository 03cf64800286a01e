/**
 * The clone-uniqueness check of an AMI bake, with aws-sdk-client-mock standing in for EC2 and fake
 * hooks for berth's hosts: after the AMI is available, two instances are launched from it and
 * probed; clones that share a machine-id fail the bake naming it, and the AMI is deregistered and
 * its snapshots deleted; a probe that fails does the same; both instances are terminated (without
 * the caller's signal) and their host records released whatever happens; a reused AMI is not
 * checked.
 */
import {
  CreateImageCommand,
  CreateTagsCommand,
  DeleteSnapshotCommand,
  DeregisterImageCommand,
  DescribeImagesCommand,
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type DescribeImagesCommandInput,
  type DescribeInstancesCommandInput,
  type Image,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { rejection } from '../../../test/helpers/errors.js';
import { AmiBaker, type AmiBakeSpec, type BuilderRunner } from './ami-bake.js';
import type { CloneCheckHooks } from './ami-clone-check.js';
import { AMI_IDENTITY_PROBE } from './ami-identity.js';
import { resolveAwsConfig } from './config.js';

const ec2 = mockClient(EC2Client);
const PARENT = 'ami-0123456789abcdef0';
const NEW_AMI = 'ami-0aaaaaaaaaaaaaaa1';
const DIGEST = 'ab'.repeat(32);
const cfg = resolveAwsConfig({ region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: PARENT, instanceType: 't3.micro', name: 'unit', subnetIds: ['subnet-1'], securityGroupIds: ['sg-1'] });
const spec: AmiBakeSpec = { name: 'web', parentImageId: PARENT, steps: ['true'], specDigest: DIGEST };
const image: Image = { ImageId: NEW_AMI, Name: 'unit-web-abababababab', State: 'available', BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { SnapshotId: 'snap-0new' } }] };
const runner: BuilderRunner = { run: () => Promise.resolve() };

/** EC2 for a bake that makes its AMI: a builder i-0b1 from the parent, clones i-0c1, i-0c2 from the AMI. */
function ec2Bake(): void {
  let clones = 0;
  ec2.on(RunInstancesCommand).callsFake((input: RunInstancesCommandInput) => {
    const id = input.ImageId === NEW_AMI ? `i-0c${++clones}` : 'i-0b1';
    return { Instances: [{ InstanceId: id, State: { Name: 'pending' } }] };
  });
  ec2.on(DescribeInstancesCommand).callsFake((input: DescribeInstancesCommandInput) => ({
    Reservations: [{ Instances: (input.InstanceIds ?? []).map((id) => ({ InstanceId: id, State: { Name: 'running' }, Tags: [] })) }],
  }));
  ec2.on(DescribeImagesCommand).callsFake((input: DescribeImagesCommandInput) => {
    if (input.ImageIds) return { Images: [image] };
    // The cleanup of a failed bake finds its AMI by name (for its snapshots); the lookup by spec digest finds nothing.
    return { Images: input.Filters?.some((f) => f.Name === 'name') ? [image] : [] };
  });
  ec2.on(CreateTagsCommand).resolves({});
  ec2.on(CreateImageCommand).resolves({ ImageId: NEW_AMI });
  ec2.on(TerminateInstancesCommand).resolves({});
  ec2.on(DeregisterImageCommand).resolves({});
  ec2.on(DeleteSnapshotCommand).resolves({});
}

const probeOutput = (machineId: string, host: string): string =>
  [`machine-id ${machineId}`, 'dbus-machine-id -', `agent-host-id ${host}`, `hostname ${host}`, ''].join('\n');

/** Fake berth hosts: each prepared host answers the probe with `outputs[n]` (or fails with `fail`). */
function hooks(outputs: string[], fail?: string): CloneCheckHooks & { ran: { hostId: string; instanceId: string; commands: string[] }[]; released: string[][] } {
  const ran: { hostId: string; instanceId: string; commands: string[] }[] = [];
  const released: string[][] = [];
  let n = 0;
  return {
    ran,
    released,
    prepare: (imageId) => Promise.resolve({ hostId: `h-${++n}`, userData: `#!/bin/sh\n# check host ${n} of ${imageId}\n` }),
    run: (hostId, instanceId, commands) => {
      ran.push({ hostId, instanceId, commands });
      return fail ? Promise.reject(new Error(fail)) : Promise.resolve(outputs[Number(hostId.slice(2)) - 1] ?? '');
    },
    release: (ids) => {
      released.push(ids);
      return Promise.resolve();
    },
  };
}

const terminated = (): string[][] => ec2.commandCalls(TerminateInstancesCommand).map((c) => c.args[0].input.InstanceIds ?? []);

beforeEach(() => ec2.reset());
afterAll(() => ec2.restore());

describe('AMI clone check', () => {
  it('clones that differ: two instances launched from the new AMI as bake-check hosts, probed, then terminated; the AMI stays', async () => {
    ec2Bake();
    const h = hooks([probeOutput('1'.repeat(32), 'h-1'), probeOutput('2'.repeat(32), 'h-2')]);
    const lines: string[] = [];
    const result = await new AmiBaker(cfg).bake(spec, runner, { pollMs: 1, cloneCheck: h, progress: (l) => lines.push(l) });
    expect(result).toMatchObject({ imageId: NEW_AMI, reused: false, cloneCheck: { instanceIds: ['i-0c1', 'i-0c2'], uniqueness: { ok: true } } });

    const launches = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input).filter((i) => i.ImageId === NEW_AMI);
    expect(launches).toHaveLength(2);
    for (const [k, launch] of launches.entries()) {
      expect(launch).toMatchObject({ MinCount: 1, MaxCount: 1, InstanceType: 't3.micro', SubnetId: 'subnet-1', MetadataOptions: { HttpTokens: 'required' } });
      expect(launch.TagSpecifications?.[0]?.Tags).toEqual(expect.arrayContaining([{ Key: 'berth:role', Value: 'bake-check' }, { Key: 'berth:managed-by', Value: 'unit' }, { Key: 'berth:host-id', Value: `h-${k + 1}` }]));
      expect(Buffer.from(launch.UserData ?? '', 'base64').toString()).toContain(`check host ${k + 1} of ${NEW_AMI}`);
    }
    expect(h.ran.map((r) => [r.hostId, r.instanceId])).toEqual([['h-1', 'i-0c1'], ['h-2', 'i-0c2']]);
    expect(h.ran[0]?.commands).toEqual(AMI_IDENTITY_PROBE);
    expect(terminated()).toEqual([['i-0c1', 'i-0c2'], ['i-0b1']]);
    expect(h.released).toEqual([['h-1', 'h-2']]);
    expect(ec2.commandCalls(DeregisterImageCommand)).toHaveLength(0);
    expect(lines).toContain('clones differ: machine-id, hostname, agent identity');
  });

  it('clones that share a machine-id: bake_failed naming machine-id; the AMI deregistered, its snapshot deleted, every instance terminated', async () => {
    ec2Bake();
    const shared = 'f'.repeat(32);
    const h = hooks([probeOutput(shared, 'h-1'), probeOutput(shared, 'h-2')]);
    const err = await rejection(new AmiBaker(cfg).bake(spec, runner, { pollMs: 1, cloneCheck: h }));
    expect(err.code).toBe('bake_failed');
    expect(err.message).toContain(`clone-uniqueness check failed for image web (${NEW_AMI}): its instances i-0c1 and i-0c2 share machine-id\n`);
    expect(err.message).not.toMatch(/share [^\n]*hostname/);
    expect(err.details).toMatchObject({ phase: 'clone-check', shared: ['machine-id'], missing: [], imageId: NEW_AMI });
    expect(ec2.commandCalls(DeregisterImageCommand).map((c) => c.args[0].input.ImageId)).toEqual([NEW_AMI]);
    expect(ec2.commandCalls(DeleteSnapshotCommand).map((c) => c.args[0].input.SnapshotId)).toEqual(['snap-0new']);
    expect(terminated()).toEqual([['i-0c1', 'i-0c2'], ['i-0b1']]);
    expect(h.released).toEqual([['h-1', 'h-2']]);
  });

  it('a probe that fails fails the bake naming the instance, and removes the AMI', async () => {
    ec2Bake();
    const h = hooks([], 'Failed with exit code 127: sh: head: not found');
    const err = await rejection(new AmiBaker(cfg).bake(spec, runner, { pollMs: 1, cloneCheck: h }));
    expect(err.code).toBe('bake_failed');
    expect(err.message).toMatch(/the identity probe failed on instance i-0c[12] of ami-0aaaaaaaaaaaaaaa1: Failed with exit code 127/);
    expect(ec2.commandCalls(DeregisterImageCommand)).toHaveLength(1);
    expect(terminated()).toEqual([['i-0c1', 'i-0c2'], ['i-0b1']]);
  });

  it('cancelled while the clones are probed: both terminated without the cancelled signal, the AMI removed', async () => {
    ec2Bake();
    const controller = new AbortController();
    const h = hooks([]);
    h.run = async (_host, _id, _commands, { signal }) => {
      controller.abort();
      return new Promise<string>((_, reject) => (signal.aborted ? reject(new Error('stopped')) : signal.addEventListener('abort', () => reject(new Error('stopped')), { once: true })));
    };
    const err = await rejection(new AmiBaker(cfg).bake(spec, runner, { pollMs: 1, cloneCheck: h, signal: controller.signal }));
    expect(err.code).toBe('deadline_exceeded');
    expect(err.message).toContain(`while checking that two instances of ${NEW_AMI} can be told apart`);
    const calls = ec2.commandCalls(TerminateInstancesCommand);
    expect(calls.map((c) => c.args[0].input.InstanceIds)).toEqual([['i-0c1', 'i-0c2'], ['i-0b1']]);
    const sent = (calls[0]?.args as unknown[] | undefined)?.[1] as { abortSignal?: AbortSignal } | undefined;
    expect(sent?.abortSignal?.aborted).toBe(false);
    expect(ec2.commandCalls(DeregisterImageCommand)).toHaveLength(1);
    expect(h.released).toEqual([['h-1', 'h-2']]);
  });

  it('a reused AMI is not checked again: nothing launched', async () => {
    ec2.on(DescribeImagesCommand).resolves({ Images: [image] });
    const h = hooks([]);
    expect(await new AmiBaker(cfg).bake(spec, runner, { pollMs: 1, cloneCheck: h })).toEqual({ imageId: NEW_AMI, reused: true, name: 'unit-web-abababababab' });
    expect(ec2.commandCalls(RunInstancesCommand)).toHaveLength(0);
    expect(h.ran).toEqual([]);
  });
});
