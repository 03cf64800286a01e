/** Environments: create (claim, start, route), list, show, deploy a new ref, remove. */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { BerthError } from '../../core/errors.js';
import type { Principal } from '../../tokens/token-service.js';
import type { EnvironmentService } from '../../environments/environment-service.js';
import { createEnvironmentBody, deployEnvironmentBody, environmentName, environmentPatchBody } from '../../environments/spec.js';
import { changeSettingsBody } from '../../environments/settings.js';
import { restartEnvironmentBody } from '../../environments/restart.js';
import { environmentWakeBody } from '../../environments/sleep.js';
import { upsertEnvironmentBody } from '../../environments/upsert.js';
import { scaleEnvironmentBody } from '../../environments/scale.js';
import { errorBody } from './schemas.js';

const backend = z.object({
  id: z.string(),
  url: z.string(),
  label: z.string().nullable(),
  healthy: z.boolean(),
  draining: z.boolean().describe('Taken out of rotation while its host restarts (env set, env restart)'),
  lastCheckedAt: z.string().nullable(),
  lastError: z.string().nullable(),
  lastErrorAt: z.string().nullable(),
  requests: z.number(),
  failures: z.number(),
  active: z.number(),
});
const environmentView = z.object({
  name: z.string(),
  stack: z.string(),
  pool: z.string(),
  mode: z.string(),
  ref: z.string().nullable(),
  slugDigest: z.string().nullable(),
  replicas: z.number(),
  serviceReplicas: z.record(z.string(), z.number()),
  user: z.string().nullable(),
  settings: z.array(z.string()),
  state: z.string(),
  stateReason: z.string(),
  url: z.string().nullable(),
  hosts: z.array(z.object({ hostId: z.string(), service: z.string().nullable(), generation: z.number() })),
  route: z.object({ service: z.string(), port: z.number(), healthPath: z.string(), generation: z.number() }).nullable(),
  timings: z.record(z.string(), z.number()),
  operation: z.string().nullable(),
  backends: z.array(backend).nullable(),
  expiresAt: z.string().nullable(),
  private: z.boolean(),
  sleepAfterMs: z.number().nullable(),
  lastRequestAt: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
const nameParams = z.object({ name: environmentName });

function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new BerthError('unauthorized', 'missing API token', 'Send `Authorization: Bearer <token>`.');
  return request.principal;
}
const upsertResult = z.object({ action: z.enum(['created', 'deployed', 'configured', 'scaled', 'unchanged']), changes: z.array(z.string()), environment: environmentView });
const errors = { '4xx': errorBody, '5xx': errorBody };

export function environmentRoutes(envs: EnvironmentService): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.post(
      '/v1/environments',
      {
        schema: {
          tags: ['environments'],
          summary: "Create an environment: claim hosts from the stack's pool, start its services for the mode, route NAME.<domain> to it once it answers",
          body: createEnvironmentBody,
          response: { 201: environmentView, ...errors },
        },
      },
      async (request, reply) => reply.status(201).send(await envs.create(request.tenantId, request.body)),
    );
    app.get(
      '/v1/environments',
      { schema: { tags: ['environments'], summary: 'List environments', response: { 200: z.object({ environments: z.array(environmentView) }), ...errors } } },
      async (request) => ({ environments: await envs.list(request.tenantId) }),
    );
    app.get(
      '/v1/environments/:name',
      { schema: { tags: ['environments'], summary: 'Describe an environment, with its route and backends', params: nameParams, response: { 200: environmentView, ...errors } } },
      async (request) => envs.get(request.tenantId, request.params.name),
    );
    app.put(
      '/v1/environments/:name',
      {
        schema: {
          tags: ['environments'],
          summary: 'The environment as asked (berth env up): created if absent, else a new ref deployed, settings changed, timers applied where they differ; the same request again changes nothing',
          params: nameParams,
          body: upsertEnvironmentBody,
          response: { 200: upsertResult, 201: upsertResult, ...errors },
        },
      },
      async (request, reply) => {
        const result = await envs.upsert(request.tenantId, request.params.name, request.body);
        return reply.status(result.action === 'created' ? 201 : 200).send(result);
      },
    );
    app.post(
      '/v1/environments/:name/deploy',
      {
        schema: {
          tags: ['environments'],
          summary: 'Deploy a new ref: new hosts first, the route switched once they answer, the old hosts released',
          params: nameParams,
          body: deployEnvironmentBody,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.deploy(request.tenantId, request.params.name, request.body.ref, request.body.wait, { command: request.body.command }),
    );
    app.patch(
      '/v1/environments/:name',
      {
        schema: {
          tags: ['environments'],
          summary: "Change an environment's TTL (removed that long from now, or never: null) and/or its sleep-after (asleep after that long without a request, or never: null)",
          params: nameParams,
          body: environmentPatchBody,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.setOptions(request.tenantId, request.params.name, request.body),
    );
    app.post(
      '/v1/environments/:name/access',
      {
        schema: {
          tags: ['environments'],
          summary: "A link into a private environment for the calling token, good for 5 minutes (a browser opening it gets a cookie good for 12 hours); a public one's plain URL",
          params: nameParams,
          response: { 200: z.object({ url: z.string(), expiresAt: z.string().nullable() }), ...errors },
        },
      },
      async (request) => envs.accessLink(principalOf(request), request.params.name),
    );
    app.post(
      '/v1/environments/:name/scale',
      {
        schema: {
          tags: ['environments'],
          summary: 'Another number of replicas: review hosts added or removed in place (the others untouched), or in service mode (where services may have counts of their own) a deploy of its ref on the new counts',
          params: nameParams,
          body: scaleEnvironmentBody,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.scale(request.tenantId, request.params.name, { replicas: request.body.replicas, services: request.body.serviceReplicas }, request.body.wait),
    );
    app.post(
      '/v1/environments/:name/sleep',
      {
        schema: {
          tags: ['environments'],
          summary: 'Put an environment to sleep now: its hosts go back to the pool, its route holds the next request and wakes it',
          params: nameParams,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.sleep(request.tenantId, request.params.name),
    );
    app.post(
      '/v1/environments/:name/wake',
      {
        schema: {
          tags: ['environments'],
          summary: 'Wake a sleeping environment now, as its next request would: hosts claimed, services started, routed',
          params: nameParams,
          body: environmentWakeBody,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.wake(request.tenantId, request.params.name, request.body.wait),
    );
    app.patch(
      '/v1/environments/:name/settings',
      {
        schema: {
          tags: ['environments'],
          summary: "Change an environment's settings (env values of every service): host by host, by reload where the stack can, else restart; undone on every host if one's services do not come back ready",
          params: nameParams,
          body: changeSettingsBody,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.changeSettings(request.tenantId, request.params.name, request.body),
    );
    app.post(
      '/v1/environments/:name/restart',
      {
        schema: {
          tags: ['environments'],
          summary: "Restart an environment's services (or one, `service`): host by host, each host's new processes ready and back in the router's rotation before the next",
          params: nameParams,
          body: restartEnvironmentBody,
          response: { 200: environmentView, ...errors },
        },
      },
      async (request) => envs.restart(request.tenantId, request.params.name, request.body),
    );
    app.delete(
      '/v1/environments/:name',
      { schema: { tags: ['environments'], summary: 'Remove an environment: its route goes, its hosts are released', params: nameParams, response: { 200: environmentView, ...errors } } },
      async (request) => envs.remove(request.tenantId, request.params.name),
    );
    done();
  };
}
