/**
 * Environments' load balancing on AWS (src/environments/load-balancing.ts) on top of TargetGroups:
 * each service of a `service` mode environment gets the ELBv2 target group named for (environment,
 * service), its hosts' instances are registered in it, and an attach returns once ELB calls them
 * healthy; a detach deregisters and waits until ELB has drained them; `env rm` deletes the groups.
 * Pointing a load balancer's listener at a group stays the operator's job (see target-groups.ts).
 */
import { BerthError, errorMessage } from '../../core/errors.js';
import type { BalancedEnvironment, BalancedHost, BalancedService, ServiceLoadBalancing } from '../../environments/load-balancing.js';
import type { ResolvedAwsConfig } from './config.js';
import { TargetGroups, type TargetGroupsOptions } from './target-groups.js';

const INSTANCE_ID_RE = /^i-[0-9a-f]{8,17}$/;

export interface AwsServiceLoadBalancingOptions {
  /**
   * Health check of the groups it makes. Defaults 2 checks 5 s apart: a new host counts as healthy
   * ~10 s after it is registered, where ELB's own defaults (5 × 30 s) would hold every create and
   * deploy for 2.5 minutes.
   */
  healthyThreshold?: number;
  intervalS?: number;
  /**
   * How long a detach waits for ELB to drain the hosts. Default 330 s: ELB's default deregistration
   * delay (300 s) and some; lower the groups' `deregistration_delay.timeout_seconds` for faster deploys.
   */
  drainTimeoutMs?: number;
  /** What it tells people (a group no load balancer uses, hosts without an instance); default the driver's logger. */
  log?: (line: string) => void;
  targetGroups?: TargetGroupsOptions;
}

export class AwsServiceLoadBalancing implements ServiceLoadBalancing {
  readonly groups: TargetGroups;
  /** Group ARNs by environment and service, so that a detach after an attach costs no lookup. */
  private readonly arns = new Map<string, string>();
  private readonly log: (line: string) => void;

  constructor(
    cfg: ResolvedAwsConfig,
    private readonly options: AwsServiceLoadBalancingOptions = {},
  ) {
    this.groups = new TargetGroups(cfg, options.targetGroups);
    this.log = options.log ?? ((line) => cfg.logger.warn({}, line));
  }

  async attach(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[], opts: { deadline: number; signal?: AbortSignal }): Promise<void> {
    const ids = this.instanceIds(env, service, hosts);
    if (ids.length === 0) return;
    const signal = opts.signal ? { signal: opts.signal } : {};
    // Ensured at each attach (1 call when it is as wanted): a deploy may change the health check or the port.
    const arn = await this.group(env, service, opts.signal, true);
    await this.groups.register(arn, ids, undefined, signal);
    try {
      await this.groups.waitHealthy(arn, ids, { timeoutMs: Math.max(0, opts.deadline - Date.now()), ...signal });
    } catch (err) {
      // ELB health-checks only the targets of a group a listener forwards to: until the operator
      // points one at it, the hosts are registered and nothing more can be waited for.
      if (!(err instanceof BerthError && err.code === 'invalid_state')) throw err;
      this.log(`environment ${env.name}: service ${service.name}: ${err.message}; the instances are registered and take traffic once a listener forwards to the group (${err.hint})`);
    }
  }

  async detach(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[], opts: { signal?: AbortSignal } = {}): Promise<void> {
    const ids = this.instanceIds(env, service, hosts);
    if (ids.length === 0) return;
    const signal = opts.signal ? { signal: opts.signal } : {};
    const arn = await this.group(env, service, opts.signal, false);
    await this.groups.deregister(arn, ids, undefined, signal);
    await this.groups.waitDrained(arn, ids, { timeoutMs: this.options.drainTimeoutMs ?? 330_000, ...signal });
  }

  /** Every service's group is tried; one error names each that failed. */
  async remove(env: BalancedEnvironment, services: readonly string[], opts: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = opts.signal ? { signal: opts.signal } : {};
    const results = await Promise.allSettled(
      services.map(async (service) => {
        await this.groups.remove(env.name, service, signal);
        this.arns.delete(key(env, service));
      }),
    );
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [{ service: services[i] ?? '', err: r.reason as unknown }] : []));
    const [first] = failed;
    if (!first) return;
    if (failed.length === 1 && first.err instanceof BerthError) throw first.err;
    const hint = first.err instanceof BerthError ? first.err.hint : 'Retry; the target groups left are tagged berth:environment in the ELB console.';
    throw new BerthError(first.err instanceof BerthError ? first.err.code : 'driver_unavailable', `the target groups of environment ${env.name} were not all removed: ${failed.map((f) => `${f.service}: ${errorMessage(f.err)}`).join('; ')}`, hint, { environment: env.name, services: failed.map((f) => f.service) }, { cause: first.err });
  }

  close(): void {
    this.groups.close();
  }

  /** The group of (environment, service), made or brought to the service's health check. */
  private async group(env: BalancedEnvironment, service: BalancedService, signal: AbortSignal | undefined, fresh: boolean): Promise<string> {
    const cached = fresh ? undefined : this.arns.get(key(env, service));
    if (cached) return cached;
    const spec = {
      environment: env.name,
      service: service.name,
      port: service.port,
      protocol: 'HTTP' as const,
      healthCheckPath: service.healthPath ?? '/',
      healthyThreshold: this.options.healthyThreshold ?? 2,
      intervalS: this.options.intervalS ?? 5,
    };
    try {
      const { arn } = await this.groups.ensure(spec, signal ? { signal } : {});
      this.arns.set(key(env, service), arn);
      return arn;
    } catch (err) {
      if (err instanceof BerthError && err.code === 'conflict' && err.details?.['wantedPort'] !== undefined) {
        // A deploy that moved the service to another port: ELB cannot change a group's port.
        const hint = `Keep service ${service.name} on port ${String(err.details['port'])}, or remove the environment (berth env rm ${env.name}; a listener still forwarding to the group must go first) and create it again.`;
        throw new BerthError('conflict', err.message, hint, err.details, { cause: err });
      }
      throw err;
    }
  }

  /** The hosts' instances; a host that is not one (no instance id in its driver data) is left out, and said so. */
  private instanceIds(env: BalancedEnvironment, service: BalancedService, hosts: BalancedHost[]): string[] {
    const ids: string[] = [];
    for (const host of hosts) {
      const id = host.driverData['instanceId'];
      if (typeof id === 'string' && INSTANCE_ID_RE.test(id)) ids.push(id);
      else this.log(`environment ${env.name}: service ${service.name}: host ${host.id} has no EC2 instance id, so it is not in the service's target group`);
    }
    return ids;
  }
}

function key(env: BalancedEnvironment, service: BalancedService | string): string {
  return JSON.stringify([env.name, typeof service === 'string' ? service : service.name]);
}
