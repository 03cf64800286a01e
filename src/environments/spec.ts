/**
 * What `berth env create` asks for (the HTTP body; the CLI builds it), checked before anything is
 * claimed: a name that is a DNS label (it becomes NAME.<domain>), a known mode, replicas ≥ 1 (a service's own count only in service mode, for a service of the stack), env
 * names that are identifiers, a TTL that parses.
 */
import { z } from 'zod';
import { ENV_NAME_PATTERN } from '../protocol/messages.js';
import { parseDurationMs } from '../core/duration.js';
import { sleepAfterField } from './sleep.js';
import { replicaCount, serviceReplicasField } from './replicas.js';

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export const environmentName = z
  .string()
  .regex(DNS_LABEL, 'an environment name is a DNS label: 1-63 lowercase letters, digits and dashes, not starting or ending with a dash');

export const createEnvironmentBody = z
  .object({
    name: environmentName,
    stack: z.string().min(1).max(63).describe('The stack (`berth apply`) whose services it runs'),
    pool: z.string().min(1).max(63).optional().describe("The pool its hosts are claimed from; default: the pool named after the stack"),
    mode: z.enum(['review', 'service']).default('review').describe('review: the whole stack on one host; service: each service on its own hosts'),
    ref: z.string().min(1).max(2000).optional().describe('The version it runs (BERTH_REF in every service); or a slug: an http(s) URL or absolute path of a .tar/.tgz (optionally #sha256=HEX) holding the app and a Procfile'),
    command: z.string().min(1).max(4000).optional().describe("A slug's web command, when the slug has no Procfile"),
    replicas: replicaCount.default(1).describe('Hosts per service (service mode) or review hosts behind the router'),
    serviceReplicas: serviceReplicasField.default({}),
    user: z.string().min(1).max(128).optional().describe('Who it is for (tag owner=USER)'),
    set: z
      .record(z.string().regex(ENV_NAME_PATTERN, 'an env name is letters, digits and underscores, not starting with a digit'), z.string().max(4096))
      .default({})
      .describe("Env values for every service, over the stack's layers"),
    ttl: z.string().optional().describe('Removed after this long: 90s, 30m, 2h, 7d'),
    sleepAfter: sleepAfterField.optional(),
    private: z.boolean().default(false).describe('Only requests with a berth token that may see it get through (berth env open NAME prints a link for a browser)'),
    wait: z.number().positive().max(600).default(120).describe('Seconds to wait for every service to be ready'),
  })
  .strict();

export type CreateEnvironmentInput = z.output<typeof createEnvironmentBody>;

export const deployEnvironmentBody = z
  .object({
    ref: z.string().min(1).max(2000).describe('The version to run, or a slug'),
    command: z.string().min(1).max(4000).optional().describe("A slug's web command, when the slug has no Procfile (default: the environment's)"),
    wait: z.number().positive().max(600).default(120),
  })
  .strict();

export const environmentPatchBody = z
  .object({
    ttl: z.string().min(1).max(32).nullable().optional().describe('Removed this long from now (90s, 30m, 2h, 7d); null: never'),
    sleepAfter: sleepAfterField.nullable().optional(),
    private: z.boolean().optional().describe('Only requests with a berth token that may see it get through'),
  })
  .strict()
  .refine((body) => body.ttl !== undefined || body.sleepAfter !== undefined || body.private !== undefined, { message: 'give ttl, sleepAfter or private' });

/** `90s`, `30m`, `2h`, `7d` (or plain seconds) in milliseconds. */
export function parseTtl(text: string): number {
  return parseDurationMs(text, 'ttl');
}
