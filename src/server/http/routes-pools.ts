/** Pools, claims, release and groups. */
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ClaimService } from '../../pools/claim-service.js';
import type { PoolService } from '../../pools/pool-service.js';
import { claimInput, completeSpec, poolScaleInput, poolSpecInput } from '../../pools/spec.js';
import type { PoolsRepo } from '../../store/pools-repo.js';
import type { HostsRepo } from '../../store/hosts-repo.js';
import { toPoolHostView } from '../../pools/views.js';
import { LIVE_HOST_STATES } from '../../core/host-state.js';
import { abortWhenClientGone } from './client-gone.js';
import { errorBody, hostView } from './schemas.js';

const poolHostView = hostView.extend({
  pool: z.string().nullable(),
  generation: z.number().nullable(),
  slot: z.string().nullable(),
  group: z.string().nullable(),
  claimId: z.string().nullable(),
});

const poolView = z.object({
  name: z.string(),
  image: z.string(),
  generation: z.number(),
  size: z.number(),
  maxSize: z.number(),
  maxLaunching: z.number(),
  maxIdleAge: z.number().nullable(),
  warmup: z.array(z.string()),
  healthCheck: z.object({ command: z.string(), interval: z.number(), timeout: z.number() }).nullable(),
  onEmpty: z.string(),
  onRelease: z.string(),
  demand: z.object({ max: z.number(), window: z.number(), leadTime: z.number().nullable() }).nullable(),
  schedule: z.object({ timezone: z.string(), rules: z.array(z.object({ cron: z.string(), size: z.number() })) }).nullable(),
  template: z.record(z.string(), z.unknown()),
  createdAt: z.string(),
  updatedAt: z.string(),
  status: z.object({
    ready: z.number().describe('Waiting hosts a claim can take now (their agents are connected)'),
    reconnecting: z.number().describe("Waiting hosts whose agents have not redialled yet (after a server restart); a claim waits a few seconds for one"),
    warming: z.number(),
    claiming: z.number(),
    claimed: z.number(),
    quarantined: z.number(),
    retiring: z.number(),
    stale: z.number(),
    targetSize: z.number(),
    demand: z.object({ peak: z.number(), leadTimeS: z.number() }).nullable(),
    schedule: z
      .object({ size: z.number(), rule: z.number().nullable(), next: z.object({ at: z.string(), size: z.number(), rule: z.number().nullable() }).nullable() })
      .nullable()
      .describe('What the schedule gives now (rule: the index of the rule that holds; null: none, so size) and when that changes next (within a week)'),
    full: z.boolean(),
    rolling: z.boolean(),
    notFullReason: z.string(),
    hits: z.number(),
    misses: z.number(),
    idleHostSeconds: z.number(),
    consecutiveFailures: z.number(),
    lastFailure: z.object({ reason: z.string(), at: z.string() }).nullable(),
    claimLatency: z.array(z.object({ leMs: z.number().nullable(), count: z.number() })),
    lastClaimAt: z.string().nullable(),
  }),
});

const claimView = z.object({
  id: z.string(),
  state: z.string(),
  pool: z.string(),
  group: z.string(),
  hit: z.boolean().nullable(),
  attempts: z.number(),
  idempotencyKey: z.string().nullable(),
  timings: z.record(z.string(), z.number()),
  error: z.record(z.string(), z.unknown()).nullable(),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
  host: poolHostView.nullable(),
});

const nameParams = z.object({ name: z.string().min(1) });
const errors = { '4xx': errorBody, '5xx': errorBody };

export interface PoolRouteDeps {
  pools: PoolService;
  claims: ClaimService;
  poolsRepo: PoolsRepo;
  hostsRepo: HostsRepo;
  isConnected: (hostId: string) => boolean;
}

export function poolRoutes(deps: PoolRouteDeps): FastifyPluginCallbackZod {
  return (app, _opts, done) => {
    app.post('/v1/pools', { schema: { tags: ['pools'], summary: 'Create a pool', body: poolSpecInput, response: { 201: poolView, ...errors } } }, async (request, reply) =>
      reply.status(201).send(await deps.pools.create(request.tenantId, completeSpec(request.body))),
    );
    app.put(
      '/v1/pools/:name',
      {
        schema: {
          tags: ['pools'],
          summary: 'Create or change a pool (a new image or template rolls the pool to a new generation)',
          params: nameParams,
          body: poolSpecInput.omit({ name: true }),
          response: { 200: z.object({ action: z.enum(['created', 'updated', 'rolled', 'unchanged']), pool: poolView }), ...errors },
        },
      },
      async (request) => deps.pools.apply(request.tenantId, completeSpec({ ...request.body, name: request.params.name })),
    );
    app.patch(
      '/v1/pools/:name',
      {
        schema: {
          tags: ['pools'],
          summary: "Scale a pool: change its size, maxSize or maxLaunching only (no roll; shrinking retires idle ready hosts)",
          params: nameParams,
          body: poolScaleInput,
          response: { 200: poolView, ...errors },
        },
      },
      async (request) => deps.pools.scale(request.tenantId, request.params.name, request.body),
    );
    app.get('/v1/pools', { schema: { tags: ['pools'], summary: 'List pools with their status', response: { 200: z.object({ pools: z.array(poolView) }), ...errors } } }, async (request) => ({
      pools: await deps.pools.list(request.tenantId),
    }));
    app.get('/v1/pools/:name', { schema: { tags: ['pools'], summary: 'Show a pool and its status', params: nameParams, response: { 200: poolView, ...errors } } }, async (request) =>
      deps.pools.show(request.tenantId, request.params.name),
    );
    app.get(
      '/v1/pools/:name/hosts',
      { schema: { tags: ['pools'], summary: "A pool's hosts, in every slot", params: nameParams, response: { 200: z.object({ hosts: z.array(poolHostView) }), ...errors } } },
      async (request) => ({ hosts: await deps.pools.hosts(request.tenantId, request.params.name) }),
    );
    app.delete(
      '/v1/pools/:name',
      { schema: { tags: ['pools'], summary: 'Remove a pool (claimed hosts stay with their groups)', params: nameParams, response: { 200: z.object({ retired: z.number(), keptClaimed: z.number() }), ...errors } } },
      async (request) => deps.pools.remove(request.tenantId, request.params.name),
    );
    app.post(
      '/v1/pools/:name/claims',
      { schema: { tags: ['claims'], summary: 'Claim a ready host for a group', params: nameParams, body: claimInput, response: { 201: claimView, 200: claimView, ...errors } } },
      async (request, reply) => {
        // The client went away before the answer: stop (the claim rolls back).
        const claim = await deps.claims.claim(request.tenantId, request.params.name, request.body, abortWhenClientGone(reply.raw));
        return reply.status(201).send(claim);
      },
    );
    app.get(
      '/v1/claims',
      {
        schema: {
          tags: ['claims'],
          summary: 'List claims, newest first',
          querystring: z.object({ pool: z.string().optional(), group: z.string().optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) }),
          response: { 200: z.object({ claims: z.array(claimView) }), ...errors },
        },
      },
      async (request) => ({ claims: await deps.claims.list(request.tenantId, { ...request.query }) }),
    );
    app.get('/v1/claims/:id', { schema: { tags: ['claims'], summary: 'Show a claim', params: z.object({ id: z.string() }), response: { 200: claimView, ...errors } } }, async (request) =>
      deps.claims.get(request.tenantId, request.params.id),
    );
    app.post(
      '/v1/hosts/:id/release',
      {
        schema: {
          tags: ['claims'],
          summary: 'Release a claimed host from its group',
          params: z.object({ id: z.string() }),
          body: z.object({ reuse: z.boolean().default(false) }).strict().default({ reuse: false }),
          response: { 200: poolHostView, ...errors },
        },
      },
      async (request) => {
        const row = await deps.claims.release(request.tenantId, request.params.id, { reuse: request.body.reuse });
        return toPoolHostView(row, deps.isConnected(row.id));
      },
    );
    app.get(
      '/v1/groups',
      { schema: { tags: ['groups'], summary: 'List groups', response: { 200: z.object({ groups: z.array(z.object({ name: z.string(), labels: z.record(z.string(), z.string()), createdAt: z.string() })) }), ...errors } } },
      async (request) => ({
        groups: (await deps.poolsRepo.groups(request.tenantId)).map((g) => ({ name: g.name, labels: g.labels, createdAt: new Date(g.created_at).toISOString() })),
      }),
    );
    app.get(
      '/v1/groups/:name/hosts',
      { schema: { tags: ['groups'], summary: "A group's hosts", params: nameParams, response: { 200: z.object({ hosts: z.array(poolHostView) }), ...errors } } },
      async (request) => ({
        hosts: (await deps.hostsRepo.list(request.tenantId, { states: LIVE_HOST_STATES, group: request.params.name })).map((r) => toPoolHostView(r, deps.isConnected(r.id))),
      }),
    );
    done();
  };
}
