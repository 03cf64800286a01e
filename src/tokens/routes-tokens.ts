/**
 * API tokens over HTTP: who am I (any token), and making, listing and revoking tokens (admin; see
 * route-roles.ts). A new token's secret is in the creation's answer only.
 */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BerthError } from '../core/errors.js';
import { errorBody } from '../server/http/schemas.js';
import { ROLES } from './roles.js';
import type { TokenService, TokenView } from './token-service.js';

const tokenView = z.object({
  id: z.string(),
  name: z.string(),
  role: z.enum(ROLES),
  scope: z.array(z.string()).nullable(),
  origin: z.string(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});

/** At most ten years: a token that never expires is asked for by giving no expiry at all. */
const MAX_EXPIRY_S = 10 * 365 * 86_400;

export function tokenRoutes(tokens: TokenService, rotateDataDirToken: () => Promise<TokenView>): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.get(
      '/v1/whoami',
      {
        schema: {
          tags: ['tokens'],
          summary: 'The token this request came with: its name, role and tenant',
          response: { 200: z.object({ tenantId: z.string(), tokenId: z.string(), tokenName: z.string(), role: z.enum(ROLES), scope: z.array(z.string()).optional() }), '4xx': errorBody },
        },
      },
      (request) => {
        if (!request.principal) throw new BerthError('unauthorized', 'missing API token', "Send `Authorization: Bearer <token>`.");
        return request.principal;
      },
    );
    app.get(
      '/v1/tokens',
      {
        schema: {
          tags: ['tokens'],
          summary: "The tenant's tokens, oldest first (secrets are never shown again)",
          querystring: z.object({ revoked: z.enum(['true', 'false']).optional().describe('Also revoked ones') }),
          response: { 200: z.object({ tokens: z.array(tokenView) }), '4xx': errorBody },
        },
      },
      async (request) => ({ tokens: await tokens.list(request.tenantId, { withRevoked: request.query.revoked === 'true' }) }),
    );
    app.post(
      '/v1/tokens',
      {
        schema: {
          tags: ['tokens'],
          summary: 'Make a token; its secret is in this answer and nowhere else',
          body: z
            .object({
              name: z.string().min(1).max(64).describe('Whose or what it is: ci-deploy, alice@example.com'),
              role: z.enum(ROLES).describe('read < use < admin'),
              expiresInSeconds: z.number().int().min(60).max(MAX_EXPIRY_S).optional().describe('None: until revoked'),
              scope: z.array(z.string()).optional().describe('Group names or prefixes (alice-*) it may act in; none: the whole tenant'),
            })
            .strict(),
          response: { 201: z.object({ token: z.string(), tokenInfo: tokenView }), '4xx': errorBody },
        },
      },
      async (request, reply) => {
        const made = await tokens.create(request.tenantId, request.body);
        return reply.code(201).send({ token: made.token, tokenInfo: made.view });
      },
    );
    app.post(
      '/v1/tokens/rotate-data-dir',
      {
        schema: {
          tags: ['tokens'],
          summary: "Replace the server's own token (its data dir's, the local CLI's): the old one is revoked at once; the new one is written to the data dir, not answered",
          response: { 200: tokenView, '4xx': errorBody },
        },
      },
      async () => rotateDataDirToken(),
    );
    app.delete(
      '/v1/tokens/:id',
      {
        schema: {
          tags: ['tokens'],
          summary: 'Revoke a token by id or name: it stops working at once',
          params: z.object({ id: z.string().min(1) }),
          response: { 200: tokenView, '4xx': errorBody },
        },
      },
      async (request) => tokens.revoke(request.tenantId, request.params.id),
    );
    done();
  };
}
