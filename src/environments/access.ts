/**
 * Private environments: a review app of unreleased code, behind a router others can reach, answers
 * only those whose berth token may look at it — a token of any role whose scope covers the
 * environment (or an unscoped one of its tenant). Anyone else gets a 401 page that says how to get
 * in; nothing reaches the app, and a sleeping one is not woken.
 *
 * Two ways in, and neither hands the app a berth token (the router takes both out of every request it
 * sends on, private or not):
 * - programs (CI smoke tests, curl) send the token itself in `X-Berth-Token`;
 * - people open the link `berth env open NAME` prints: `/.berth/access?grant=…` on the
 *   environment's own address, a grant signed by the server in the name of the token that asked,
 *   good for 5 minutes, which the router exchanges for an HttpOnly cookie good for 12 hours and a
 *   redirect to `/`. The cookie is only as good as that token: revoked, expired or narrowed to
 *   other groups, it lets nobody in any more.
 * Grants are HMAC-SHA256 signed with a key derived from the tenant's secret key, so every server
 * sharing the store honours them.
 */
import type { TLSSocket } from 'node:tls';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { BerthError } from '../core/errors.js';
import { ACCESS_PATH, CREDENTIAL_COOKIE, CREDENTIAL_HEADER, credentialCookie, type RouteGuard } from '../router/route-guard.js';
import type { RouterErrorPage } from '../router/error-pages.js';
import type { Principal } from '../tokens/token-service.js';
import { inScope } from '../tokens/scope.js';

export { ACCESS_PATH, CREDENTIAL_COOKIE as ACCESS_COOKIE, CREDENTIAL_HEADER as ACCESS_HEADER };

const LINK_TTL_MS = 5 * 60_000;
const SESSION_TTL_MS = 12 * 3600_000;

interface Grant {
  /** link: in an address, exchanged once for a session; session: in the cookie. */
  kind: 'link' | 'session';
  tenant: string;
  env: string;
  token: string;
  exp: number;
}

export interface AccessDeps {
  tokens: {
    authenticate(secret: string): Promise<Principal>;
    /** Who the token is now, if still live. */
    live(tenantId: string, tokenId: string): Promise<Principal | undefined>;
  };
  /** The tenant's secret key (the store keeps one per tenant); access keys are derived from it. */
  tenantKey(tenantId: string): Promise<string>;
  now?: () => number;
}

export class EnvironmentAccess {
  private readonly now: () => number;

  constructor(private readonly deps: AccessDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** A link into private environment `env` at `url` for `principal` (who must be let in). */
  async link(principal: Principal, env: string, url: string): Promise<{ url: string; expiresAt: string }> {
    if (!allowed(principal, principal.tenantId, env)) {
      throw new BerthError('forbidden', `token "${principal.tokenName}" may not look at environment ${env}`, 'Use a token whose scope covers it.');
    }
    const exp = this.now() + LINK_TTL_MS;
    const grant = await this.sign({ kind: 'link', tenant: principal.tenantId, env, token: principal.tokenId, exp });
    return { url: `${url.replace(/\/$/, '')}${ACCESS_PATH}?grant=${grant}`, expiresAt: new Date(exp).toISOString() };
  }

  /** The router's guard of private environment `env` of tenant `tenantId`. */
  guard(tenantId: string, env: string): RouteGuard {
    return {
      check: (req) => this.check(req, tenantId, env),
      login: (req) => this.login(req, tenantId, env),
    };
  }

  private async check(req: IncomingMessage, tenantId: string, env: string): Promise<RouterErrorPage | undefined> {
    const header = req.headers[CREDENTIAL_HEADER];
    const cookie = credentialCookie(req);
    let principal: Principal | undefined;
    if (typeof header === 'string' && header !== '') {
      try {
        principal = await this.deps.tokens.authenticate(header.trim());
      } catch (err) {
        return denied(env, 401, err instanceof Error ? err.message : String(err));
      }
    } else if (cookie !== undefined) {
      const grant = await this.verify(cookie, tenantId, env, 'session');
      principal = grant ? await this.deps.tokens.live(tenantId, grant.token) : undefined;
      if (!principal) return denied(env, 401, 'its access cookie is no longer good (expired, or its token was revoked)');
    } else {
      return denied(env, 401, 'this request carries no berth token');
    }
    return allowed(principal, tenantId, env) ? undefined : denied(env, 403, `token "${principal.tokenName}" may not look at it`);
  }

  private async login(req: IncomingMessage, tenantId: string, env: string): Promise<{ setCookie: string; location: string } | RouterErrorPage> {
    const grant = new URL(req.url ?? '/', 'http://x').searchParams.get('grant') ?? '';
    const link = await this.verify(grant, tenantId, env, 'link');
    const principal = link ? await this.deps.tokens.live(tenantId, link.token) : undefined;
    if (!principal) return denied(env, 401, 'this access link is not good (expired, altered, for another environment, or its token was revoked)');
    if (!allowed(principal, tenantId, env)) return denied(env, 403, `token "${principal.tokenName}" may not look at it`);
    const session = await this.sign({ kind: 'session', tenant: tenantId, env, token: principal.tokenId, exp: this.now() + SESSION_TTL_MS });
    // Over HTTPS the browser sends it back over HTTPS only.
    const secure = (req.socket as Partial<TLSSocket>).encrypted === true ? '; Secure' : '';
    return { setCookie: `${CREDENTIAL_COOKIE}=${session}; HttpOnly; SameSite=Lax; Path=/; Max-Age=${SESSION_TTL_MS / 1000}${secure}`, location: '/' };
  }

  private async sign(grant: Grant): Promise<string> {
    const body = Buffer.from(JSON.stringify(grant)).toString('base64url');
    return `${body}.${await this.mac(grant.tenant, body)}`;
  }

  private async verify(value: string, tenantId: string, env: string, kind: Grant['kind']): Promise<Grant | undefined> {
    const [body, mac, ...rest] = value.split('.');
    if (!body || !mac || rest.length > 0) return undefined;
    const expected = Buffer.from(await this.mac(tenantId, body));
    const given = Buffer.from(mac);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
    let grant: Partial<Grant>;
    try {
      grant = JSON.parse(Buffer.from(body, 'base64url').toString()) as Partial<Grant>;
    } catch {
      return undefined;
    }
    const ok = grant.kind === kind && grant.tenant === tenantId && grant.env === env && typeof grant.token === 'string' && typeof grant.exp === 'number' && grant.exp > this.now();
    return ok ? (grant as Grant) : undefined;
  }

  private async mac(tenantId: string, body: string): Promise<string> {
    const key = createHmac('sha256', await this.deps.tenantKey(tenantId)).update('berth environment access v1').digest();
    return createHmac('sha256', key).update(body).digest('base64url');
  }
}

/** Any role may look; a scoped token only at environments its scope covers. */
function allowed(principal: Principal, tenantId: string, env: string): boolean {
  return principal.tenantId === tenantId && (!principal.scope || inScope(principal.scope, env));
}

function denied(env: string, status: 401 | 403, why: string): RouterErrorPage {
  return {
    status,
    code: status === 401 ? 'environment_private' : 'access_denied',
    message: `environment ${env} is private: ${why}`,
    hint: `Open it with the link \`berth env open ${env}\` prints, or send a berth token whose scope covers it in ${CREDENTIAL_HEADER}.`,
    environment: env,
  };
}
