/**
 * API tokens: who a bearer token is (its tenant, name and role), and making, listing and revoking
 * them. Secrets are shown once, at creation, and stored only as hashes.
 *
 * Who a token is gets cached, since every request asks: a revocation through this server takes
 * effect at once, one through another server sharing the database within `recheckMs`, and an
 * expiry at its second (the cached expiry is checked on every request).
 */
import { BerthError } from '../core/errors.js';
import { hashSecret, newId, newSecret } from '../core/ids.js';
import type { NewToken, TokenRow, TokensRepo } from '../store/tokens-repo.js';
import { isRole, roleAllows, type Role } from './roles.js';
import { validateScope } from './scope.js';

/** Who is calling: the token that authenticated a request. */
export interface Principal {
  tenantId: string;
  tokenId: string;
  tokenName: string;
  role: Role;
  /** The groups it may act in (scope.ts); absent: the whole tenant. */
  scope?: string[];
}

export interface TokenView {
  id: string;
  name: string;
  role: Role;
  /** The groups it may act in (names, or prefixes ending in *); null: the whole tenant. */
  scope: string[] | null;
  /** `data-dir`: a server's own, made at its first start for the local CLI; `api`: made by `berth token create`. */
  origin: string;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

export interface NewTokenRequest {
  name: string;
  role: Role;
  /** Seconds from now; none: the token lives until revoked. */
  expiresInSeconds?: number | undefined;
  /** Group names or prefixes (`alice-*`) it may act in; none: the whole tenant. Not for admins. */
  scope?: string[] | undefined;
}

/** Token names: a person's or a job's handle (an email address fits), as `berth token ls` shows it. */
export const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/;

interface Cached {
  principal: Principal;
  expiresAt: number | undefined;
  checkedAt: number;
}

export interface TokenServiceOptions {
  /** How long who a token is may be taken from the cache (ms); default 5 s. */
  recheckMs?: number;
  /** A token's last use is written at most this often (ms); default 60 s. */
  touchEveryMs?: number;
  now?: () => number;
  log?: (line: string) => void;
}

export class TokenService {
  private readonly cache = new Map<string, Cached>();
  /** Revocations through this service so far: a token read under way during one is not cached. */
  private revocations = 0;
  private readonly touched = new Map<string, number>();
  private readonly recheckMs: number;
  private readonly touchEveryMs: number;
  private readonly now: () => number;

  constructor(
    private readonly repo: TokensRepo,
    private readonly opts: TokenServiceOptions = {},
  ) {
    this.recheckMs = opts.recheckMs ?? 5000;
    this.touchEveryMs = opts.touchEveryMs ?? 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Who a bearer token is; an unknown, revoked or expired one is refused with what to do. */
  async authenticate(secret: string): Promise<Principal> {
    const hash = hashSecret(secret);
    const now = this.now();
    let cached = this.cache.get(hash);
    if (!cached || now - cached.checkedAt > this.recheckMs) {
      const revocations = this.revocations;
      const row = await this.repo.byHash(hash);
      if (!row) throw new BerthError('unauthorized', 'invalid API token', "Use the token from the server's data dir (file `token`), one from `berth token create`, or set BERTH_TOKEN.");
      if (row.revoked_at) {
        this.forget(row.id);
        throw new BerthError('unauthorized', `API token "${row.name}" was revoked at ${row.revoked_at.toISOString()}`, 'Ask an admin of this server for a new token (`berth token create NAME --role ROLE`).');
      }
      cached = { principal: principalOf(row), expiresAt: row.expires_at?.getTime(), checkedAt: now };
      // A revocation while it was read: the row may be from before it, and must not be cached after it.
      if (this.revocations === revocations) this.cache.set(hash, cached);
    }
    if (cached.expiresAt !== undefined && cached.expiresAt <= now) {
      throw new BerthError('unauthorized', `API token "${cached.principal.tokenName}" expired at ${new Date(cached.expiresAt).toISOString()}`, 'Ask an admin of this server for a new token (`berth token create NAME --role ROLE --expires 30d`).');
    }
    this.touch(cached.principal.tokenId, now);
    return cached.principal;
  }

  /**
   * Who token `tokenId` is now, if it is still live (not revoked, not expired): for a grant made
   * in its name (an environment's access link). Cached as authenticate's answers are.
   */
  async live(tenantId: string, tokenId: string): Promise<Principal | undefined> {
    const now = this.now();
    const key = `id:${tenantId}:${tokenId}`;
    let cached = this.cache.get(key);
    if (!cached || now - cached.checkedAt > this.recheckMs) {
      const revocations = this.revocations;
      const row = await this.repo.byId(tenantId, tokenId);
      if (!row || row.revoked_at) {
        this.cache.delete(key);
        return undefined;
      }
      cached = { principal: principalOf(row), expiresAt: row.expires_at?.getTime(), checkedAt: now };
      if (this.revocations === revocations) this.cache.set(key, cached);
    }
    return cached.expiresAt !== undefined && cached.expiresAt <= now ? undefined : cached.principal;
  }

  /** Makes a token; its secret is in the answer and nowhere else. */
  async create(tenantId: string, req: NewTokenRequest): Promise<{ token: string; view: TokenView }> {
    if (!TOKEN_NAME.test(req.name)) {
      throw new BerthError('validation_failed', `token name ${JSON.stringify(req.name)} is not valid`, 'Use 1-64 letters, digits and . _ @ + - (starting with a letter or digit), e.g. ci-deploy or alice@example.com.');
    }
    if (!isRole(req.role)) throw new BerthError('validation_failed', `role ${JSON.stringify(req.role)} is not one of read, use, admin`, 'Give --role read, use or admin.');
    if (req.scope) {
      validateScope(req.scope);
      // An admin shapes the whole platform (pools, images, tokens): a scope would not hold it.
      if (req.role === 'admin') throw new BerthError('validation_failed', 'an admin token cannot have a scope', 'Give a scoped token role use or read.');
    }
    const live = await this.repo.list(tenantId);
    if (live.some((t) => t.name === req.name)) {
      throw new BerthError('token_exists', `a token named "${req.name}" already exists`, `Pick another name, or revoke it first: berth token revoke ${req.name}`);
    }
    const token = newSecret();
    const id = newId('tk');
    const expiresAt = req.expiresInSeconds !== undefined ? new Date(this.now() + req.expiresInSeconds * 1000) : undefined;
    const row = await this.repo.add({ id, tenantId, name: req.name, tokenHash: hashSecret(token), role: req.role, expiresAt, scope: req.scope, origin: 'api' });
    if (!row) throw new BerthError('internal', `token ${id} was not stored`, 'See the server log.');
    return { token, view: toTokenView(row) };
  }

  async list(tenantId: string, opts: { withRevoked?: boolean } = {}): Promise<TokenView[]> {
    return (await this.repo.list(tenantId, opts)).map(toTokenView);
  }

  /**
   * Revokes a token by id or by name; it stops working at once on this server. A data dir's own
   * token is refused: the local CLI and the server's own tools get in with it.
   */
  async revoke(tenantId: string, idOrName: string): Promise<TokenView> {
    const live = await this.repo.list(tenantId);
    const byId = live.find((t) => t.id === idOrName);
    const byName = live.filter((t) => t.name === idOrName);
    const target = byId ?? (byName.length === 1 ? byName[0] : undefined);
    if (!target && byName.length > 1) {
      throw new BerthError('conflict', `${byName.length} tokens are named "${idOrName}": ${byName.map((t) => t.id).join(', ')}`, 'Revoke one by its id (`berth token ls`).');
    }
    if (!target) throw new BerthError('token_not_found', `no live token has the id or name "${idOrName}"`, 'List them with `berth token ls`.');
    if (target.origin === 'data-dir') {
      throw new BerthError('invalid_state', `token "${target.name}" (${target.id}) is a server's own, from its data dir`, "It is how the local CLI gets in; it cannot be revoked. Give others tokens of their own (`berth token create`) and revoke those.");
    }
    const revoked = await this.repo.revoke(tenantId, target.id);
    if (!revoked) throw new BerthError('token_not_found', `token ${target.id} was revoked meanwhile`, 'List them with `berth token ls`.');
    this.forget(target.id);
    return toTokenView(revoked);
  }

  /**
   * Puts a new token in place of a data dir's own: the new one is stored, `write` puts its secret in
   * the data dir, and only then is the old one revoked, so that a failure on the way leaves the
   * old one working (and the new one revoked). Returns the new token's view.
   */
  async rotateDataDirToken(old: NewToken, next: NewToken, nextSecret: string, write: (secret: string) => void): Promise<TokenView> {
    const row = await this.repo.add(next);
    if (!row) throw new BerthError('internal', `token ${next.id} was not stored`, 'See the server log.');
    try {
      write(nextSecret);
    } catch (err) {
      // Nobody has its secret: it must not stay behind as a second token of the data dir.
      await this.repo.revoke(next.tenantId, next.id);
      throw err;
    }
    await this.repo.revoke(old.tenantId, old.id);
    this.forget(old.id);
    return toTokenView(row);
  }

  /** Writes a token's last use, at most once per touchEveryMs, off the request's path. */
  private touch(tokenId: string, now: number): void {
    const last = this.touched.get(tokenId);
    if (last !== undefined && now - last < this.touchEveryMs) return;
    this.touched.set(tokenId, now);
    this.repo.touch(tokenId, new Date(now)).catch((err: unknown) => this.opts.log?.(`token ${tokenId}: last use not recorded: ${err instanceof Error ? err.message : String(err)}`));
  }

  private forget(tokenId: string): void {
    this.revocations++;
    for (const [hash, cached] of this.cache) if (cached.principal.tokenId === tokenId) this.cache.delete(hash);
  }
}

/** Refuses a principal whose role is below `needed`, saying what it tried and what would do. */
export function requireRole(principal: Principal, needed: Role, what: string): void {
  if (roleAllows(principal.role, needed)) return;
  throw new BerthError(
    'forbidden',
    `token "${principal.tokenName}" has role ${principal.role}, and ${what} needs role ${needed}`,
    `Use a token with role ${needed} or above; an admin makes one with \`berth token create NAME --role ${needed}\`.`,
  );
}

function principalOf(row: TokenRow): Principal {
  return { tenantId: row.tenant_id, tokenId: row.id, tokenName: row.name, role: isRole(row.role) ? row.role : 'read', ...(row.scope ? { scope: row.scope } : {}) };
}

export function toTokenView(row: TokenRow): TokenView {
  return {
    id: row.id,
    name: row.name,
    role: isRole(row.role) ? row.role : 'read',
    scope: row.scope,
    origin: row.origin,
    createdAt: row.created_at.toISOString(),
    expiresAt: row.expires_at?.toISOString() ?? null,
    lastUsedAt: row.last_used_at?.toISOString() ?? null,
    revokedAt: row.revoked_at?.toISOString() ?? null,
  };
}
