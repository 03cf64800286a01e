/**
 * An environment's route in the router: its routed service's port on each of its hosts, health
 * checked on the service's ready path, and for a private environment the guard that lets in only
 * tokens that may see it (access.ts). Set again from the store after a restart or a change of access.
 */
import { BerthError } from '../core/errors.js';
import type { RouteSpec, RouteView } from '../router/router.js';
import type { EnvHostRecord, EnvironmentRow, HostRow } from '../store/schema.js';
import type { EnvironmentAccess } from './access.js';
import type { PlacedHost, RouteTarget } from './placement.js';

export interface EnvironmentRoutesDeps {
  router: { setRoute(name: string, spec: RouteSpec): RouteView };
  hosts: { get(tenantId: string, id: string): Promise<HostRow | undefined> };
  access?: EnvironmentAccess | undefined;
  /** Health checks of a route, ms; default 1000. */
  healthIntervalMs?: number | undefined;
}

/** Which environment a route is for, and whether it is private. */
export interface RoutedEnvironment {
  tenantId: string;
  name: string;
  private: boolean;
}

export class EnvironmentRoutes {
  constructor(private readonly deps: EnvironmentRoutesDeps) {}

  /** Routes `env` to `hosts` now. */
  set(env: RoutedEnvironment, hosts: readonly PlacedHost[], target: RouteTarget, ref: string | null): void {
    this.deps.router.setRoute(env.name, {
      backends: hosts.map((h) => ({ id: h.hostId, url: `http://${h.ip}:${target.port}`, label: target.service })),
      healthPath: target.healthPath,
      healthIntervalMs: this.deps.healthIntervalMs ?? 1000,
      info: { ref },
      ...this.guardOf(env),
    });
  }

  /** A private environment's route guard; throws (a 400) when this server cannot keep one private. */
  guardOf(env: RoutedEnvironment): Pick<RouteSpec, 'guard'> {
    if (!env.private) return {};
    if (!this.deps.access) throw new BerthError('validation_failed', `environment ${env.name} cannot be private on this server: it has no access control`, 'Leave --private out.');
    return { guard: this.deps.access.guard(env.tenantId, env.name) };
  }

  /** The route again from the store: the hosts of the routed generation that still have an address. */
  async restore(row: Pick<EnvironmentRow, 'tenant_id' | 'name' | 'hosts' | 'ref' | 'private'>, target: RouteTarget & { generation?: number }): Promise<void> {
    const gen = target.generation ?? Math.max(0, ...row.hosts.map((h) => h.generation));
    const hosts = await this.addressed(row.tenant_id, row.hosts.filter((h) => h.generation === gen && (h.service === null || h.service === target.service)));
    this.set({ tenantId: row.tenant_id, name: row.name, private: row.private }, hosts, target, row.ref);
  }

  /** `hosts` with their addresses; a host gone meanwhile (terminated, or no address) is left out. */
  async addressed(tenantId: string, hosts: readonly EnvHostRecord[]): Promise<PlacedHost[]> {
    const out: PlacedHost[] = [];
    for (const record of hosts) {
      const host = await this.deps.hosts.get(tenantId, record.hostId);
      if (host?.ip && host.state !== 'terminated') out.push({ ...record, ip: host.ip });
    }
    return out;
  }
}
