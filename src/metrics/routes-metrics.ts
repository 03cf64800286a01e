/**
 * GET /metrics: the Prometheus text exposition of the token's tenant. Behind the API token like
 * every route but health (Prometheus: `authorization: { credentials_file: <data-dir>/token }`).
 */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorBody } from '../server/http/schemas.js';
import { EXPOSITION_CONTENT_TYPE, type MetricsCollector } from './metrics.js';

export function metricsRoutes(collector: MetricsCollector): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.get(
      '/metrics',
      {
        schema: {
          tags: ['server'],
          summary: 'Prometheus metrics of your tenant (text exposition format 0.0.4): pools, claims, environments, commands, router',
          // Sent as text: with a text content type fastify sends a string as it is, no serializer.
          response: { 200: z.string().describe('text/plain; version=0.0.4'), '4xx': errorBody, '5xx': errorBody },
        },
      },
      async (request, reply) => {
        const body = await collector.scrape(request.tenantId);
        return reply.header('cache-control', 'no-store').type(EXPOSITION_CONTENT_TYPE).send(body);
      },
    );
    done();
  };
}
