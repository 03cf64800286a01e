/** Environments (src/environments): one row per name, with the hosts serving it and its route. */
import { sql, type Kysely } from 'kysely';
import { assertEnvTransition, type EnvironmentState } from '../environments/state.js';
import type { Database, EnvHostRecord, EnvironmentRow } from './schema.js';
import { environmentEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';

export interface NewEnvironment {
  tenantId: string;
  name: string;
  stack: string;
  pool: string;
  mode: 'review' | 'service';
  ref: string | null;
  command: string | null;
  /** The slug's digest when `ref` is a slug (slug-stack.ts). */
  slugDigest?: string | null;
  replicas: number;
  /** Service mode: services with a count of their own; default none. */
  serviceReplicas?: Record<string, number>;
  owner: string | null;
  settings: Record<string, string>;
  expiresAt: Date | null;
  /** Sleeps after this long without a request; default never. */
  sleepAfterMs?: number | null;
  /** Only requests with a token that may see it get through; default false. */
  private?: boolean;
}

/** What brought an environment to `ready` with new hosts (its timings say how long it took). */
export type EnvironmentOperation = 'create' | 'deploy' | 'wake' | 'heal' | 'scale';

export class EnvironmentsRepo {
  /** `events`: environments' changes of state, and their removal, are reported there. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly events: EventSink = NO_EVENTS,
  ) {}

  /** Inserts the environment as `creating`; false when the name is taken (the primary key decides). */
  async insert(env: NewEnvironment): Promise<boolean> {
    const row = await this.db
      .insertInto('environments')
      .values({
        tenant_id: env.tenantId,
        name: env.name,
        stack: env.stack,
        pool: env.pool,
        mode: env.mode,
        ref: env.ref,
        command: env.command,
        slug_digest: env.slugDigest ?? null,
        replicas: env.replicas,
        service_replicas: JSON.stringify(env.serviceReplicas ?? {}),
        owner: env.owner,
        settings: JSON.stringify(env.settings),
        state: 'creating',
        hosts: '[]',
        route: JSON.stringify(null),
        timings: '{}',
        expires_at: env.expiresAt,
        sleep_after_ms: env.sleepAfterMs ?? null,
        private: env.private ?? false,
      })
      .onConflict((oc) => oc.columns(['tenant_id', 'name']).doNothing())
      .returning('name')
      .executeTakeFirst();
    if (row) this.events.emit(environmentEvent({ tenant_id: env.tenantId, name: env.name, pool: env.pool, state: 'creating' }));
    return row !== undefined;
  }

  async get(tenantId: string, name: string): Promise<EnvironmentRow | undefined> {
    return this.db.selectFrom('environments').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
  }

  async list(tenantId: string): Promise<EnvironmentRow[]> {
    return this.db.selectFrom('environments').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
  }

  /** Every tenant's environments, oldest first (recovery after a restart); the same order every time (ties by name). */
  async all(): Promise<EnvironmentRow[]> {
    return this.db.selectFrom('environments').selectAll().orderBy('created_at').orderBy('tenant_id').orderBy('name').execute();
  }

  async expired(now: Date): Promise<EnvironmentRow[]> {
    return this.db.selectFrom('environments').selectAll().where('expires_at', '<=', now).where('state', 'in', ['ready', 'failed', 'sleeping']).execute();
  }

  /**
   * A new expiry and/or sleep-after (null: none / never), and whether it is private, for an
   * environment in one of `states`; undefined when it is in none of them (or is gone).
   */
  async setOptions(
    tenantId: string,
    name: string,
    options: { expiresAt?: Date | null; sleepAfterMs?: number | null; private?: boolean },
    states: readonly EnvironmentState[],
  ): Promise<EnvironmentRow | undefined> {
    return this.db
      .updateTable('environments')
      .set({
        updated_at: new Date(),
        ...(options.expiresAt !== undefined ? { expires_at: options.expiresAt } : {}),
        ...(options.sleepAfterMs !== undefined ? { sleep_after_ms: options.sleepAfterMs } : {}),
        ...(options.private !== undefined ? { private: options.private } : {}),
      })
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .where('state', 'in', [...states])
      .returningAll()
      .executeTakeFirst();
  }

  /**
   * Hosts of ready environments that are gone (lost, failed, terminated, or no longer in the store),
   * with what happened to each: what the healer (environments/heal.ts) replaces. One statement.
   */
  async lostHosts(): Promise<Array<{ tenantId: string; name: string; hostId: string; state: string | null; reason: string | null }>> {
    const { rows } = await sql<{ tenant_id: string; name: string; host_id: string; state: string | null; reason: string | null }>`
      select e.tenant_id, e.name, h.value->>'hostId' as host_id, hs.state, hs.state_reason as reason
      from environments e
      cross join lateral jsonb_array_elements(e.hosts) h
      left join hosts hs on hs.id = h.value->>'hostId'
      where e.state = 'ready' and (hs.id is null or hs.state not in ('booting', 'running'))
      order by e.tenant_id, e.name`.execute(this.db);
    return rows.map((r) => ({ tenantId: r.tenant_id, name: r.name, hostId: r.host_id, state: r.state, reason: r.reason }));
  }

  /** The slugs environments run (any tenant, any state): the slug store keeps these. */
  async slugDigests(): Promise<Set<string>> {
    const rows = await this.db.selectFrom('environments').select('slug_digest').distinct().where('slug_digest', 'is not', null).execute();
    return new Set(rows.flatMap((r) => (r.slug_digest === null ? [] : [r.slug_digest])));
  }

  /** Ready environments that sleep when idle (the sweep asks the router how long each has been). */
  async sleepers(): Promise<EnvironmentRow[]> {
    return this.db.selectFrom('environments').selectAll().where('state', '=', 'ready').where('sleep_after_ms', 'is not', null).execute();
  }

  /** A sleeping environment's ref, command or settings, for its next wake; undefined when it is not asleep. */
  async changeAsleep(tenantId: string, name: string, fields: { ref?: string | null; slugDigest?: string | null; command?: string | null; settings?: Record<string, string>; replicas?: number; serviceReplicas?: Record<string, number>; reason: string }): Promise<EnvironmentRow | undefined> {
    const row = await this.db
      .updateTable('environments')
      .set({
        state_reason: fields.reason,
        updated_at: new Date(),
        ...(fields.ref !== undefined ? { ref: fields.ref } : {}),
        ...(fields.slugDigest !== undefined ? { slug_digest: fields.slugDigest } : {}),
        ...(fields.command !== undefined ? { command: fields.command } : {}),
        ...(fields.settings !== undefined ? { settings: JSON.stringify(fields.settings) } : {}),
        ...(fields.replicas !== undefined ? { replicas: fields.replicas } : {}),
        ...(fields.serviceReplicas !== undefined ? { service_replicas: JSON.stringify(fields.serviceReplicas) } : {}),
      })
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .where('state', '=', 'sleeping')
      .returningAll()
      .executeTakeFirst();
    if (row) this.events.emit(environmentEvent(row, ['sleeping'], fields.reason));
    return row;
  }

  /** Records the hosts serving it now (every claim is recorded as it lands, so nothing is lost). */
  async setHosts(tenantId: string, name: string, hosts: EnvHostRecord[]): Promise<void> {
    await this.db.updateTable('environments').set({ hosts: JSON.stringify(hosts), updated_at: new Date() }).where('tenant_id', '=', tenantId).where('name', '=', name).execute();
  }

  /** Compare-and-set of the state (see environments/state.ts); undefined when it was elsewhere. */
  async transition(
    tenantId: string,
    name: string,
    from: readonly EnvironmentState[],
    to: EnvironmentState,
    fields: {
      reason?: string;
      route?: EnvironmentRow['route'];
      /** With `operation`: what it took, also kept in the environment's timing history. */
      timings?: Record<string, number>;
      operation?: EnvironmentOperation;
      ref?: string | null;
      slugDigest?: string | null;
      command?: string | null;
      replicas?: number;
      serviceReplicas?: Record<string, number>;
      hosts?: EnvHostRecord[];
      settings?: Record<string, string>;
    } = {},
  ): Promise<EnvironmentRow | undefined> {
    for (const state of from) assertEnvTransition(name, state, to);
    const update = this.db
      .updateTable('environments')
      .set({
        state: to,
        state_reason: fields.reason ?? '',
        updated_at: new Date(),
        ...(fields.route !== undefined ? { route: JSON.stringify(fields.route) } : {}),
        ...(fields.timings !== undefined ? { timings: JSON.stringify(fields.timings) } : {}),
        ...(fields.ref !== undefined ? { ref: fields.ref } : {}),
        ...(fields.slugDigest !== undefined ? { slug_digest: fields.slugDigest } : {}),
        ...(fields.command !== undefined ? { command: fields.command } : {}),
        ...(fields.replicas !== undefined ? { replicas: fields.replicas } : {}),
        ...(fields.serviceReplicas !== undefined ? { service_replicas: JSON.stringify(fields.serviceReplicas) } : {}),
        ...(fields.hosts !== undefined ? { hosts: JSON.stringify(fields.hosts) } : {}),
        ...(fields.settings !== undefined ? { settings: JSON.stringify(fields.settings) } : {}),
        ...(fields.operation !== undefined ? { operation: fields.operation } : {}),
      })
      .where('tenant_id', '=', tenantId)
      .where('name', '=', name)
      .where('state', 'in', [...from])
      .returningAll();
    // A create, deploy, wake or heal that finished is also kept in its history, in the same statement.
    const finished = to === 'ready' && fields.timings !== undefined ? fields.timings : undefined;
    const operation = fields.operation ?? (fields.route?.generation === 1 ? 'create' : 'deploy');
    const row = finished
      ? await this.db
          .with('updated', () => update)
          .with('logged', (db) =>
            db
              .insertInto('environment_timings')
              .columns(['tenant_id', 'environment', 'pool', 'operation', 'timings'])
              .expression((eb) => eb.selectFrom('updated').select((s) => ['tenant_id', 'name', 'pool', s.val(operation).as('operation'), 'timings'])),
          )
          .selectFrom('updated')
          .selectAll()
          .executeTakeFirst()
      : await update.executeTakeFirst();
    if (row) this.events.emit(environmentEvent(row, from, fields.reason));
    return row;
  }

  async delete(tenantId: string, name: string): Promise<void> {
    const row = await this.db.deleteFrom('environments').where('tenant_id', '=', tenantId).where('name', '=', name).returning(['state', 'pool']).executeTakeFirst();
    if (row) this.events.emit(environmentEvent({ tenant_id: tenantId, name, pool: row.pool, state: 'removed' }, [row.state]));
  }

}
