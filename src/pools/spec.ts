/**
 * A pool's spec as users write it (HTTP body, `berth pool create`, berth.yaml) and as the server
 * keeps it: friendly options in, checked and completed spec out. Durations are seconds.
 */
import { z } from 'zod';
import { BerthError } from '../core/errors.js';
import { DISK_MAX_MIB, DISK_MIN_MIB } from '../core/resources.js';
import { EGRESS_ALLOW_NEEDS_EGRESS, egressAllow, egressAllowNeedsEgress, machinePorts } from '../core/resources-schema.js';
import type { PoolSpec } from '../store/pools-repo.js';
import type { PoolSchedule } from '../store/schema.js';
import { checkSchedule, poolScheduleInput } from './schedule.js';

export const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const nameSchema = z.string().regex(NAME, 'a name is 1-63 lowercase letters, digits and dashes');
const tags = z.record(z.string().min(1).max(128), z.string().max(256));

export const poolSpecInput = z
  .object({
    name: nameSchema,
    image: z.string().min(1).default('/').describe("Image the pool's hosts boot from: an image name (`berth image ls`; a new build rolls the pool), or a root filesystem directory"),
    size: z.number().int().min(0).max(10_000).describe('Ready hosts to keep'),
    maxSize: z.number().int().min(0).max(10_000).optional().describe('Most hosts the pool holds at once, warming and ready (default: size + maxLaunching)'),
    maxLaunching: z.number().int().min(1).max(1000).default(4).describe('Hosts launched at once when refilling'),
    maxIdleAge: z.number().int().positive().max(30 * 24 * 3600).optional().describe('Seconds a ready host may wait before it is replaced'),
    warmup: z.array(z.string().min(1)).max(100).default([]).describe('Commands run on each new host before it counts as ready'),
    healthCheck: z
      .object({
        command: z.string().min(1),
        interval: z.number().positive().max(3600).default(30),
        timeout: z.number().positive().max(600).default(10),
      })
      .strict()
      .optional()
      .describe('Run before a host counts as ready, then every `interval` seconds, and at each claim'),
    onEmpty: z.enum(['launch', 'fail']).default('launch').describe('What a claim does when no host is ready'),
    demand: z
      .object({
        max: z.number().int().min(1).max(10_000).describe('Most ready hosts demand may ask for'),
        window: z.number().int().min(10).max(7 * 24 * 3600).default(600).describe('Seconds of claims considered'),
        leadTime: z.number().positive().max(3600).optional().describe("Seconds a refill takes (default: measured, the median of the pool's last 20 hosts from launch to ready)"),
      })
      .strict()
      .optional()
      .describe('Size the pool by demand: keep as many ready hosts as the most claims seen within one lead time during the window, between size and max'),
    schedule: poolScheduleInput
      .optional()
      .describe("Size the pool by the clock: the first rule whose cron holds now gives the ready hosts to keep, none: `size` (demand, when set, grows it from there)"),
    onRelease: z.enum(['terminate', 'reuse']).default('terminate').describe('What releasing a claimed host does when the release does not say (environments removed, deploys): terminate it, or reset it and return it to the pool'),
    driver: z.enum(['local', 'aws']).optional().describe("The driver the pool's hosts need; a server runs one, and refuses a pool meant for another"),
    template: z
      .object({
        cpus: z.number().positive().max(1024).optional(),
        memoryMiB: z.number().int().positive().optional(),
        pids: z.number().int().positive().optional(),
        diskMiB: z.number().int().min(DISK_MIN_MIB).max(DISK_MAX_MIB).optional().describe('Local driver: the size of the filesystem each host writes to, MiB'),
        egress: z.boolean().optional().describe('Local driver: each host may open connections beyond the machine (NAT), except to the denied ranges'),
        machinePorts: machinePorts.optional().describe("Local driver: TCP ports of the machine (at the hosts' gateway address) each host may connect to besides its agent channel"),
        egressAllow: egressAllow.optional().describe('Local driver, with egress: each host reaches only these IPv4 ranges and the addresses of these names once it resolves them'),
        tags: tags.default({}),
        aws: z
          .object({
            instanceType: z.string().regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, 'an EC2 instance type, e.g. t3.micro').optional(),
            subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/, 'a subnet id, subnet-…')).min(1).optional(),
            securityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]+$/, 'a security group id, sg-…')).min(1).optional(),
            instanceProfile: z.string().min(1).max(2048).optional(),
            commandChannel: z
              .enum(['agent', 'ssm'])
              .optional()
              .describe("How commands reach the pool's hosts: berth's agent (the server's default), or the SSM agent of the AMI (no berth agent runs; no supervised services)"),
            warmPool: z
              .object({
                state: z.enum(['Stopped', 'Running', 'Hibernated']).default('Stopped'),
                minSize: z.number().int().min(0).max(10_000).optional(),
                maxPreparedCapacity: z.number().int().min(0).max(10_000).optional(),
                reuseOnScaleIn: z.boolean().optional(),
              })
              .strict()
              .optional()
              .describe("An EC2 warm pool behind the pool's group: instances initialised ahead and kept stopped (or running, or hibernated), which refill the pool faster than new launches"),
          })
          .strict()
          .optional()
          .describe("AWS driver: this pool's instance type, subnets, security groups and instance profile, over the server's"),
      })
      .strict()
      .default({ tags: {} }),
  })
  .strict();

export type PoolSpecInput = z.input<typeof poolSpecInput>;

/** Checks what the schema cannot (relations between fields) and fills the defaults. */
/** What `berth pool scale` (PATCH /v1/pools/NAME) changes: the pool's numbers, nothing its hosts boot from. */
export const poolScaleInput = z
  .object({
    size: z.number().int().min(0).max(10_000).optional().describe('Ready hosts to keep'),
    maxSize: z.number().int().min(0).max(10_000).optional().describe('Most hosts the pool holds at once, warming and ready'),
    maxLaunching: z.number().int().min(1).max(1000).optional().describe('Hosts launched at once when refilling'),
  })
  .strict()
  .refine((v) => v.size !== undefined || v.maxSize !== undefined || v.maxLaunching !== undefined, { message: 'give size, maxSize or maxLaunching' });

/**
 * A pool's numbers agree: size <= maxSize, and demand.max (when set) between them; so does each
 * size its schedule gives. `raiseMax`: what to tell a caller whose size is above the max (default:
 * the spec's own words).
 */
export function checkPoolSizes(
  name: string,
  n: { size: number; maxSize: number; demandMax: number | undefined; schedule?: PoolSchedule | null },
  raiseMax = 'Lower size or raise maxSize (maxSize bounds warming plus ready hosts).',
): void {
  const { size, maxSize, demandMax } = n;
  if (maxSize < size) throw new BerthError('validation_failed', `pool ${name}: size ${size} is above maxSize ${maxSize}`, raiseMax, { size, maxSize });
  for (const [i, rule] of (n.schedule?.rules ?? []).entries()) {
    if (rule.size > maxSize) {
      throw new BerthError('validation_failed', `pool ${name}: schedule.rules[${i}] keeps ${rule.size} ready hosts, above maxSize ${maxSize}`, 'Lower the rule\'s size or raise maxSize (it bounds warming plus ready hosts).', { size: rule.size, maxSize });
    }
    if (demandMax !== undefined && rule.size > demandMax) {
      throw new BerthError('validation_failed', `pool ${name}: schedule.rules[${i}] keeps ${rule.size} ready hosts, above demand.max ${demandMax}`, 'A rule\'s size is the fewest ready hosts while it holds, demand.max the most: raise demand.max or lower the rule\'s size.', { size: rule.size, demandMax });
    }
  }
  if (demandMax !== undefined && demandMax < size) {
    throw new BerthError('validation_failed', `pool ${name}: demand.max ${demandMax} is below size ${size}`, 'size is the fewest ready hosts, demand.max the most: raise demand.max or lower size.', { size, demandMax });
  }
  if (demandMax !== undefined && demandMax > maxSize) {
    throw new BerthError('validation_failed', `pool ${name}: demand.max ${demandMax} is above maxSize ${maxSize}`, 'Raise maxSize (it bounds warming plus ready hosts) or lower demand.max.', { maxSize, demandMax });
  }
}

export function completeSpec(input: z.output<typeof poolSpecInput>): PoolSpec {
  const demandMax = input.demand?.max;
  const schedule = input.schedule ? checkSchedule(input.name, input.schedule) : null;
  const maxSize = input.maxSize ?? Math.max(input.size, demandMax ?? 0, ...(schedule?.rules ?? []).map((r) => r.size)) + input.maxLaunching;
  checkPoolSizes(input.name, { size: input.size, maxSize, demandMax, schedule });
  if (!egressAllowNeedsEgress(input.template)) {
    throw new BerthError('validation_failed', `pool ${input.name}: ${EGRESS_ALLOW_NEEDS_EGRESS.message}`, 'Add egress: true to the template, or drop egressAllow.');
  }
  const { tags: templateTags, ...limits } = input.template;
  return {
    name: input.name,
    ...(input.driver ? { driver: input.driver } : {}),
    image: input.image,
    template: { ...limits, tags: templateTags },
    size: input.size,
    maxSize,
    maxLaunching: input.maxLaunching,
    maxIdleAgeS: input.maxIdleAge ?? null,
    warmup: input.warmup,
    healthCheck: input.healthCheck ? { command: input.healthCheck.command, intervalS: input.healthCheck.interval, timeoutS: input.healthCheck.timeout } : null,
    onEmpty: input.onEmpty,
    onRelease: input.onRelease,
    demand: input.demand ? { max: input.demand.max, windowS: input.demand.window, leadTimeS: input.demand.leadTime ?? null } : null,
    schedule,
  };
}

/** Parses untrusted input (berth.yaml, CLI) into a spec, with the same errors the API gives. */
export function parsePoolSpec(input: unknown): PoolSpec {
  const parsed = poolSpecInput.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(pool)'}: ${i.message}`);
    throw new BerthError('validation_failed', `invalid pool: ${issues.join('; ')}`, 'Fix the listed fields; see /docs for the pool schema.');
  }
  return completeSpec(parsed.data);
}

export const claimInput = z
  .object({
    group: nameSchema.describe('The group (user, tenant or environment) that gets the host'),
    init: z.array(z.string().min(1)).max(100).default([]).describe('Commands run on the host before the claim completes'),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}).describe('Environment of the init commands'),
    tags: tags.default({}).describe('Tags the host gets for this user'),
    labels: tags.optional().describe("Labels merged into the group's"),
    deadline: z
      .number()
      .positive()
      .max(3600)
      .optional()
      .describe("Seconds the claim may take, retries and cold launch included (default 60, or the driver's boot limit + 30 when that is longer: an EC2 instance's cold launch takes minutes)"),
    idempotencyKey: z.string().min(1).max(200).optional().describe('Same key, same claim (and host)'),
    maxAttempts: z.number().int().min(1).max(10).default(3).describe('Hosts tried before the claim fails'),
  })
  .strict();

export type ClaimInput = z.output<typeof claimInput>;
