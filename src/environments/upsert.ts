/**
 * `berth env up NAME …` (`PUT /v1/environments/NAME`): the environment as asked, whatever it was
 * before — the one command a CI pipeline runs on every push of a branch. Absent, it is created;
 * present, what differs is changed in place: a new ref (or slug command) is deployed (new hosts
 * first, with new settings if they differ too), other settings are set host by host, and the TTL
 * and sleep-after given are applied (a TTL counts again from now, so a branch pushed to lives on),
 * and so is `private`.
 * The same request again changes nothing. What cannot change in place (stack, pool, mode, replicas,
 * user) is refused, changing nothing (replicas scale it, as `env scale` does); so is any bad value, checked before anything is done.
 */
import { z } from 'zod';
import { BerthError } from '../core/errors.js';
import type { EnvironmentRow } from '../store/schema.js';
import { createEnvironmentBody, parseTtl, type CreateEnvironmentInput } from './spec.js';
import { nextSettings, type SettingsChange } from './settings.js';
import { parseSleepAfter } from './sleep.js';
import type { EnvironmentView } from './views.js';
import { applyReplicaChange, checkServiceReplicas, countsOf, describeCounts, sameCounts, type ReplicaChange, type ReplicaCounts } from './replicas.js';

const create = createEnvironmentBody.shape;

export const upsertEnvironmentBody = z
  .object({
    stack: create.stack,
    pool: create.pool,
    mode: create.mode.removeDefault().optional().describe('review or service (default review when it is created); must match when it exists'),
    ref: create.ref,
    command: create.command,
    replicas: create.replicas.removeDefault().optional().describe('Hosts per service or review hosts (default 1 when it is created); another number scales it (env scale): alone, services lose their own counts'),
    serviceReplicas: create.serviceReplicas.removeDefault().optional().describe('Service mode: services with a count of their own (alone: the other services keep theirs)'),
    user: create.user,
    set: create.set.removeDefault().optional().describe('Its settings, all of them: given, any setting not named is unset; left out, they are kept'),
    ttl: create.ttl,
    sleepAfter: create.sleepAfter,
    private: create.private.removeDefault().optional().describe('Only requests with a berth token that may see it get through; left out: as it is (public when it is created)'),
    wait: create.wait,
  })
  .strict();

export type UpsertEnvironmentInput = z.output<typeof upsertEnvironmentBody>;

/** What `env up` did to the running environment; `changes` also lists its timers. */
export type UpsertAction = 'created' | 'deployed' | 'configured' | 'scaled' | 'unchanged';

export interface UpsertResult {
  action: UpsertAction;
  changes: string[];
  environment: EnvironmentView;
}

export interface UpsertOps {
  find(tenantId: string, name: string): Promise<EnvironmentRow | undefined>;
  create(tenantId: string, input: CreateEnvironmentInput): Promise<EnvironmentView>;
  deploy(tenantId: string, name: string, ref: string, waitS: number, opts: { command?: string; settings?: Record<string, string>; counts?: ReplicaCounts; slugDigest?: string | null }): Promise<EnvironmentView>;
  /** The sha256 of the slug `ref` names now, or null when it is not a slug. */
  slugDigest(ref: string): Promise<string | null>;
  changeSettings(tenantId: string, name: string, change: SettingsChange): Promise<EnvironmentView>;
  scale(tenantId: string, name: string, change: ReplicaChange, waitS: number): Promise<EnvironmentView>;
  setOptions(tenantId: string, name: string, options: { ttl?: string; sleepAfter?: string; private?: boolean }): Promise<EnvironmentView>;
  get(tenantId: string, name: string): Promise<EnvironmentView>;
  /** Refuses counts for services its stack has not (replicas.ts checkServiceReplicas). */
  checkReplicas(row: EnvironmentRow, serviceReplicas: Record<string, number>): Promise<void>;
}

/** States in which another operation is under way: `env up` waits for none, it says so. */
const BUSY = new Set(['creating', 'deploying', 'configuring', 'restarting', 'scaling', 'healing', 'waking', 'removing']);

export async function upsertEnvironment(ops: UpsertOps, tenantId: string, name: string, body: UpsertEnvironmentInput): Promise<UpsertResult> {
  // Every value is checked before anything changes.
  if (body.ttl !== undefined) parseTtl(body.ttl);
  if (body.sleepAfter !== undefined) parseSleepAfter(body.sleepAfter);
  if (body.set !== undefined) nextSettings(name, {}, { set: body.set, unset: [] });
  const row = await ops.find(tenantId, name);
  if (!row) {
    const input = createEnvironmentBody.parse({ ...body, name, set: body.set ?? {} });
    return { action: 'created', changes: [`created (${input.mode}, ${describeCounts({ replicas: input.replicas, serviceReplicas: input.serviceReplicas })})`], environment: await ops.create(tenantId, input) };
  }
  const fixed: Array<[string, unknown, unknown]> = [
    ['stack', body.stack, row.stack],
    ['pool', body.pool, row.pool],
    ['mode', body.mode, row.mode],
    ['user', body.user, row.owner],
  ];
  const differs = fixed.find(([, wanted, has]) => wanted !== undefined && wanted !== has);
  if (differs) {
    const [what, wanted, has] = differs;
    throw new BerthError('conflict', `environment ${name} exists with ${what} ${String(has)}, not ${String(wanted)}`, `A ${what} does not change in place: remove it first (berth env rm ${name}), or leave --${what} out.`);
  }
  if (BUSY.has(row.state)) throw new BerthError('conflict', `environment ${name} is ${row.state}`, 'Wait until it settles, then run it again.');

  const changes: string[] = [];
  let action: UpsertAction = 'unchanged';
  const settings = body.set !== undefined && !sameSettings(body.set, row.settings) ? body.set : undefined;
  const change: ReplicaChange = { replicas: body.replicas, services: body.serviceReplicas };
  // A review environment's services have no counts of their own: refused before anything changes.
  if (body.serviceReplicas) checkServiceReplicas(undefined, row.mode, body.serviceReplicas);
  const counts = body.replicas !== undefined || body.serviceReplicas !== undefined ? applyReplicaChange(countsOf(row), change) : undefined;
  const rescaled = counts && !sameCounts(counts, countsOf(row)) ? counts : undefined;
  const scaled = `scaled from ${describeCounts(countsOf(row))} to ${describeCounts(rescaled ?? countsOf(row))}`;
  const ref = body.ref ?? row.ref;
  // The same slug path or URL may hold a new build (CI writes each push's there): read it again.
  const slugDigest = body.ref !== undefined && body.ref === row.ref ? await ops.slugDigest(body.ref) : null;
  const rebuilt = slugDigest !== null && slugDigest !== row.slug_digest;
  const newRef = (body.ref !== undefined && body.ref !== row.ref) || rebuilt || (body.command !== undefined && body.command !== row.command);
  // A failed environment (a deploy or recovery that could not restore its route) is deployed again.
  if ((newRef || row.state === 'failed') && ref !== null) {
    // One deploy: its new hosts start with the new settings and count.
    await ops.deploy(tenantId, name, ref, body.wait, { ...(body.command !== undefined ? { command: body.command } : {}), ...(settings ? { settings } : {}), ...(rescaled ? { counts: rescaled } : {}), ...(slugDigest !== null ? { slugDigest } : {}) });
    action = 'deployed';
    const content = rebuilt ? ` (new content: sha256 ${slugDigest.slice(0, 12)}, was ${row.slug_digest?.slice(0, 12) ?? 'not recorded'})` : '';
    changes.push(`deployed ${ref}${content}${row.state === 'sleeping' ? ' for its next wake' : ''}`);
    if (settings) changes.push(`settings ${settingsChange(row.settings, settings)}`);
    if (rescaled) changes.push(scaled);
  } else {
    // Checked against its stack before the settings change: nothing is done when a count is refused.
    if (rescaled && body.serviceReplicas) await ops.checkReplicas(row, body.serviceReplicas);
    if (settings) {
      const unset = Object.keys(row.settings).filter((key) => !Object.hasOwn(settings, key));
      await ops.changeSettings(tenantId, name, { set: settings, unset, wait: body.wait });
      action = 'configured';
      changes.push(`settings ${settingsChange(row.settings, settings)}`);
    }
    if (rescaled) {
      await ops.scale(tenantId, name, change, body.wait);
      if (action === 'unchanged') action = 'scaled';
      changes.push(scaled);
    }
  }
  const privacy = body.private !== undefined && body.private !== row.private ? body.private : undefined;
  if (body.ttl !== undefined || body.sleepAfter !== undefined || privacy !== undefined) {
    await ops.setOptions(tenantId, name, { ...(body.ttl !== undefined ? { ttl: body.ttl } : {}), ...(body.sleepAfter !== undefined ? { sleepAfter: body.sleepAfter } : {}), ...(privacy !== undefined ? { private: privacy } : {}) });
    if (body.ttl !== undefined) changes.push(`expires ${body.ttl} from now`);
    if (body.sleepAfter !== undefined) changes.push(`sleeps after ${body.sleepAfter} idle`);
    if (privacy !== undefined) changes.push(privacy ? 'private' : 'public');
  }
  return { action, changes, environment: await ops.get(tenantId, name) };
}

function sameSettings(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && b[key] === a[key]);
}

/** `+NEW ~CHANGED -GONE` by name (values may be secrets). */
function settingsChange(from: Record<string, string>, to: Record<string, string>): string {
  const parts = [
    ...Object.keys(to).filter((key) => !Object.hasOwn(from, key)).map((key) => `+${key}`),
    ...Object.keys(to).filter((key) => Object.hasOwn(from, key) && from[key] !== to[key]).map((key) => `~${key}`),
    ...Object.keys(from).filter((key) => !Object.hasOwn(to, key)).map((key) => `-${key}`),
  ];
  return parts.join(' ');
}
