/** A host's supervised services: set the desired set, read what runs, start/stop/restart one. */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { HostServicesView, ServicesService } from '../../services/services-service.js';
import type { StackSync } from '../../services/stack-sync.js';
import { errorBody, hostIdParams } from './schemas.js';

const status = z.object({
  name: z.string(),
  state: z.string(),
  restarts: z.number(),
  reloads: z.number().optional(),
  pid: z.number().nullable(),
  lastExit: z.object({ code: z.number().nullable(), signal: z.string().nullable(), at: z.string() }).nullable(),
  reason: z.string(),
  since: z.string(),
  configHash: z.string(),
});
const servicesView = z.object({
  hostId: z.string(),
  leaving: z.array(status),
  stack: z.object({ stack: z.string(), mode: z.string(), problems: z.array(z.string()) }).nullable(),
  agentConnected: z.boolean(),
  reportedAt: z.string().nullable(),
  services: z.array(
    z.object({
      name: z.string(),
      cmd: z.string(),
      dependsOn: z.array(z.string()),
      ports: z.array(z.number()),
      envNames: z.array(z.string()),
      configHash: z.string(),
      status: status.nullable(),
    }),
  ),
});
const errors = { '4xx': errorBody, '5xx': errorBody };
const waitQuery = z.object({
  wait: z.coerce.number().min(0).max(600).optional().describe('Seconds to wait until every service is ready (or failed)'),
});

/** Every service reported in its current configuration and settled (ready, or failed), none left to stop. */
const settled = (view: HostServicesView): boolean =>
  view.leaving.length === 0 &&
  view.services.every((s) => s.status !== null && s.status.configHash === s.configHash && (s.status.state === 'ready' || s.status.state === 'failed'));

export function serviceRoutes(services: ServicesService, stacks: StackSync): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.put(
      '/v1/stacks/:name',
      {
        schema: {
          tags: ['services'],
          summary: "Create or replace a stack (what `berth apply` sends: the parsed stacks: entry and its config layers); every live host tagged berth.stack=NAME converges",
          params: z.object({ name: z.string().min(1) }),
          body: z.object({ stack: z.record(z.string(), z.unknown()), config: z.record(z.string(), z.unknown()) }),
          response: { 200: z.object({ action: z.enum(['created', 'updated', 'unchanged']), hosts: z.number() }), ...errors },
        },
      },
      async (request) => stacks.apply(request.tenantId, request.params.name, request.body.stack, request.body.config),
    );
    app.get(
      '/v1/hosts/:id/config',
      {
        schema: {
          tags: ['services'],
          summary: "The effective config of a stack host's services: every variable with where it came from; secret values masked unless asked",
          params: hostIdParams,
          querystring: z.object({ service: z.string().optional(), showSecrets: z.enum(['true', 'false']).optional() }),
          response: { 200: z.record(z.string(), z.unknown()), ...errors },
        },
      },
      async (request) => (await stacks.config(request.tenantId, request.params.id, { service: request.query.service, showSecrets: request.query.showSecrets === 'true' })) as unknown as Record<string, unknown>,
    );
    app.put(
      '/v1/hosts/:id/services',
      {
        schema: {
          tags: ['services'],
          summary: "Set a host's supervised services (its supervisor converges: only changed services restart)",
          description: 'Each service: name, cmd, cwd, user, env, ports, dependsOn, ready {http|tcp|command, timeoutSeconds}, stopSignal, stopTimeoutSeconds, restart {policy, initialDelayMs, factor, maxDelayMs, resetAfterSeconds, crashLoopLimit}, logs {maxBytes, keep, timestamps}. With `wait`, answers once every service is ready or failed.',
          params: hostIdParams,
          querystring: waitQuery,
          body: z.object({ services: z.array(z.record(z.string(), z.unknown())).max(200) }),
          response: { 200: servicesView, ...errors },
        },
      },
      async (request) => {
        const view = await services.set(request.tenantId, request.params.id, request.body.services);
        const wait = request.query.wait;
        return wait ? services.waitFor(request.tenantId, request.params.id, settled, wait * 1000) : view;
      },
    );
    app.get(
      '/v1/hosts/:id/services',
      { schema: { tags: ['services'], summary: "A host's services and their state, restarts, pid and last exit", params: hostIdParams, querystring: waitQuery, response: { 200: servicesView, ...errors } } },
      async (request) => {
        const wait = request.query.wait;
        return wait ? services.waitFor(request.tenantId, request.params.id, settled, wait * 1000) : services.get(request.tenantId, request.params.id);
      },
    );
    app.post(
      '/v1/hosts/:id/services/:name/:action',
      {
        schema: {
          tags: ['services'],
          summary: 'Start, stop or restart one service',
          params: hostIdParams.extend({ name: z.string().min(1), action: z.enum(['start', 'stop', 'restart']) }),
          response: { 200: servicesView, ...errors },
        },
      },
      async (request) => services.act(request.tenantId, request.params.id, request.params.name, request.params.action),
    );
    done();
  };
}
