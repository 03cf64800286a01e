/**
 * Bearer-token auth for every route but health, and each route's role (src/tokens/route-roles.ts).
 * A browser (the API docs, the dashboard) may pass the token once as `?token=`; it is then kept in
 * an HttpOnly cookie.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BerthError } from '../../core/errors.js';
import { actorContext } from '../../events/actor.js';
import type { Role } from '../../tokens/roles.js';
import { routeRole } from '../../tokens/route-roles.js';
import { requireRole, type Principal } from '../../tokens/token-service.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenantId: string;
    /** The token that authenticated the request (unset on the public health route). */
    principal: Principal | undefined;
  }
  interface FastifyContextConfig {
    /** The role the route needs, from src/tokens/route-roles.ts. */
    role?: Role;
  }
}

/** Who a bearer token is; throws `unauthorized` for an unknown, revoked or expired one. */
export type Authenticate = (token: string) => Promise<Principal>;

const PUBLIC = new Set(['/v1/health']);
const COOKIE = 'berth_token';

export function installAuth(app: FastifyInstance, authenticate: Authenticate): void {
  app.decorateRequest('tenantId', '');
  app.decorateRequest('principal', undefined);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const roles = methods.map((m) => routeRole(m, route.url));
    const missing = methods.filter((_, i) => roles[i] === undefined);
    if (missing.length > 0) throw new Error(`route ${missing.join(',')} ${route.url} needs a role in src/tokens/route-roles.ts`);
    route.config = { ...route.config, role: roles[0] ?? 'admin' };
  });
  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    if (PUBLIC.has(path)) return;
    const { token, fromQuery } = tokenOf(request);
    if (!token) throw new BerthError('unauthorized', 'missing API token', "Send `Authorization: Bearer <token>`; the token is in the server's data dir (file `token`).");
    const principal = await authenticate(token);
    // Known before the role is checked, so that a refusal is recorded with who was refused.
    request.tenantId = principal.tenantId;
    request.principal = principal;
    // A route that does not exist answers 404 to any valid token.
    requireRole(principal, request.routeOptions.config.role ?? 'read', `${request.method} ${request.routeOptions.url ?? path}`);
    // Over HTTPS the browser sends it back over HTTPS only.
    if (fromQuery) void reply.header('set-cookie', `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/${request.protocol === 'https' ? '; Secure' : ''}`);
  });
  // The handler runs inside the token's context (a callback hook: the handler is called from
  // `done`), so the events of the changes it makes name the token (src/events/actor.ts).
  app.addHook('preHandler', (request, _reply, done) => {
    const principal = request.principal;
    if (principal) actorContext.run({ tokenId: principal.tokenId, name: principal.tokenName }, done);
    else done();
  });
}

function tokenOf(request: FastifyRequest): { token: string | undefined; fromQuery: boolean } {
  const auth = request.headers.authorization;
  if (auth?.startsWith('Bearer ')) return { token: auth.slice(7).trim(), fromQuery: false };
  // A token in the address beats the cookie: it is the one the person just gave.
  const query = request.query as Record<string, unknown> | undefined;
  if (request.method === 'GET' && typeof query?.['token'] === 'string') return { token: query['token'], fromQuery: true };
  return { token: cookieToken(request.headers.cookie), fromQuery: false };
}

/** The token in a Cookie header (the dashboard's, set above), if there is one. */
export function cookieToken(header: string | undefined): string | undefined {
  const cookie = header
    ?.split(';')
    .map((c) => c.trim())
    .find((c) => c.startsWith(`${COOKIE}=`));
  return cookie ? decodeURIComponent(cookie.slice(COOKIE.length + 1)) : undefined;
}
