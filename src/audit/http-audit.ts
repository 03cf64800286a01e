/**
 * Records API calls in the audit log (audit-log.ts) as each answer goes out: every call that
 * changes something or was meant to (any method but GET and HEAD), refused ones included, and the
 * reads that look at what someone else did in a terminal.
 */
import type { FastifyInstance } from 'fastify';
import { auditCaller, type AuditLog } from './audit-log.js';

/** Reads worth a line: a recording shows what another person's terminal showed. */
const AUDITED_READS = new Set(['/v1/shells/:id/recording']);

export function isAudited(method: string, route: string | undefined): boolean {
  const verb = method.toUpperCase();
  if (verb !== 'GET' && verb !== 'HEAD') return true;
  return route !== undefined && AUDITED_READS.has(route);
}

export function installAudit(app: FastifyInstance, audit: AuditLog): void {
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url;
    if (isAudited(request.method, route)) {
      const path = request.url.split('?')[0] ?? request.url;
      audit.record({
        ...auditCaller(request.principal),
        method: request.method,
        route: route ?? path,
        path,
        status: reply.statusCode,
        durationMs: reply.elapsedTime,
        ip: request.ip || null,
      });
    }
    done();
  });
}
