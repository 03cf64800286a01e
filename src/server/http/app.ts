/** The HTTP API: fastify with zod schemas, OpenAPI at /openapi.json, browsable docs at /docs. */
import http from 'node:http';
import https from 'node:https';
import { BerthError } from '../../core/errors.js';
import { metricsRoutes } from '../../metrics/routes-metrics.js';
import type { MetricsCollector } from '../../metrics/metrics.js';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { CommandService } from '../../commands/command-service.js';
import type { HostService } from '../../hosts/host-service.js';
import { installAuth } from './auth.js';
import type { TokenService, TokenView } from '../../tokens/token-service.js';
import { tokenRoutes } from '../../tokens/routes-tokens.js';
import type { AuditLog } from '../../audit/audit-log.js';
import { installAudit } from '../../audit/http-audit.js';
import { auditRoutes } from '../../audit/routes-audit.js';
import { installApiCounts, type ApiRequestCounts } from '../../metrics/api-usage.js';
import { installScopeGuard, type ScopeLookups } from '../../tokens/scope-guard.js';
import { installErrorHandling } from './errors.js';
import { commandRoutes } from './routes-commands.js';
import { hostRoutes } from './routes-hosts.js';
import { imageRoutes } from './routes-images.js';
import { serviceRoutes } from './routes-services.js';
import type { ServicesService } from '../../services/services-service.js';
import type { StackSync } from '../../services/stack-sync.js';
import { poolRoutes, type PoolRouteDeps } from './routes-pools.js';
import type { ImageService } from '../../images/image-service.js';
import type { EnvironmentService } from '../../environments/environment-service.js';
import { environmentRoutes } from './routes-environments.js';
import type { EventBus } from '../../events/event-bus.js';
import { eventRoutes } from '../../events/routes-events.js';
import type { DashboardFeed } from '../../dashboard/dashboard-feed.js';
import { dashboardRoutes } from '../../dashboard/routes-dashboard.js';
import { shellRoutes, type ShellRouteDeps } from '../../shells/routes-shells.js';

export interface AppDeps {
  hosts: HostService;
  commands: CommandService;
  pools: PoolRouteDeps;
  images: ImageService;
  services: ServicesService;
  stacks: StackSync;
  environments: EnvironmentService;
  tokens: TokenService;
  /** Replaces the data dir's own token (the old one is revoked); the new secret stays in the data dir. */
  rotateDataDirToken: () => Promise<TokenView>;
  audit: AuditLog;
  /** What a scoped token's requests are checked against (src/tokens/scope-guard.ts). */
  scopeLookups: ScopeLookups;
  /** Where the API's responses are counted for /metrics; absent: not counted. */
  apiRequests?: ApiRequestCounts;
  health: () => Promise<Record<string, unknown>>;
  /** The driver and, for a cloud driver, its API calls so far by operation (what the status shows). */
  driver: () => { name: string; calls?: Record<string, number>; attempts?: Record<string, number> };
  version: string;
  logger: boolean | { level: string };
  metrics: MetricsCollector;
  events: EventBus;
  dashboard: DashboardFeed;
  shells: ShellRouteDeps;
  /** Comments on an idle event stream, ms (default 15 s). */
  eventsHeartbeatMs?: number;
  /** HTTPS with this certificate (and chain) and key, PEM (server/tls-files.ts). */
  tls?: { cert: Buffer; key: Buffer };
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { tls } = deps;
  const app = Fastify({
    logger: deps.logger,
    bodyLimit: 8 * 1024 * 1024,
    // Fastify's types tie the https server to another instance type than every route module takes;
    // what Fastify does with its server (listen, request and upgrade events) is the same for both.
    ...(tls ? { serverFactory: (handler: http.RequestListener) => https.createServer({ cert: tls.cert, key: tls.key }, handler) as unknown as http.Server } : {}),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  installAuth(app, (token) => deps.tokens.authenticate(token));
  installAudit(app, deps.audit);
  installScopeGuard(app, deps.scopeLookups);
  if (deps.apiRequests) installApiCounts(app, deps.apiRequests);

  await app.register(swagger, {
    openapi: {
      info: { title: 'berth', version: deps.version, description: 'Ready, isolated hosts in milliseconds.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  app.get(
    '/v1/health',
    { schema: { tags: ['server'], summary: 'Liveness (no token needed)', security: [], response: { 200: z.record(z.string(), z.unknown()) } } },
    async () => ({ ok: true, version: deps.version, ...(await deps.health()) }),
  );
  app.get(
    '/v1/driver',
    {
      schema: {
        tags: ['server'],
        summary: "The server's driver; for AWS, its API calls so far by operation (retries counted apart, as attempts)",
        response: { 200: z.object({ name: z.string(), calls: z.record(z.string(), z.number()).optional(), attempts: z.record(z.string(), z.number()).optional() }) },
      },
    },
    () => deps.driver(),
  );
  await app.register(hostRoutes(deps.hosts));
  await app.register(commandRoutes(deps.commands));
  await app.register(poolRoutes(deps.pools));
  await app.register(imageRoutes(deps.images));
  await app.register(serviceRoutes(deps.services, deps.stacks));
  await app.register(environmentRoutes(deps.environments));
  await app.register(shellRoutes(deps.shells));
  await app.register(tokenRoutes(deps.tokens, deps.rotateDataDirToken));
  await app.register(auditRoutes(deps.audit));
  await app.register(metricsRoutes(deps.metrics));
  await app.register(eventRoutes(deps.events, deps.eventsHeartbeatMs !== undefined ? { heartbeatMs: deps.eventsHeartbeatMs } : {}));
  await app.register(dashboardRoutes(deps.dashboard, deps.eventsHeartbeatMs !== undefined ? { heartbeatMs: deps.eventsHeartbeatMs } : {}));
  return app;
}

/** A new certificate and key for the API's connections from now on (open ones keep theirs); HTTPS only. */
export function setApiCertificate(app: FastifyInstance, pair: { cert: Buffer; key: Buffer }): void {
  const server: unknown = app.server;
  if (!(server instanceof https.Server)) throw new BerthError('invalid_state', 'the API does not serve HTTPS', 'Start the server with --tls-cert and --tls-key.');
  server.setSecureContext({ cert: pair.cert, key: pair.key });
}
