/** Host rows: every query is scoped to a tenant. */
import { sql, type Kysely } from 'kysely';
import { assertTransition, type HostState } from '../core/host-state.js';
import type { Database, HostRow } from './schema.js';

export interface NewHost {
  id: string;
  tenantId: string;
  driver: string;
  image: string;
  hostname: string;
  tags: Record<string, string>;
  resources: Record<string, number>;
  agentTokenHash: string;
}

export class HostsRepo {
  constructor(private readonly db: Kysely<Database>) {}

  async insert(host: NewHost): Promise<HostRow> {
    return this.db
      .insertInto('hosts')
      .values({
        id: host.id,
        tenant_id: host.tenantId,
        driver: host.driver,
        state: 'launching',
        image: host.image,
        hostname: host.hostname,
        tags: JSON.stringify(host.tags),
        resources: JSON.stringify(host.resources),
        driver_data: '{}',
        agent_token_hash: host.agentTokenHash,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  }

  async get(tenantId: string, id: string): Promise<HostRow | undefined> {
    return this.db.selectFrom('hosts').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  }

  /** For agent enrolment, which knows only the host id (the token proves the rest). */
  async getAnyTenant(id: string): Promise<HostRow | undefined> {
    return this.db.selectFrom('hosts').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async list(tenantId: string, opts: { states?: readonly HostState[]; tags?: Record<string, string> } = {}): Promise<HostRow[]> {
    let q = this.db.selectFrom('hosts').selectAll().where('tenant_id', '=', tenantId);
    if (opts.states) q = q.where('state', 'in', [...opts.states]);
    if (opts.tags && Object.keys(opts.tags).length > 0) q = q.where(sql<boolean>`tags @> ${JSON.stringify(opts.tags)}::jsonb`);
    return q.orderBy('created_at').orderBy('id').execute();
  }

  async listInStates(states: readonly HostState[]): Promise<HostRow[]> {
    return this.db.selectFrom('hosts').selectAll().where('state', 'in', [...states]).execute();
  }

  /**
   * Moves a host to `to` only if it is still in one of `from` (compare-and-set), so two actors racing
   * on one host cannot both win. Returns the updated row, or undefined when the host was elsewhere.
   */
  async transition(
    id: string,
    from: readonly HostState[],
    to: HostState,
    fields: { reason?: string; ip?: string; driverData?: Record<string, unknown>; readyAt?: Date; terminatedAt?: Date } = {},
  ): Promise<HostRow | undefined> {
    for (const state of from) assertTransition(id, state, to);
    return this.db
      .updateTable('hosts')
      .set({
        state: to,
        updated_at: new Date(),
        ...(fields.reason !== undefined ? { state_reason: fields.reason } : {}),
        ...(fields.ip !== undefined ? { ip: fields.ip } : {}),
        ...(fields.driverData !== undefined ? { driver_data: JSON.stringify(fields.driverData) } : {}),
        ...(fields.readyAt !== undefined ? { ready_at: fields.readyAt } : {}),
        ...(fields.terminatedAt !== undefined ? { terminated_at: fields.terminatedAt } : {}),
      })
      .where('id', '=', id)
      .where('state', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
  }

  async setLaunched(id: string, ip: string, driverData: Record<string, unknown>): Promise<void> {
    await this.db.updateTable('hosts').set({ ip, driver_data: JSON.stringify(driverData), updated_at: new Date() }).where('id', '=', id).execute();
  }

  async setAgent(id: string, connected: boolean, at: Date, version?: string): Promise<void> {
    await this.db
      .updateTable('hosts')
      .set({ agent_connected: connected, agent_last_seen: at, ...(version ? { agent_version: version } : {}) })
      .where('id', '=', id)
      .execute();
  }

  /** At server start nobody is connected yet, whatever the store says. */
  async markAllDisconnected(): Promise<void> {
    await this.db.updateTable('hosts').set({ agent_connected: false }).where('agent_connected', '=', true).execute();
  }
}
