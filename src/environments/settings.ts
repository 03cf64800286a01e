/**
 * Changing a live environment's settings (`berth env set NAME KEY=VALUE KEY-`), as `heroku
 * config:set` and `fly secrets set` do, without a new create: the values become host overrides
 * (`berth.env.KEY` tags) on each of its hosts in turn, whose services take them by reload where the
 * stack says they can and by restart otherwise; the next host starts only once this one's services
 * are ready again and the router has it back in rotation, so replicas keep serving. It completes or is put back: when a host's services do not
 * come back ready, every host changed so far gets its old values again and the environment keeps
 * running as it was. A deploy after it runs with the new settings. The environment is
 * `configuring` meanwhile (no deploy or removal can start); a server restart mid-change puts every
 * host back to the settings last recorded.
 */
import { z } from 'zod';
import { BerthError, errorMessage } from '../core/errors.js';
import { ENV_NAME_PATTERN } from '../protocol/messages.js';
import { ENV_OVERRIDE_TAG_PREFIX } from '../stacks/modes.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvironmentRow, HostRow } from '../store/schema.js';
import { rollOver, type RollingDeps } from './rolling.js';

export const changeSettingsBody = z
  .object({
    set: z
      .record(z.string().regex(ENV_NAME_PATTERN, 'an env name is letters, digits and underscores, not starting with a digit'), z.string().max(4096))
      .default({})
      .describe('Values to set for every service, over the stack\'s layers'),
    unset: z.array(z.string().regex(ENV_NAME_PATTERN, 'an env name is letters, digits and underscores, not starting with a digit')).max(200).default([]).describe('Settings to remove'),
    wait: z.number().positive().max(600).default(120).describe("Seconds each host's services get to be ready with the new values"),
  })
  .strict();

export type SettingsChange = z.output<typeof changeSettingsBody>;

export interface SettingsDeps extends RollingDeps {
  envs: Pick<EnvironmentsRepo, 'transition'>;
  hosts: { get(tenantId: string, id: string): Promise<HostRow | undefined> };
  changeHostTags(tenantId: string, hostId: string, change: { set: Record<string, string>; remove: string[] }): Promise<unknown>;
  log: (line: string) => void;
}

/** Variables berth sets on an environment's hosts itself; `env deploy` changes the ref. */
function reserved(key: string): boolean {
  return key === 'BERTH_ENVIRONMENT' || key === 'BERTH_REF' || /^BERTH_SERVICE_.+_ADDR$/.test(key);
}

/** The settings after `change`; throws (changing nothing) for a key both set and unset, or one berth owns. */
export function nextSettings(name: string, current: Record<string, string>, change: Pick<SettingsChange, 'set' | 'unset'>): Record<string, string> {
  const both = change.unset.find((key) => Object.hasOwn(change.set, key));
  if (both !== undefined) throw new BerthError('validation_failed', `${both} is both set and unset`, 'Set it or unset it, not both.');
  const owned = [...Object.keys(change.set), ...change.unset].find(reserved);
  if (owned !== undefined) {
    throw new BerthError('validation_failed', `environment ${name}: berth sets ${owned} itself`, owned === 'BERTH_REF' ? `Run another ref with berth env deploy ${name} --ref REF.` : 'Pick another name.');
  }
  const next = { ...current, ...change.set };
  for (const key of change.unset) delete next[key];
  return next;
}

/** The host tags that turn settings `from` into `to`. */
export function tagChange(from: Record<string, string>, to: Record<string, string>): { set: Record<string, string>; remove: string[] } {
  const set = Object.fromEntries(Object.entries(to).filter(([key, value]) => from[key] !== value).map(([key, value]) => [`${ENV_OVERRIDE_TAG_PREFIX}${key}`, value]));
  const remove = Object.keys(from).filter((key) => !Object.hasOwn(to, key)).map((key) => `${ENV_OVERRIDE_TAG_PREFIX}${key}`);
  return { set, remove };
}

/** Applies `change` to a ready environment's hosts one at a time; see the top of the file. */
export async function changeSettings(deps: SettingsDeps, row: EnvironmentRow, change: SettingsChange): Promise<EnvironmentRow> {
  const { tenant_id: tenantId, name } = row;
  const next = nextSettings(name, row.settings, change);
  const forward = tagChange(row.settings, next);
  if (Object.keys(forward.set).length === 0 && forward.remove.length === 0) return row;
  const keys = [...Object.keys(change.set), ...change.unset.filter((key) => Object.hasOwn(row.settings, key))];
  const started = await deps.envs.transition(tenantId, name, ['ready'], 'configuring', { reason: `changing ${keys.join(', ')}` });
  if (!started) {
    throw new BerthError('conflict', `environment ${name} is ${row.state}`, row.state === 'failed' ? 'Deploy it again (berth env deploy) or remove it.' : 'Wait until it is ready, then change its settings.');
  }
  const changed: string[] = [];
  try {
    const hostIds = started.hosts.map((h) => h.hostId);
    await rollOver(deps, { tenantId, name }, hostIds, async (hostId) => void (await deps.changeHostTags(tenantId, hostId, forward)), { deadline: Date.now() + change.wait * 1000, touched: changed });
  } catch (err) {
    // Every host changed so far gets its old values back, so the environment runs as it did.
    await putBack(deps, started, changed, tagChange(next, row.settings), change.wait * 1000);
    await deps.envs.transition(tenantId, name, ['configuring'], 'ready', { reason: `settings change failed and was undone: ${errorMessage(err)}` });
    throw err;
  }
  const done = await deps.envs.transition(tenantId, name, ['configuring'], 'ready', { settings: next, reason: `changed ${keys.join(', ')}` });
  if (!done) throw new BerthError('conflict', `environment ${name} changed while its settings did`, 'Look at it (berth env show), then try again.');
  return done;
}

/**
 * After a restart, an environment left `configuring`: each host gets the recorded settings again
 * (its overrides that are not among them are removed), and the environment is ready as it was.
 */
export async function settleSettings(deps: SettingsDeps, row: EnvironmentRow): Promise<EnvironmentRow | undefined> {
  const { tenant_id: tenantId, name } = row;
  await Promise.all(
    row.hosts.map(async ({ hostId }) => {
      const host = await deps.hosts.get(tenantId, hostId);
      if (!host || host.state === 'terminated') return;
      const onHost = Object.fromEntries(
        Object.entries(host.tags)
          .filter(([tag]) => tag.startsWith(ENV_OVERRIDE_TAG_PREFIX) && !reserved(tag.slice(ENV_OVERRIDE_TAG_PREFIX.length)))
          .map(([tag, value]) => [tag.slice(ENV_OVERRIDE_TAG_PREFIX.length), value]),
      );
      const back = tagChange(onHost, row.settings);
      if (Object.keys(back.set).length > 0 || back.remove.length > 0) await deps.changeHostTags(tenantId, hostId, back);
    }),
  );
  return deps.envs.transition(tenantId, name, ['configuring'], 'ready', { reason: 'a settings change was cut short by a server restart and undone' });
}

async function putBack(deps: SettingsDeps, row: EnvironmentRow, hostIds: readonly string[], back: { set: Record<string, string>; remove: string[] }, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (const hostId of hostIds) {
    try {
      await deps.changeHostTags(row.tenant_id, hostId, back);
      await deps.awaitServicesReady(row.tenant_id, hostId, Math.max(0, deadline - Date.now()), `environment ${row.name}: host ${hostId}`);
    } catch (err) {
      deps.log(`environment ${row.name}: putting host ${hostId}'s settings back: ${errorMessage(err)}`);
    }
  }
}
