/**
 * ELBv2 target groups for production environments in `service` mode: one per (environment, service),
 * the service's hosts registered in it, and waits on ELB's own view of them (healthy, drained). No
 * load balancers or listeners are made here: attaching a group to one is the operator's job.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DescribeSubnetsCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { CreateTargetGroupCommand, DeleteTargetGroupCommand, DeregisterTargetsCommand, DescribeTargetGroupsCommand, DescribeTargetHealthCommand, ElasticLoadBalancingV2Client } from '@aws-sdk/client-elastic-load-balancing-v2';
import { ModifyTargetGroupCommand, RegisterTargetsCommand, type TargetDescription, type TargetGroup, type TargetHealthDescription } from '@aws-sdk/client-elastic-load-balancing-v2';
import { BerthError, type ErrorCode } from '../../core/errors.js';
import type { OperationOptions } from '../types.js';
import { TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { awsCall, CallCounter, clientConfig, createEc2Client, type RequestHandler } from './sdk.js';

export const TAG_ENVIRONMENT = 'berth:environment';
export const TAG_SERVICE = 'berth:service';

/**
 * Targets per RegisterTargets / DeregisterTargets call. The API documents no per-call maximum (the
 * limits are quotas: 1,000 targets per target group and per ALB by default); 20 is DescribeTags'
 * per-call limit, kept here so that a refused call (e.g. an InvalidTarget in it) holds back at most
 * 20 targets and a partial failure can say which batches went through.
 */
export const TARGET_BATCH = 20;

/** ELBv2: at most 32 characters, alphanumerics and hyphens, no hyphen first or last (moto also refuses `--`). */
const NAME_MAX = 32;
/** 10 base-36 characters ≈ 52 bits: a collision needs ~10^7 groups before it is even 1 % likely. */
const HASH_LEN = 10;
/** Environment and service names go into tags (values allow `_ . : / = + - @`) and messages. */
const PART_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** ELB's AccessDenied arrives unmodelled; its modelled exceptions end in `Exception`, moto's wire codes do not. */
const PERMISSION = new Set(['AccessDenied', 'UnauthorizedOperation', 'UnauthorizedAccess']);
const QUOTA = new Set(['TooManyTargets', 'TooManyTargetGroups', 'TooManyRegistrationsForTargetId', 'TooManyTags']);

/**
 * `<prefix>-<environment>-<service>`, lower-cased, runs of other characters as one hyphen, cut to
 * leave room for a hash of the exact (prefix, environment, service). The hash is always there, so
 * `a-b`/`c` and `a`/`b-c` (same readable part) or `Web`/`web` still get different names; the
 * readable part is only for people. Stable: the same input always gives the same name.
 */
export function targetGroupName(prefix: string, environment: string, service: string): string {
  const readable = `${prefix}-${environment}-${service}`.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  const head = readable.slice(0, NAME_MAX - HASH_LEN - 1).replace(/^-+|-+$/g, '');
  const digest = createHash('sha256').update(JSON.stringify([prefix, environment, service])).digest();
  const hash = (digest.readBigUInt64BE(0) % 36n ** BigInt(HASH_LEN)).toString(36).padStart(HASH_LEN, '0');
  return head ? `${head}-${hash}` : hash;
}

export interface EnsureTargetGroupSpec {
  environment: string;
  service: string;
  /** Where the service listens on each host. */
  port: number;
  protocol: 'HTTP';
  /** The service's readiness path, e.g. `/healthz`. */
  healthCheckPath: string;
  /** Consecutive successes before ELB calls a target healthy, 2-10. Default 5 (ELB's). */
  healthyThreshold?: number;
  /** Seconds between health checks, 5-300. Default 30 (ELB's). */
  intervalS?: number;
}

/** `modified`: its health check was changed to the spec's. */
export interface EnsuredTargetGroup { arn: string; name: string; created: boolean; modified: boolean }

export interface WaitOptions extends OperationOptions { timeoutMs: number }

export interface TargetGroupsOptions {
  /** The VPC of the target groups; default: the first configured subnet's (else a default subnet's), looked up once. */
  vpcId?: string;
  /** For tests: an SDK request handler instead of the network (both clients). */
  requestHandler?: RequestHandler;
  /** First and longest pause between DescribeTargetHealth polls. Default 2 s and 15 s. */
  pollMs?: number;
  maxPollMs?: number;
}

/** One DescribeTargetHealth entry; state `missing` when the instance is not listed at all. */
interface Health { id: string; state: string; reason?: string; description?: string }

export class TargetGroups {
  private readonly elb: ElasticLoadBalancingV2Client;
  private readonly ec2: EC2Client;
  private readonly counter = new CallCounter();
  private vpc: Promise<string> | undefined;

  constructor(
    private readonly cfg: ResolvedAwsConfig,
    private readonly options: TargetGroupsOptions = {},
  ) {
    this.elb = new ElasticLoadBalancingV2Client(clientConfig(cfg, options.requestHandler));
    this.ec2 = createEc2Client(cfg, options.requestHandler);
    this.counter.attach(this.elb);
    this.counter.attach(this.ec2);
    if (options.vpcId) this.vpc = Promise.resolve(options.vpcId);
  }

  /** Calls so far per operation (ELBv2 and EC2; retries not counted). */
  callCounts(): Record<string, number> {
    return this.counter.callCounts();
  }

  attemptCounts(): Record<string, number> {
    return this.counter.attemptCounts();
  }

  nameOf(environment: string, service: string): string {
    checkPart('environment', environment);
    checkPart('service', service);
    return targetGroupName(this.cfg.name, environment, service);
  }

  /**
   * Finds or creates the group. Calls: 1 DescribeTargetGroups when it exists as wanted; + 1
   * ModifyTargetGroup when its health check differs; new: + CreateTargetGroup (+ 1 DescribeSubnets
   * once per process when the VPC is derived). A create that loses a race to another server finds
   * the winner's group.
   */
  async ensure(spec: EnsureTargetGroupSpec, opts?: OperationOptions): Promise<EnsuredTargetGroup> {
    const name = this.nameOf(spec.environment, spec.service);
    const want = healthCheck(spec);
    const vpcId = await this.vpcId(opts);
    let found = await this.describe(name, opts);
    let created = false;
    if (!found) {
      try {
        // The name is cut short and hashed; the tags keep the whole identity, for people and sweeps.
        const Tags = [{ Key: TAG_MANAGED_BY, Value: this.cfg.name }, { Key: TAG_ENVIRONMENT, Value: spec.environment }, { Key: TAG_SERVICE, Value: spec.service }];
        const input = { Name: name, Protocol: spec.protocol, Port: spec.port, VpcId: vpcId, TargetType: 'instance' as const, HealthCheckProtocol: spec.protocol, ...want, Tags };
        const out = await this.call('CreateTargetGroup', name, opts, (abortSignal) => this.elb.send(new CreateTargetGroupCommand(input), { abortSignal }));
        found = out.TargetGroups?.[0];
        created = true;
        this.cfg.logger.info({ targetGroup: name, environment: spec.environment, service: spec.service }, 'target group created');
      } catch (err) {
        // Another server created it between our describe and create (AWS answers a create with the
        // same settings with the existing group, one with other settings with this code).
        if (!hasAwsCode(err, 'DuplicateTargetGroupName', 'DuplicateTargetGroupNameException')) throw err;
        found = await this.describe(name, opts);
      }
    }
    if (!found?.TargetGroupArn) throw new BerthError('internal', `target group ${name} was neither found nor created`, 'Retry; if it persists, look for it in the ELB console.', { targetGroup: name });
    const arn = found.TargetGroupArn;
    if (found.Port !== spec.port || found.Protocol !== spec.protocol || found.VpcId !== vpcId || (found.TargetType ?? 'instance') !== 'instance') {
      const message = `target group ${name} (${spec.environment}/${spec.service}) exists with ${found.Protocol ?? '?'} port ${found.Port ?? '?'} in ${found.VpcId ?? '?'}, not ${spec.protocol} port ${spec.port} in ${vpcId}: ELB cannot change a target group's port, protocol or VPC in place`;
      const hint = 'Register the hosts with a port override (register(arn, ids, port)), or detach the group from its listeners, remove it (remove(environment, service)) and ensure it again.';
      throw new BerthError('conflict', message, hint, { targetGroup: name, targetGroupArn: arn, port: found.Port, wantedPort: spec.port, vpcId: found.VpcId, wantedVpcId: vpcId });
    }
    const modified = !created && differs(found, want);
    if (modified) {
      await this.call('ModifyTargetGroup', name, opts, (abortSignal) => this.elb.send(new ModifyTargetGroupCommand({ TargetGroupArn: arn, ...want }), { abortSignal }));
      this.cfg.logger.info({ targetGroup: name, ...want }, 'target group health check changed');
    }
    return { arn, name, created, modified };
  }

  /** Registers the instances (idempotent), TARGET_BATCH per call; `port` overrides the group's. */
  register(targetGroupArn: string, instanceIds: string[], port?: number, opts?: OperationOptions): Promise<void> {
    return this.batches('RegisterTargets', targetGroupArn, targets(instanceIds, port), opts, (abortSignal, batch) =>
      this.elb.send(new RegisterTargetsCommand({ TargetGroupArn: targetGroupArn, Targets: batch }), { abortSignal }),
    );
  }

  /** Deregisters the instances (ELB then drains them: see waitDrained). Not registered = success. */
  deregister(targetGroupArn: string, instanceIds: string[], port?: number, opts?: OperationOptions): Promise<void> {
    return this.deregisterTargets(targetGroupArn, targets(instanceIds, port), opts);
  }

  /**
   * Polls DescribeTargetHealth (1 call per poll, whatever the number of instances) with back-off
   * until every instance is healthy. Unhealthy, initial, draining or not-yet-listed instances are
   * waited for until the deadline, then one error names each with ELB's reason and description. A
   * group no load balancer uses (Target.NotInUse) fails at once: ELB runs no health checks for it.
   */
  async waitHealthy(targetGroupArn: string, instanceIds: string[], opts: WaitOptions): Promise<void> {
    await this.poll(targetGroupArn, instanceIds, opts, 'healthy', (health) => {
      const notInUse = health.filter((h) => h.reason === 'Target.NotInUse');
      if (notInUse.length > 0) {
        throw new BerthError('invalid_state', `target group ${groupOf(targetGroupArn)} is not used by any load balancer (or not in an Availability Zone of it): ELB does not health-check ${notInUse.map((h) => h.id).join(', ')}`, 'Forward a listener rule of the load balancer to this target group (and enable the hosts\' zones on it), then wait again.', { targetGroupArn, targets: notInUse });
      }
      return health.filter((h) => h.state !== 'healthy');
    });
  }

  /** Polls until none of the instances is registered or draining any more (ELB's deregistration delay, 300 s by default). */
  async waitDrained(targetGroupArn: string, instanceIds: string[], opts: WaitOptions): Promise<void> {
    // `unused`: not registered any more, or in a group no load balancer uses: either way no traffic reaches it.
    await this.poll(targetGroupArn, instanceIds, opts, 'drained', (health) => health.filter((h) => h.state !== 'unused' && h.state !== 'missing'));
  }

  /**
   * Deregisters every target and deletes the group; a group that does not exist is success. A group
   * a load balancer still routes to is refused before anything is deregistered (deregistering would
   * take the service down and ELB would refuse the delete anyway); ELB's own ResourceInUse (a rule
   * added since) says the same.
   */
  async remove(environment: string, service: string, opts?: OperationOptions): Promise<void> {
    const name = this.nameOf(environment, service);
    const found = await this.describe(name, opts);
    const arn = found?.TargetGroupArn;
    if (!arn) return;
    if ((found.LoadBalancerArns ?? []).length > 0) throw inUse(name, arn, found.LoadBalancerArns ?? []);
    const registered = await this.health(arn, opts);
    await this.deregisterTargets(arn, registered.map((h) => h.target), opts);
    // Not found: another server removed it meanwhile, which is what was wanted.
    await this.call('DeleteTargetGroup', name, opts, (abortSignal) => this.elb.send(new DeleteTargetGroupCommand({ TargetGroupArn: arn }), { abortSignal })).catch((err: unknown) => {
      if (!(err instanceof BerthError && err.code === 'not_found')) throw err;
    });
    this.cfg.logger.info({ targetGroup: name, deregistered: registered.length }, 'target group removed');
  }

  close(): void {
    this.elb.destroy();
    this.ec2.destroy();
  }

  /** `pending` gets every entry of the instances (one per registered port; `missing` when none) and returns those not there yet. */
  private async poll(arn: string, instanceIds: string[], opts: WaitOptions, goal: string, pending: (h: Health[]) => Health[]): Promise<void> {
    const ids = [...new Set(instanceIds)];
    const deadline = Date.now() + opts.timeoutMs;
    let base = this.options.pollMs ?? 2_000;
    for (;;) {
      // All targets in one call (no port ambiguity for port overrides); an instance not listed is
      // not registered (or, right after RegisterTargets, not visible yet).
      const all = (await this.health(arn, opts)).map((h) => h.health);
      const left = pending(ids.flatMap((id) => {
        const mine = all.filter((h) => h.id === id);
        return mine.length ? mine : [{ id, state: 'missing', reason: 'Target.NotRegistered', description: 'not listed by DescribeTargetHealth' }];
      }));
      if (left.length === 0) return;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        const list = left.map((h) => `${h.id}: ${h.state}${h.reason ? ` (${h.reason}${h.description ? `: ${h.description}` : ''})` : ''}`).join('; ');
        const n = new Set(left.map((h) => h.id)).size;
        throw new BerthError('deadline_exceeded', `target group ${groupOf(arn)}: ${n} of ${ids.length} instance(s) not ${goal} after ${+(opts.timeoutMs / 1000).toFixed(1)} s — ${list}`, hintFor(goal, left), { targetGroupArn: arn, targets: left });
      }
      try {
        // Jittered so that many waiting environments do not poll in step (Describe* share one token bucket).
        await sleep(Math.min(base * (0.8 + Math.random() * 0.4), remaining), undefined, opts.signal ? { signal: opts.signal } : {});
      } catch (err) {
        throw new BerthError('deadline_exceeded', `waiting for target group ${groupOf(arn)} to be ${goal} was cancelled`, 'Retry if it is still wanted.', { targetGroupArn: arn }, { cause: err });
      }
      base = Math.min(this.options.maxPollMs ?? 15_000, base * 1.5);
    }
  }

  private async health(arn: string, opts: OperationOptions | undefined): Promise<{ target: TargetDescription; health: Health }[]> {
    const out = await this.call('DescribeTargetHealth', groupOf(arn), opts, (abortSignal) => this.elb.send(new DescribeTargetHealthCommand({ TargetGroupArn: arn }), { abortSignal }));
    return (out.TargetHealthDescriptions ?? []).filter((d): d is TargetHealthDescription & { Target: TargetDescription } => Boolean(d.Target?.Id)).map((d) => ({
      target: { Id: d.Target.Id, ...(d.Target.Port !== undefined ? { Port: d.Target.Port } : {}) },
      health: { id: d.Target.Id ?? '', state: d.TargetHealth?.State ?? 'unknown', ...(d.TargetHealth?.Reason ? { reason: d.TargetHealth.Reason } : {}), ...(d.TargetHealth?.Description ? { description: d.TargetHealth.Description } : {}) },
    }));
  }

  private async deregisterTargets(arn: string, list: TargetDescription[], opts: OperationOptions | undefined): Promise<void> {
    const invalid = (err: unknown): boolean => hasAwsCode(err, 'InvalidTarget', 'InvalidTargetException');
    await this.batches('DeregisterTargets', arn, list, opts, async (abortSignal, batch) => {
      const send = (t: TargetDescription[]) => this.elb.send(new DeregisterTargetsCommand({ TargetGroupArn: arn, Targets: t }), { abortSignal });
      try {
        await send(batch);
      } catch (err) {
        // AWS answers a target that is not registered with success, but InvalidTarget for an instance
        // that no longer exists, and moto for any unregistered one (after deregistering those before
        // it only): the batch one by one, so that such a target does not keep the others registered.
        if (!invalid(err)) throw err;
        for (const t of batch.length > 1 ? batch : []) {
          await send([t]).catch((e: unknown) => {
            if (!invalid(e)) throw e;
          });
        }
      }
    });
  }

  private async batches(operation: string, arn: string, list: TargetDescription[], opts: OperationOptions | undefined, run: (signal: AbortSignal, batch: TargetDescription[]) => Promise<unknown>): Promise<void> {
    const done: string[] = [];
    for (let i = 0; i < list.length; i += TARGET_BATCH) {
      const batch = list.slice(i, i + TARGET_BATCH);
      try {
        await this.call(operation, groupOf(arn), opts, (signal) => run(signal, batch));
      } catch (err) {
        if (!(err instanceof BerthError) || done.length === 0) throw err;
        // Retrying is safe (both calls are idempotent); the caller needs to know what went through.
        throw new BerthError(err.code, `${err.message} (after ${done.length} of ${list.length} targets went through)`, err.hint, { ...err.details, done, failed: batch.map((t) => t.Id) }, { cause: err });
      }
      done.push(...batch.map((t) => t.Id ?? ''));
    }
  }

  private async describe(name: string, opts: OperationOptions | undefined): Promise<TargetGroup | undefined> {
    const out = await this.call('DescribeTargetGroups', name, opts, (abortSignal) => this.elb.send(new DescribeTargetGroupsCommand({ Names: [name] }), { abortSignal })).catch((err: unknown) => {
      // ELB answers a name it does not know with an error, not an empty list.
      if (err instanceof BerthError && err.code === 'not_found') return undefined;
      throw err;
    });
    return out?.TargetGroups?.find((g) => g.TargetGroupName === name);
  }

  /** The first configured subnet's VPC, else the default VPC's (a default subnet's): one call, once. */
  private vpcId(opts: OperationOptions | undefined): Promise<string> {
    const first = this.cfg.subnetIds[0];
    this.vpc ??= awsCall(this.ec2, this.cfg, { operation: 'DescribeSubnets' }, opts, (abortSignal) =>
      this.ec2.send(new DescribeSubnetsCommand(first ? { SubnetIds: [first] } : { Filters: [{ Name: 'default-for-az', Values: ['true'] }], MaxResults: 5 }), { abortSignal }),
    ).then((out) => {
      const vpc = out.Subnets?.[0]?.VpcId;
      if (!vpc) throw new BerthError('validation_failed', first ? `subnet ${first} has no VPC` : 'no subnet is configured and the region has no default VPC', 'Set subnetIds (or the target groups\' vpcId).');
      return vpc;
    });
    this.vpc.catch(() => (this.vpc = undefined));
    return this.vpc;
  }

  /** awsCall, with ELBv2's own errors mapped here (errors.ts names ec2:/autoscaling: permissions only). */
  private call<T>(operation: string, group: string, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return awsCall(this.elb, this.cfg, { operation, group }, opts, async (signal) => {
      try {
        return await run(signal);
      } catch (err) {
        throw (await this.elbError(err, operation, group)) ?? err;
      }
    });
  }

  private async elbError(err: unknown, operation: string, group: string): Promise<BerthError | undefined> {
    if (!(err instanceof Error) || err instanceof BerthError) return undefined;
    const code = err.name.replace(/Exception$/, '');
    const meta = (err as { $metadata?: { requestId?: string; attempts?: number } }).$metadata;
    const details = { operation, awsCode: err.name, targetGroup: group, ...(meta?.requestId ? { requestId: meta.requestId } : {}), ...(meta?.attempts ? { attempts: meta.attempts } : {}) };
    const make = (c: ErrorCode, message: string, hint: string): BerthError => new BerthError(c, message, hint, details, { cause: err });
    const region = this.cfg.region ?? (await this.elb.config.region().catch(() => 'unknown'));
    if (PERMISSION.has(code)) {
      // Tags given to CreateTargetGroup are authorised as AddTags too.
      const perms = [`elasticloadbalancing:${operation}`, ...(operation === 'CreateTargetGroup' ? ['elasticloadbalancing:AddTags'] : [])];
      return make('driver_unavailable', `AWS refused ${operation}: the credentials berth runs with lack the permission ${perms.join(' (or ')}${perms.length > 1 ? ')' : ''} in region ${region}`, `Grant ${perms.join(', ')} to the IAM role or user berth runs as (see src/drivers/aws/README.md for the whole policy); \`aws sts decode-authorization-message\` decodes AWS's encoded reason.`);
    }
    if (code === 'Throttling') return make('driver_unavailable', `AWS throttled ${operation} in region ${region}${meta?.attempts ? ` and was still throttling after ${meta.attempts} attempts` : ''}`, 'Too many Elastic Load Balancing API calls for this account and region: fewer concurrent deploys or waits, raise maxAttempts, or ask AWS for a higher limit.');
    if (code === 'TargetGroupNotFound') return make('not_found', `target group ${group} does not exist in region ${region}`, 'Ensure it first (ensure); it may have been removed.');
    if (code === 'ResourceInUse') return inUse(group, undefined, [], false, err);
    if (code === 'InvalidTarget') return make('validation_failed', `ELB refused a target of ${group}: ${err.message}`, 'Register only running instances of the target group\'s VPC (and of an instance type ELB supports).');
    if (QUOTA.has(code)) return make('launch_failed', `AWS refused ${operation} on ${group}: an Elastic Load Balancing quota is reached (${code}: ${err.message})`, 'Remove unused target groups or targets, or ask AWS for a higher quota (targets per target group / per load balancer, target groups per region).');
    if (code === 'InvalidConfigurationRequest' || code === 'ValidationError') return make('validation_failed', `AWS refused ${operation} on ${group}: ${err.message}`, 'Check the port (1-65535), health check path, interval (5-300 s) and threshold (2-10).');
    return undefined;
  }
}

function inUse(name: string, arn: string | undefined, loadBalancers: string[], targetsLeft = true, cause?: unknown): BerthError {
  const by = loadBalancers.length ? `load balancer(s) ${loadBalancers.join(', ')}` : 'a listener or rule of a load balancer';
  const left = targetsLeft ? 'Its targets were left registered.' : 'Its targets were deregistered already: register them again if it is to keep serving.';
  const details = { targetGroup: name, ...(arn ? { targetGroupArn: arn } : {}), loadBalancerArns: loadBalancers, awsCode: 'ResourceInUse' };
  return new BerthError('conflict', `target group ${name} is still used by ${by}: ELB refuses to delete a target group a listener forwards to (ResourceInUse)`, `Remove the listener rules or default actions that forward to it (or the load balancer), then remove it again. ${left}`, details, cause === undefined ? undefined : { cause });
}

type HealthCheck = { HealthCheckPath: string; HealthyThresholdCount: number; HealthCheckIntervalSeconds: number; HealthCheckTimeoutSeconds: number };

function healthCheck(spec: EnsureTargetGroupSpec): HealthCheck {
  const bad = (what: string, hint: string): BerthError => new BerthError('validation_failed', `target group for ${spec.environment}/${spec.service}: ${what}`, hint);
  if (spec.protocol !== 'HTTP') throw bad(`protocol ${String(spec.protocol)} is not supported`, 'Use HTTP.');
  if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65_535) throw bad(`port ${spec.port} is not a port`, 'Use 1-65535.');
  if (!spec.healthCheckPath.startsWith('/') || spec.healthCheckPath.length > 1024) throw bad(`health check path ${JSON.stringify(spec.healthCheckPath)} is not a path`, 'Use the service\'s ready path, starting with /, at most 1024 characters.');
  const healthy = spec.healthyThreshold ?? 5;
  const interval = spec.intervalS ?? 30;
  if (!Number.isInteger(healthy) || healthy < 2 || healthy > 10) throw bad(`healthy threshold ${healthy} is out of range`, 'Use 2-10.');
  if (!Number.isInteger(interval) || interval < 5 || interval > 300) throw bad(`health check interval ${interval} s is out of range`, 'Use 5-300 s.');
  // ELB wants the timeout below the interval; 5 s is its HTTP default.
  return { HealthCheckPath: spec.healthCheckPath, HealthyThresholdCount: healthy, HealthCheckIntervalSeconds: interval, HealthCheckTimeoutSeconds: Math.min(5, interval - 1) };
}

function differs(g: TargetGroup, want: HealthCheck): boolean {
  return g.HealthCheckPath !== want.HealthCheckPath || g.HealthyThresholdCount !== want.HealthyThresholdCount || g.HealthCheckIntervalSeconds !== want.HealthCheckIntervalSeconds || g.HealthCheckTimeoutSeconds !== want.HealthCheckTimeoutSeconds;
}

function targets(instanceIds: string[], port: number | undefined): TargetDescription[] {
  return [...new Set(instanceIds)].map((Id) => (port === undefined ? { Id } : { Id, Port: port }));
}

/** `arn:…:targetgroup/<name>/<id>` → name, for messages. */
function groupOf(arn: string): string {
  return /:targetgroup\/([^/]+)\//.exec(arn)?.[1] ?? arn;
}

function hintFor(goal: string, left: Health[]): string {
  if (goal === 'drained') return 'ELB keeps a deregistered target draining for the group\'s deregistration delay (deregistration_delay.timeout_seconds, 300 s by default): wait longer or lower it.';
  const reasons = new Set(left.map((h) => h.reason));
  const all: [string[], string][] = [
    [['Target.ResponseCodeMismatch'], 'the health check path answered with an unexpected status: check healthCheckPath and that the service is ready'],
    [['Target.Timeout', 'Target.FailedHealthChecks'], 'the load balancer could not reach the port: the service must listen on it and the hosts\' security group must allow the load balancer\'s'],
    [['Target.NotRegistered'], 'register the instances first'],
    [['Elb.InitialHealthChecking', 'Elb.RegistrationInProgress'], 'ELB needs healthyThreshold × interval seconds before a new target is healthy: wait longer or lower them'],
    [['Target.InvalidState'], 'the instance is stopped or not running'],
  ];
  const hints = all.filter(([codes]) => codes.some((c) => reasons.has(c)));
  return hints.length ? `${hints.map(([, h]) => h).join('; ')}.` : 'See each target\'s state and reason (as ELB reported them at the last poll).';
}

function checkPart(what: string, value: string): void {
  if (!PART_RE.test(value)) throw new BerthError('validation_failed', `${what} name ${JSON.stringify(value)} cannot name a target group`, 'Use 1-128 letters, digits, dots, hyphens or underscores, starting with a letter or digit.');
}
