/** API tokens, stored as hashes; each belongs to a tenant so per-tenant tokens need no redesign. */
import type { Kysely, Selectable } from 'kysely';
import type { ApiTokensTable, Database } from './schema.js';

export type TokenRow = Selectable<ApiTokensTable>;

export interface NewToken {
  id: string;
  tenantId: string;
  name: string;
  tokenHash: string;
  role: string;
  expiresAt?: Date | undefined;
  /** Group names or prefixes the token may act in; absent: the whole tenant. */
  scope?: string[] | undefined;
  origin: 'data-dir' | 'api';
}

export class TokensRepo {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Adds a token and returns its row; one with the same id or hash (a data dir's, added at every
   * start) is left as it is, and undefined returned.
   */
  async add(token: NewToken): Promise<TokenRow | undefined> {
    return this.db
      .insertInto('api_tokens')
      .values({
        id: token.id,
        tenant_id: token.tenantId,
        name: token.name,
        token_hash: token.tokenHash,
        role: token.role,
        expires_at: token.expiresAt ?? null,
        scope: token.scope ? JSON.stringify(token.scope) : null,
        origin: token.origin,
        revoked_at: null,
      })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
  }

  /** The token with this hash, revoked or expired or not: the caller says which it is. */
  async byHash(tokenHash: string): Promise<TokenRow | undefined> {
    return this.db.selectFrom('api_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
  }

  async byId(tenantId: string, id: string): Promise<TokenRow | undefined> {
    return this.db.selectFrom('api_tokens').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  }

  /** A tenant's live tokens (revoked ones too with `withRevoked`), oldest first. */
  async list(tenantId: string, opts: { withRevoked?: boolean } = {}): Promise<TokenRow[]> {
    let query = this.db.selectFrom('api_tokens').selectAll().where('tenant_id', '=', tenantId);
    if (!opts.withRevoked) query = query.where('revoked_at', 'is', null);
    return query.orderBy('created_at').orderBy('id').execute();
  }

  /** Revokes a live token; returns it as it now is, or undefined when there was no live one. */
  async revoke(tenantId: string, id: string): Promise<TokenRow | undefined> {
    return this.db
      .updateTable('api_tokens')
      .set({ revoked_at: new Date() })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
  }

  async touch(id: string, at: Date): Promise<void> {
    await this.db.updateTable('api_tokens').set({ last_used_at: at }).where('id', '=', id).execute();
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
