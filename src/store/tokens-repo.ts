/** API tokens, stored as hashes; each belongs to a tenant so per-tenant tokens need no redesign. */
import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

export class TokensRepo {
  constructor(private readonly db: Kysely<Database>) {}

  async add(id: string, tenantId: string, name: string, tokenHash: string): Promise<void> {
    await this.db.insertInto('api_tokens').values({ id, tenant_id: tenantId, name, token_hash: tokenHash, revoked_at: null }).onConflict((oc) => oc.doNothing()).execute();
  }

  /** Returns the tenant the token belongs to, or undefined when unknown or revoked. */
  async tenantFor(tokenHash: string): Promise<string | undefined> {
    const row = await this.db.selectFrom('api_tokens').select('tenant_id').where('token_hash', '=', tokenHash).where('revoked_at', 'is', null).executeTakeFirst();
    return row?.tenant_id;
  }
}

/** Each tenant's config hash key (see migration 0006), read once: it never changes. */
export class ConfigHashKeys {
  private readonly keys = new Map<string, string>();

  constructor(private readonly db: Kysely<Database>) {}

  async of(tenantId: string): Promise<string> {
    const known = this.keys.get(tenantId);
    if (known !== undefined) return known;
    const row = await this.db.selectFrom('tenants').select('config_hash_key').where('id', '=', tenantId).executeTakeFirst();
    if (!row) throw new Error(`tenant ${tenantId} does not exist`);
    this.keys.set(tenantId, row.config_hash_key);
    return row.config_hash_key;
  }
}
