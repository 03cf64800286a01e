/**
 * Bearer-token auth for every route but health. A browser (the API docs, the dashboard) may pass
 * the token once as `?token=`; it is then kept in an HttpOnly cookie.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BerthError } from '../../core/errors.js';
import { hashSecret } from '../../core/ids.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenantId: string;
  }
}

export type TokenLookup = (tokenHash: string) => Promise<string | undefined>;

const PUBLIC = new Set(['/v1/health']);
const COOKIE = 'berth_token';

export function installAuth(app: FastifyInstance, lookup: TokenLookup): void {
  const cache = new Map<string, string>();
  app.decorateRequest('tenantId', '');
  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    if (PUBLIC.has(path)) return;
    const { token, fromQuery } = tokenOf(request);
    if (!token) throw new BerthError('unauthorized', 'missing API token', 'Send `Authorization: Bearer <token>`; the token is in the server\'s data dir (file `token`).');
    const hash = hashSecret(token);
    let tenant = cache.get(hash);
    if (!tenant) {
      tenant = await lookup(hash);
      if (!tenant) throw new BerthError('unauthorized', 'invalid API token', 'Use the token from the server\'s data dir (file `token`), or set BERTH_TOKEN.');
      cache.set(hash, tenant);
    }
    request.tenantId = tenant;
    if (fromQuery) void reply.header('set-cookie', `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/`);
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
