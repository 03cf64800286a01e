/** Request and response schemas of the HTTP API: validation and the OpenAPI document come from these. */
import { z } from 'zod';
import { MAX_EXECUTION_TIMEOUT_SECONDS, MAX_KILL_GRACE_SECONDS } from '../../commands/views.js';
import { DISK_MAX_MIB, DISK_MIN_MIB } from '../../core/resources.js';
import { EGRESS_ALLOW_NEEDS_EGRESS, egressAllow, egressAllowNeedsEgress, machinePorts } from '../../core/resources-schema.js';

const tags = z.record(z.string().min(1).max(128), z.string().max(256));

export const errorBody = z.object({
  code: z.string(),
  message: z.string(),
  hint: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

export const hostView = z.object({
  id: z.string(),
  state: z.string(),
  stateReason: z.string(),
  hostname: z.string(),
  ip: z.string().nullable(),
  image: z.string(),
  imageId: z.string().nullable(),
  driver: z.string(),
  tags: z.record(z.string(), z.string()),
  resources: z.record(z.string(), z.union([z.number(), z.array(z.number()), z.boolean(), z.array(z.string())])),
  pool: z.string().nullable(),
  group: z.string().nullable(),
  agent: z.object({ connected: z.boolean(), lastSeen: z.string().nullable(), version: z.string().nullable() }),
  createdAt: z.string(),
  readyAt: z.string().nullable(),
  terminatedAt: z.string().nullable(),
});

export const changeTagsBody = z
  .object({
    set: tags.optional().describe('Tags to add or replace'),
    remove: z.array(z.string().min(1).max(128)).optional().describe('Tag keys to remove'),
  })
  .strict();

const bytes = z.number().int().min(0);
export const hostStatsView = z.object({
  hostId: z.string(),
  at: z.string().describe('When it was read'),
  cpuSeconds: z.number().min(0).optional().describe('CPU time its processes used since it booted'),
  memoryBytes: bytes.optional(),
  memoryLimitBytes: bytes.optional().describe('Absent: no limit'),
  pids: z.number().int().min(0).optional(),
  pidsLimit: z.number().int().min(0).optional(),
  diskUsedBytes: bytes.optional().describe('Of its disk of its own (diskMiB); absent without one'),
  diskSizeBytes: bytes.optional(),
});

export const launchHostBody = z
  .object({
    image: z.string().min(1).optional().describe("An image name (`berth image ls`), or a root filesystem directory for the local driver; default: this machine's root"),
    hostname: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a hostname is 1-63 lowercase letters, digits and dashes')
      .optional(),
    tags: tags.optional(),
    resources: z
      .object({
        cpus: z.number().positive().max(1024).optional(),
        memoryMiB: z.number().int().positive().optional(),
        pids: z.number().int().positive().optional(),
        diskMiB: z.number().int().min(DISK_MIN_MIB).max(DISK_MAX_MIB).optional().describe('Local driver: the size of the filesystem the host writes to (its files past the image), MiB'),
        egress: z.boolean().optional().describe("Local driver: the host may open connections beyond the machine (NAT), except to the driver's denied ranges (private and link-local by default)"),
        machinePorts: machinePorts.optional().describe("Local driver: TCP ports of the machine (at the host's gateway address) the host may connect to besides its agent channel; the machine's other ports are closed to it"),
        egressAllow: egressAllow.optional().describe('Local driver, with egress: the host reaches only these IPv4 ranges and the addresses of these names (packages.example.com, *.mirror.example.org) once it resolves them; other names are not answered'),
      })
      .strict()
      .refine(egressAllowNeedsEgress, EGRESS_ALLOW_NEEDS_EGRESS)
      .optional(),
    wait: z.boolean().default(true).describe('Answer only when the agent has enrolled'),
    waitTimeout: z.number().positive().max(3600).optional().describe("Seconds to wait for the agent (default: the server's boot timeout: 30 s on the local driver, 5 min on AWS, 10 min for SSM hosts)"),
  })
  .strict();

export const hostIdParams = z.object({ id: z.string().min(1) });
export const listHostsQuery = z.object({ all: z.enum(['true', 'false']).optional(), tag: z.union([z.string(), z.array(z.string())]).optional() });

/** A count or a percentage ("10%"); checked in full by the command service (rate-control.ts). */
const rateSpec = z.union([z.number().int().min(0), z.string().regex(/^\s*\d{1,9}%?\s*$/, 'give a whole number or a percentage such as 10%')]);

export const sendCommandBody = z
  .object({
    document: z.literal('RunShellScript').default('RunShellScript'),
    targets: z
      .object({
        hostIds: z.array(z.string().min(1)).max(10_000).optional(),
        tags: tags.optional().describe('Every live host with all these tags (within the group, when one is given)'),
        group: z.string().min(1).max(63).optional().describe("Every live host of this group (a claim's user, tenant or environment)"),
      })
      .strict(),
    parameters: z
      .object({
        commands: z.array(z.string()).min(1, 'commands must list at least one command').max(1000),
        workingDirectory: z.string().min(1).optional(),
        executionTimeout: z.number().positive('executionTimeout must be a positive number of seconds').max(MAX_EXECUTION_TIMEOUT_SECONDS).optional(),
        killGrace: z
          .number()
          .min(0, 'killGrace must be 0 or more seconds')
          .max(MAX_KILL_GRACE_SECONDS)
          .optional()
          .describe('Seconds the processes get between TERM and KILL when the command times out or is cancelled (default 5; SSM hosts: SSM kills at once)'),
        env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'env names are letters, digits and underscores'), z.string()).optional(),
      })
      .strict(),
    deliveryTimeout: z.number().positive('deliveryTimeout must be a positive number of seconds').max(86_400).optional().describe('Seconds an agent has to accept its invocation, counted from when it is sent (default 30)'),
    maxConcurrency: rateSpec.optional().describe('At most this many invocations at once, as a count (2) or a percentage of the targets ("25%"); the others wait, Pending, and go out as earlier ones finish. Default: all at once'),
    maxErrors: rateSpec.optional().describe('Once more invocations than this have failed (count or percentage), no further one is sent: those still waiting end Cancelled. Default: never stop'),
    wait: z.number().min(0).max(3600).optional().describe('Seconds to wait for the command to finish before answering'),
  })
  .strict();

export const invocationView = z.object({
  hostId: z.string(),
  status: z.string(),
  statusDetail: z.string(),
  exitCodes: z.array(z.number()),
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.boolean(),
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
  stdoutBytes: z.number(),
  stderrBytes: z.number(),
  sentAt: z.string().nullable().describe('When the server sent it to its agent; null while it waits its turn (maxConcurrency)'),
  deliveredAt: z.string().nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});

export const commandView = z.object({
  id: z.string(),
  status: z.string(),
  document: z.string(),
  parameters: z.record(z.string(), z.unknown()),
  targets: z.record(z.string(), z.unknown()),
  deliveryTimeoutSeconds: z.number(),
  maxConcurrency: z.string().nullable(),
  maxErrors: z.string().nullable(),
  counts: z.object({ targets: z.number(), sent: z.number(), completed: z.number(), errors: z.number() }).describe('As SSM counts them: errors are Failed, TimedOut and DeliveryTimedOut invocations'),
  createdBy: z.object({ tokenId: z.string(), name: z.string() }).nullable().describe('The token that sent it; null: berth itself (a claim\'s init, a warm-up)'),
  createdAt: z.string(),
  completedAt: z.string().nullable(),
  invocations: z.array(invocationView),
});

export const commandIdParams = z.object({ id: z.string().min(1) });
export const getCommandQuery = z.object({ wait: z.coerce.number().min(0).max(3600).optional() });
export const listCommandsQuery = z.object({ limit: z.coerce.number().int().min(1).max(1000).optional() });
