/**
 * The one place AWS calls go through: a client with the SDK's standard retry strategy, connection
 * and request timeouts, a middleware that counts calls per operation, and a wrapper that bounds each
 * call (retries included) by the driver's timeout and the caller's AbortSignal and turns failures
 * into berth errors.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { AutoScalingClient } from '@aws-sdk/client-auto-scaling';
import { EC2Client } from '@aws-sdk/client-ec2';
import type { OperationOptions } from '../types.js';
import type { ResolvedAwsConfig } from './config.js';
import { toBerthError, type CallContext } from './errors.js';

/** A request handler for tests; production uses the SDK's own Node handler. */
export type RequestHandler = NonNullable<ConstructorParameters<typeof EC2Client>[0]>['requestHandler'];

/** How long to wait for a TCP connection before the attempt counts as failed (and is retried). */
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * Calls made on behalf of one operation (a claim's move), by operation name: what runs inside
 * `callTally.run(map, …)` is counted into `map` as well, whatever else runs at the same time.
 * Work started inside but not waited for runs in `callTally.exit(…)` and is not counted.
 */
export const callTally = new AsyncLocalStorage<Map<string, number>>();

export class CallCounter {
  private readonly calls = new Map<string, number>();
  private readonly attempts = new Map<string, number>();

  /**
   * Calls are counted in the initialize step (once per send, whatever the retries); attempts in
   * the deserialize step, which the retry middleware (finalizeRequest) runs once per attempt. The
   * claim path's budget is in calls; attempts show what throttling costs.
   */
  attach(client: { middlewareStack: unknown }): void {
    const bump = (map: Map<string, number>, op: string): void => void map.set(op, (map.get(op) ?? 0) + 1);
    // Both clients' stacks take the same middleware; TypeScript cannot call a method of a union of generics.
    const stack = client.middlewareStack as EC2Client['middlewareStack'];
    stack.add(
      (next, context) => (args) => {
        const op = operationName(context.commandName);
        bump(this.calls, op);
        const tally = callTally.getStore();
        if (tally) bump(tally, op);
        return next(args);
      },
      { step: 'initialize', name: 'berthCallCounter', priority: 'high' },
    );
    stack.add(
      (next, context) => (args) => {
        bump(this.attempts, operationName(context.commandName));
        return next(args);
      },
      { step: 'deserialize', name: 'berthAttemptCounter' },
    );
  }

  callCounts(): Record<string, number> {
    return Object.fromEntries([...this.calls].sort(([a], [b]) => a.localeCompare(b)));
  }

  attemptCounts(): Record<string, number> {
    return Object.fromEntries([...this.attempts].sort(([a], [b]) => a.localeCompare(b)));
  }
}

function operationName(commandName: string | undefined): string {
  return (commandName ?? 'Unknown').replace(/Command$/, '');
}

export function createEc2Client(cfg: ResolvedAwsConfig, requestHandler?: RequestHandler): EC2Client {
  return new EC2Client(clientConfig(cfg, requestHandler));
}

/** Same region, endpoint, credentials, retries and timeouts as the EC2 client (moto serves both on one endpoint). */
export function createAutoScalingClient(cfg: ResolvedAwsConfig, requestHandler?: RequestHandler): AutoScalingClient {
  return new AutoScalingClient(clientConfig(cfg, requestHandler));
}

/** The config every AWS client of the driver is made with (SSM, ELBv2... take the same). */
export function clientConfig(cfg: ResolvedAwsConfig, requestHandler: RequestHandler | undefined) {
  return {
    ...(cfg.region ? { region: cfg.region } : {}),
    ...(cfg.endpoint ? { endpoint: cfg.endpoint } : {}),
    ...(cfg.credentials ? { credentials: cfg.credentials } : {}),
    retryMode: 'standard',
    maxAttempts: cfg.maxAttempts,
    // One attempt may not take the whole call's budget, or a hung connection would leave no time to retry.
    requestHandler: requestHandler ?? { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: Math.max(1_000, Math.floor(cfg.callTimeoutMs / 2)) },
  } satisfies NonNullable<ConstructorParameters<typeof EC2Client>[0]>;
}

export type CallInfo = Omit<CallContext, 'cancelled' | 'timedOut' | 'timeoutMs' | 'region'>;

/**
 * Runs one AWS call: `run` gets the signal to pass as the SDK's `abortSignal`. The signal fires on
 * the caller's abort or after callTimeoutMs, whichever is first; the SDK stops its retries and
 * their back-off on it.
 */
export async function awsCall<T>(client: { config: { region: () => Promise<string> } }, cfg: ResolvedAwsConfig, info: CallInfo, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const timeout = AbortSignal.timeout(cfg.callTimeoutMs);
  const signal = opts?.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  try {
    return await run(signal);
  } catch (err) {
    const region = cfg.region ?? (await client.config.region().catch(() => 'unknown'));
    throw toBerthError(err, { ...info, region, cancelled: opts?.signal?.aborted === true, timedOut: timeout.aborted, timeoutMs: cfg.callTimeoutMs });
  }
}
