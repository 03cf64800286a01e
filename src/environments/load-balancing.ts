/**
 * An optional hook for a driver's own load balancing of environments in `service` mode (on AWS:
 * one ELBv2 target group per environment and service). Environments only say which hosts serve
 * which service and when; what a "group" is stays the driver's. Without the hook (the local driver)
 * environments run as before: the router is the only load balancer.
 *
 * When it is called: `attach` once a service's hosts are ready and before the route switches (or
 * the create answers), for a create and for a deploy's new hosts; `detach` for a deploy's old hosts,
 * only after the new ones were attached (and for the new ones of a deploy that failed); `remove`
 * when the environment goes (rm, TTL, a create that failed or was cut short by a restart). A host
 * that may still be registered (a detach or remove failed, or a restart cut its deploy short) is
 * never reset into its pool for reuse: it is terminated, so that traffic meant for this environment
 * never reaches a host the pool hands to someone else.
 */
import { errorMessage } from '../core/errors.js';
import type { StackSpec } from '../stacks/spec.js';
import type { EnvHostRecord, HostRow } from '../store/schema.js';

export interface BalancedEnvironment {
  tenantId: string;
  name: string;
}

export interface BalancedService {
  name: string;
  /** Where the service listens on each of its hosts. */
  port: number;
  /** Its ready http path, when its ready check is http on that port; the hook's default otherwise. */
  healthPath?: string;
}

export interface BalancedHost {
  id: string;
  /** The driver's own data of the host (on AWS `{ instanceId, … }`). */
  driverData: Record<string, unknown>;
}

export interface ServiceLoadBalancing {
  /** Registers the hosts for the service and resolves once they take traffic (or the deadline, epoch ms, has passed: then it throws). */
  attach(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[], opts: { deadline: number; signal?: AbortSignal }): Promise<void>;
  /** Deregisters the hosts and resolves once no traffic reaches them any more. */
  detach(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[], opts?: { signal?: AbortSignal }): Promise<void>;
  /** Everything of the environment's services goes; services never attached are no error. */
  remove(env: BalancedEnvironment, services: readonly string[], opts?: { signal?: AbortSignal }): Promise<void>;
}

/**
 * The services of a stack a load balancer can reach: those with a port (`ports[0]`, else the ready
 * http check's). A service whose ready check is TCP only is taken for one that does not speak HTTP
 * (a database) and left out, as is one that listens nowhere (a worker).
 */
export function balancedServices(stack: StackSpec): { services: BalancedService[]; skipped: { name: string; why: string }[] } {
  const services: BalancedService[] = [];
  const skipped: { name: string; why: string }[] = [];
  for (const s of Object.values(stack.services)) {
    const http = s.ready?.http;
    const port = s.ports[0] ?? http?.port;
    if (port === undefined) skipped.push({ name: s.name, why: 'it has no port (no ports: and no ready http check)' });
    else if (!http && s.ready?.tcp) skipped.push({ name: s.name, why: `its ready check is TCP only, so port ${port} is taken for one that does not speak HTTP` });
    else services.push({ name: s.name, port, ...(http && http.port === port ? { healthPath: http.path ?? '/' } : {}) });
  }
  return { services, skipped };
}

export interface LoadBalancedServicesDeps {
  hosts: { get(tenantId: string, id: string): Promise<HostRow | undefined> };
  log: (line: string) => void;
}

/** What EnvironmentService does with the hook: which hosts of which service, and what to do when it fails. */
export class LoadBalancedServices {
  constructor(
    private readonly hook: ServiceLoadBalancing,
    private readonly deps: LoadBalancedServicesDeps,
  ) {}

  /**
   * Attaches every balanced service's hosts among `placed`, the services in parallel. Each service's
   * name is added to `attempted` before its call, so that a caller undoing a failed create or deploy
   * knows which services may have registered hosts. Errors propagate (the create or deploy fails).
   */
  async attach(env: BalancedEnvironment, stack: StackSpec, placed: readonly EnvHostRecord[], opts: { deadline: number; signal?: AbortSignal }, attempted: Set<string>): Promise<void> {
    const { services, skipped } = balancedServices(stack);
    for (const s of skipped) {
      if (placed.some((h) => h.service === s.name)) this.deps.log(`environment ${env.name}: service ${s.name} is not load balanced: ${s.why}`);
    }
    await Promise.all(
      services.map(async (service) => {
        const records = placed.filter((h) => h.service === service.name);
        if (records.length === 0) return;
        attempted.add(service.name);
        await this.hook.attach(env, service, await this.hostsOf(env.tenantId, records), opts);
      }),
    );
  }

  /**
   * Detaches `records` (hosts of earlier or failed generations) from their services, as `stack`
   * defines them now; a service it no longer balances loses its group altogether. Never throws:
   * returns the ids of hosts that may still be registered (each failure logged), for the caller to
   * terminate instead of reusing.
   */
  async detach(env: BalancedEnvironment, stack: StackSpec, records: readonly EnvHostRecord[], why: string): Promise<Set<string>> {
    const { services } = balancedServices(stack);
    const stuck = new Set<string>();
    const names = [...new Set(records.flatMap((h) => (h.service === null ? [] : [h.service])))];
    await Promise.all(
      names.map(async (name) => {
        const mine = records.filter((h) => h.service === name);
        const service = services.find((s) => s.name === name);
        try {
          if (service) await this.hook.detach(env, service, await this.hostsOf(env.tenantId, mine));
          else await this.hook.remove(env, [name]);
        } catch (err) {
          this.deps.log(`${why}: detaching service ${name} from its load balancing: ${errorMessage(err)}; its hosts will be terminated, not reused`);
          for (const h of mine) stuck.add(h.hostId);
        }
      }),
    );
    return stuck;
  }

  /** Removes the groups of the services of `records`; false (logged) when that failed. */
  async remove(env: BalancedEnvironment, records: readonly EnvHostRecord[], why: string): Promise<boolean> {
    const names = [...new Set(records.flatMap((h) => (h.service === null ? [] : [h.service])))];
    if (names.length === 0) return true;
    try {
      await this.hook.remove(env, names);
      return true;
    } catch (err) {
      this.deps.log(`${why}: removing the load balancing of ${names.join(', ')}: ${errorMessage(err)}; its hosts will be terminated, not reused`);
      return false;
    }
  }

  private async hostsOf(tenantId: string, records: readonly EnvHostRecord[]): Promise<BalancedHost[]> {
    return Promise.all(
      records.map(async (h) => {
        const row = await this.deps.hosts.get(tenantId, h.hostId);
        return { id: h.hostId, driverData: row?.driver_data ?? {} };
      }),
    );
  }
}
