import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { HostService } from '../../hosts/host-service.js';
import { changeTagsBody, errorBody, hostIdParams, hostStatsView, hostView, launchHostBody, listHostsQuery } from './schemas.js';
import { parseTagList } from './tags.js';

export function hostRoutes(hosts: HostService): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.post(
      '/v1/hosts',
      { schema: { tags: ['hosts'], summary: 'Launch a host', body: launchHostBody, response: { 201: hostView, '4xx': errorBody, '5xx': errorBody } } },
      async (request, reply) => {
        const { wait, waitTimeout, ...spec } = request.body;
        const host = await hosts.launch(request.tenantId, spec, wait ? { wait: true, ...(waitTimeout !== undefined ? { waitMs: waitTimeout * 1000 } : {}) } : {});
        return reply.status(201).send(host);
      },
    );
    app.get(
      '/v1/hosts',
      { schema: { tags: ['hosts'], summary: 'List hosts', querystring: listHostsQuery, response: { 200: z.object({ hosts: z.array(hostView) }), '4xx': errorBody } } },
      async (request) => {
        const tags = parseTagList(request.query.tag);
        return { hosts: await hosts.list(request.tenantId, { all: request.query.all === 'true', ...(tags ? { tags } : {}) }) };
      },
    );
    app.get(
      '/v1/hosts/:id',
      { schema: { tags: ['hosts'], summary: 'Describe a host', params: hostIdParams, response: { 200: hostView, '4xx': errorBody } } },
      async (request) => hosts.get(request.tenantId, request.params.id),
    );
    app.get(
      '/v1/hosts/:id/stats',
      {
        schema: {
          tags: ['hosts'],
          summary: 'What a running host uses now: CPU seconds since boot, memory, processes and its own disk, each with its limit',
          params: hostIdParams,
          response: { 200: hostStatsView, '4xx': errorBody, '5xx': errorBody },
        },
      },
      async (request) => hosts.stats(request.tenantId, request.params.id),
    );
    app.post(
      '/v1/hosts/:id/reset',
      {
        schema: {
          tags: ['hosts'],
          summary: 'Reset a host: stop its services, kill every process, discard its writable layer, boot it again (its services rerun)',
          params: hostIdParams,
          response: { 200: hostView, '4xx': errorBody, '5xx': errorBody },
        },
      },
      async (request) => hosts.resetHost(request.tenantId, request.params.id),
    );
    app.patch(
      '/v1/hosts/:id/tags',
      {
        schema: {
          tags: ['hosts'],
          summary: "Change a running host's tags; its stack's services converge (untouched services keep running)",
          params: hostIdParams,
          body: changeTagsBody,
          response: { 200: hostView, '4xx': errorBody, '5xx': errorBody },
        },
      },
      async (request) => hosts.changeTags(request.tenantId, request.params.id, { set: request.body.set ?? {}, remove: request.body.remove ?? [] }),
    );
    app.delete(
      '/v1/hosts/:id',
      { schema: { tags: ['hosts'], summary: 'Terminate a host', params: hostIdParams, response: { 200: hostView, '4xx': errorBody, '5xx': errorBody } } },
      async (request) => hosts.terminate(request.tenantId, request.params.id),
    );
    done();
  };
}
