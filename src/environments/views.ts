/** Environments as the API and the CLI show them. */
import type { RouteView } from '../router/router.js';
import type { EnvironmentRow } from '../store/schema.js';

export interface EnvironmentView {
  name: string;
  stack: string;
  pool: string;
  mode: string;
  ref: string | null;
  /** When the ref is a slug: the sha256 of the one it runs (read at its create or deploy; its hosts are replaced, added and woken with it). */
  slugDigest: string | null;
  /** Review hosts, or hosts of every service without a count of its own. */
  replicas: number;
  /** Service mode: services with a count of their own. */
  serviceReplicas: Record<string, number>;
  user: string | null;
  /** Names only: values may be secrets. */
  settings: string[];
  state: string;
  stateReason: string;
  url: string | null;
  hosts: Array<{ hostId: string; service: string | null; generation: number }>;
  route: { service: string; port: number; healthPath: string; generation: number } | null;
  /** Milliseconds of the last create, deploy, wake, heal or scale (`operation`): claim, init, services, ready, route, total (a scale down: drain, release). */
  timings: Record<string, number>;
  operation: string | null;
  /** The router's view of its backends (health, requests), when it has a route. */
  backends: RouteView['backends'] | null;
  expiresAt: string | null;
  /** Only requests with a berth token that may see it get through (access.ts). */
  private: boolean;
  /** Sleeps after this long without a request through the router (ms); null: never. */
  sleepAfterMs: number | null;
  /** The latest request through the router since the server started (null: none). */
  lastRequestAt: string | null;
  createdAt: string;
  updatedAt: string;
}

export function toEnvironmentView(row: EnvironmentRow, url: string | null, route: RouteView | undefined): EnvironmentView {
  const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
  return {
    name: row.name,
    stack: row.stack,
    pool: row.pool,
    mode: row.mode,
    ref: row.ref,
    slugDigest: row.slug_digest,
    replicas: row.replicas,
    serviceReplicas: row.service_replicas,
    user: row.owner,
    settings: Object.keys(row.settings).sort(),
    state: row.state,
    stateReason: row.state_reason,
    url,
    hosts: row.hosts,
    route: row.route,
    timings: row.timings,
    operation: row.operation,
    backends: route?.backends ?? null,
    expiresAt: iso(row.expires_at),
    private: row.private,
    sleepAfterMs: row.sleep_after_ms,
    lastRequestAt: route?.lastRequestAt ?? null,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}
