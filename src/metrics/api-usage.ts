/**
 * The API's own traffic, counted by the server process since it started: responses by route and
 * status (refusals included: 401, 403), and how long they took. Routes are the declared patterns
 * (`/v1/hosts/:id`), never the paths, so the series stay few; a path no route matches counts as
 * route="(none)".
 */
import type { FastifyInstance } from 'fastify';
import { histogramSamples, type MetricFamily } from './exposition.js';

/** Seconds: an API call is a millisecond or a few, a claim or a command with `wait` may be many. */
const BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface Latency {
  buckets: number[];
  sum: number;
  count: number;
}

/** Per tenant ('' for calls whose token was not known). */
interface TenantCounts {
  responses: Map<string, number>;
  latency: Map<string, Latency>;
}

export class ApiRequestCounts {
  private readonly tenants = new Map<string, TenantCounts>();

  observe(tenantId: string | null, method: string, route: string, status: number, seconds: number): void {
    const key = tenantId ?? '';
    let counts = this.tenants.get(key);
    if (!counts) this.tenants.set(key, (counts = { responses: new Map(), latency: new Map() }));
    const call = `${method} ${route}`;
    const responseKey = `${call} ${status}`;
    counts.responses.set(responseKey, (counts.responses.get(responseKey) ?? 0) + 1);
    let latency = counts.latency.get(call);
    if (!latency) counts.latency.set(call, (latency = { buckets: BOUNDS.map(() => 0), sum: 0, count: 0 }));
    for (let i = 0; i < BOUNDS.length; i++) if (seconds <= (BOUNDS[i] ?? Infinity)) latency.buckets[i] = (latency.buckets[i] ?? 0) + 1;
    latency.sum += seconds;
    latency.count += 1;
  }

  /** The tenant's families, with the calls of unknown tokens (tenant="") beside them. */
  families(tenantId: string): MetricFamily[] {
    const rows = [tenantId, ''].flatMap((tenant) => {
      const counts = this.tenants.get(tenant);
      return counts ? [{ tenant, counts }] : [];
    });
    return [
      {
        name: 'berth_api_requests_total',
        type: 'counter',
        help: 'API responses since the server started, by method, route and status (401 and 403 are refused tokens). tenant="" counts calls whose token was not known.',
        samples: rows.flatMap(({ tenant, counts }) =>
          [...counts.responses].sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => {
            const [method = '', route = '', status = ''] = key.split(' ');
            return { labels: { tenant, method, route, status }, value };
          }),
        ),
      },
      {
        name: 'berth_api_request_duration_seconds',
        type: 'histogram',
        help: 'How long the API took to answer, by method and route, since the server started (a command with `wait` or a claim includes its work).',
        samples: rows.flatMap(({ tenant, counts }) =>
          [...counts.latency].sort(([a], [b]) => a.localeCompare(b)).flatMap(([call, l]) => {
            const [method = '', route = ''] = call.split(' ');
            return histogramSamples({ tenant, method, route }, BOUNDS, l.buckets, l.sum, l.count);
          }),
        ),
      },
    ];
  }
}

export function installApiCounts(app: FastifyInstance, counts: ApiRequestCounts): void {
  app.addHook('onResponse', (request, reply, done) => {
    counts.observe(request.principal?.tenantId ?? null, request.method, request.routeOptions.url ?? '(none)', reply.statusCode, reply.elapsedTime / 1000);
    done();
  });
}
