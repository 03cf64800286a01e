/** `GET /v1/audit`: the audit log, newest first (admin; see src/tokens/route-roles.ts). */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorBody } from '../server/http/schemas.js';
import type { AuditLog } from './audit-log.js';

const auditRecord = z.object({
  at: z.string(),
  tenantId: z.string().nullable(),
  tokenId: z.string().nullable(),
  tokenName: z.string().nullable().describe('The name of the token that made the call; null when the token was not known'),
  method: z.string(),
  route: z.string(),
  path: z.string(),
  status: z.number().int(),
  durationMs: z.number(),
  ip: z.string().nullable(),
});

export function auditRoutes(audit: AuditLog): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.get(
      '/v1/audit',
      {
        schema: {
          tags: ['tokens'],
          summary: 'Who changed what through the API: every call that changes something (refused ones too), newest first',
          querystring: z.object({
            token: z.string().min(1).optional().describe('Only calls made with the token of this name'),
            since: z.iso.datetime({ offset: true }).optional().describe('Only calls at or after this time'),
            failed: z.enum(['true', 'false']).optional().describe('Only refused or failed calls (status >= 400)'),
            limit: z.coerce.number().int().min(1).max(10_000).optional().describe('At most this many (default 100)'),
          }),
          response: { 200: z.object({ entries: z.array(auditRecord) }), '4xx': errorBody },
        },
      },
      async (request) => ({
        entries: await audit.list(request.tenantId, {
          token: request.query.token,
          since: request.query.since !== undefined ? new Date(request.query.since) : undefined,
          failed: request.query.failed === 'true',
          limit: request.query.limit,
        }),
      }),
    );
    done();
  };
}
