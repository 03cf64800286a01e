/** Stacks as `berth apply` sent them: the spec and its config layers, one row per name. */
import { sql, type Kysely } from 'kysely';
import { canonicalJson } from '../images/digests.js';
import type { Database, StackRow } from './schema.js';

export class StacksRepo {
  constructor(private readonly db: Kysely<Database>) {}

  /** Creates or replaces a stack; says which, or that nothing changed. */
  async put(tenantId: string, name: string, spec: Record<string, unknown>, config: Record<string, unknown>): Promise<'created' | 'updated' | 'unchanged'> {
    const before = await this.get(tenantId, name);
    const specJson = JSON.stringify(spec);
    const configJson = JSON.stringify(config);
    // jsonb keeps its own key order: compare canonical forms.
    if (before && canonicalJson(before.spec) === canonicalJson(spec) && canonicalJson(before.config) === canonicalJson(config)) return 'unchanged';
    await this.db
      .insertInto('stacks')
      .values({ tenant_id: tenantId, name, spec: specJson, config: configJson })
      .onConflict((oc) => oc.columns(['tenant_id', 'name']).doUpdateSet({ spec: specJson, config: configJson, updated_at: sql`now()` }))
      .execute();
    return before ? 'updated' : 'created';
  }

  async get(tenantId: string, name: string): Promise<StackRow | undefined> {
    return this.db.selectFrom('stacks').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).executeTakeFirst();
  }

  async list(tenantId: string): Promise<StackRow[]> {
    return this.db.selectFrom('stacks').selectAll().where('tenant_id', '=', tenantId).orderBy('name').execute();
  }
}
