/**
 * The SSM Run Command channel of the AWS driver: run shell commands on instances through the SSM
 * agent (AWS-RunShellScript) instead of berth's own agent. AWS's semantics, minus SSM's known
 * faults: commands stop at the first failure and report each exit code (ssm-status.ts), an
 * instance whose agent is not registered gets an error that says so instead of InvalidInstanceId,
 * an invocation not visible yet right after the send is Pending, and a SendCommand whose answer
 * was lost is never sent twice. Every call goes through awsCall (retries, timeout, signal).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CancelCommandCommand, DescribeInstanceInformationCommand, GetCommandInvocationCommand, ListCommandsCommand, SendCommandCommand, SSMClient, type SSMClientConfig } from '@aws-sdk/client-ssm';
import { BerthError, type ErrorCode } from '../../core/errors.js';
import { mapLimit } from '../../core/map-limit.js';
import { isTerminal } from '../../core/command-status.js';
import type { OperationOptions } from '../types.js';
import type { ResolvedAwsConfig } from './config.js';
import { awsErrorCode, hasAwsCode, NETWORK, PERMISSION, THROTTLING } from './errors.js';
import { awsCall, CallCounter, clientConfig, type RequestHandler } from './sdk.js';
import { failFastScript, readInvocation, type SsmInvocation } from './ssm-status.js';

export type { SsmInvocation } from './ssm-status.js';

export const SSM_DOCUMENT = 'AWS-RunShellScript';
/** SendCommand takes at most 50 instance ids, and one DescribeInstanceInformation page holds 50. */
export const MAX_INSTANCES = 50;
const INSTANCE_RE = /^(i|mi)-[0-9a-f]{8,17}$/;
/** AWS-RunShellScript's executionTimeout allows 1 s to 48 h; SendCommand's TimeoutSeconds 30 s to 30 days. */
export const EXECUTION_TIMEOUT_S = [1, 172_800] as const;
export const DELIVERY_TIMEOUT_S = [30, 2_592_000] as const;
const MAX_COMMENT = 100;
const COMMAND_PAGES = 4;
const FIRST_POLL_MS = 200;
const MAX_POLL_MS = 2_000;
/** Parallel GetCommandInvocation calls per wait round: enough for 50 instances, few enough not to throttle. */
const POLL_CONCURRENCY = 10;

const REGISTRATION_HINT =
  'The instance needs an instance profile whose role has the AmazonSSMManagedInstanceCore policy, the SSM agent installed and running (systemctl status amazon-ssm-agent), and HTTPS access to the ssm, ssmmessages and ec2messages endpoints of its region (internet egress or VPC endpoints). A just-launched instance takes a minute or two to register.';

export interface SsmCommandDoc {
  commands: string[];
  workingDirectory?: string;
  executionTimeoutS: number;
  /** How long SSM keeps trying to deliver the command to an agent (SendCommand's TimeoutSeconds). */
  deliveryTimeoutS: number;
  env?: Record<string, string>;
  comment?: string;
  /** See ScriptSpec.tags (ssm-status.ts): commands of a host get its tags as BERTH_TAGS. */
  tags?: { json?: string | undefined; file: string };
}

export interface SendOptions extends OperationOptions {
  /** The caller ran checkAgents on these instances moments ago (saves one call per send to a host it just checked). */
  skipAgentCheck?: boolean;
}

export interface SentCommand {
  commandId: string;
  instanceIds: string[];
  sentAt: number;
}

export interface StatusOptions extends OperationOptions {
  /** When the command was sent (ms since epoch), for a command this channel object did not send itself. */
  sentAt?: number;
}

export interface WaitOptions extends StatusOptions {
  /** First interval between polls; it grows by half each round up to 2 s. Default 200 ms. */
  pollMs?: number;
}

export interface SsmChannelOptions {
  /** For tests: an SDK request handler instead of the network. */
  requestHandler?: RequestHandler;
}

type RetryStrategy = NonNullable<SSMClientConfig['retryStrategy']>;
type RetryStrategyV2 = Extract<RetryStrategy, { refreshRetryTokenForRetry: unknown }>;

/** Failures where the request provably never reached SSM: no connection was made. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * SendCommand has no client token: a retry after a timeout or a 5xx may run the commands a second
 * time. Its client retries only what SSM refused outright (throttling) or never received, through
 * the other client's strategy (same back-off and retry quota).
 */
function throttlingRetriesOnly(base: () => Promise<RetryStrategy>): RetryStrategyV2 {
  let resolved: RetryStrategyV2 | undefined;
  const strategy = async (): Promise<RetryStrategyV2> => {
    const s = await base();
    if (!('refreshRetryTokenForRetry' in s)) throw new Error('the SSM client has no v2 retry strategy');
    resolved = s;
    return s;
  };
  return {
    acquireInitialRetryToken: async (scope) => (await strategy()).acquireInitialRetryToken(scope),
    refreshRetryTokenForRetry: async (token, info) => {
      const code = (info.error as { code?: unknown } | undefined)?.code;
      const neverSent = typeof code === 'string' && NEVER_SENT.has(code);
      if (info.errorType !== 'THROTTLING' && !neverSent) throw new Error('SendCommand is retried only when SSM cannot have run it');
      return (await strategy()).refreshRetryTokenForRetry(token, info);
    },
    // A token always comes from acquireInitialRetryToken, which resolved the strategy.
    recordSuccess: (token) => resolved?.recordSuccess(token),
  };
}

interface Call {
  operation: string;
  instanceIds: string[];
  commandId?: string;
}

export class SsmChannel {
  private readonly ssm: SSMClient;
  /** SendCommand only: see throttlingRetriesOnly. */
  private readonly sender: SSMClient;
  private readonly counter = new CallCounter();
  /** When this object sent each recent command: InvocationDoesNotExist within the grace is Pending. */
  private readonly sent = new Map<string, number>();

  constructor(
    private readonly cfg: ResolvedAwsConfig,
    options: SsmChannelOptions = {},
  ) {
    const config = { ...clientConfig(cfg, options.requestHandler), ...(cfg.ssmEndpoint ? { endpoint: cfg.ssmEndpoint } : {}) };
    this.ssm = new SSMClient(config);
    this.sender = new SSMClient({ ...config, retryStrategy: throttlingRetriesOnly(() => this.ssm.config.retryStrategy()) });
    this.counter.attach(this.ssm);
    this.counter.attach(this.sender);
  }

  callCounts(): Record<string, number> {
    return this.counter.callCounts();
  }

  attemptCounts(): Record<string, number> {
    return this.counter.attemptCounts();
  }

  /**
   * One DescribeInstanceInformation: the PingStatus (Online, ConnectionLost, Inactive) of each
   * instance registered with SSM; an instance not registered is absent.
   */
  async agentPings(instanceIds: string[], opts?: OperationOptions): Promise<Map<string, string>> {
    const ids = checkInstances(instanceIds);
    const info = await this.call({ operation: 'DescribeInstanceInformation', instanceIds: ids }, opts, (abortSignal) =>
      this.ssm.send(new DescribeInstanceInformationCommand({ Filters: [{ Key: 'InstanceIds', Values: ids }], MaxResults: MAX_INSTANCES }), { abortSignal }),
    );
    return new Map((info.InstanceInformationList ?? []).map((i) => [i.InstanceId ?? '', i.PingStatus ?? 'unknown']));
  }

  /** The hint for an agent that is not registered or not online. */
  static readonly registrationHint = REGISTRATION_HINT;

  /**
   * Commands sent to one instance whose comment starts with `commentPrefix` (ListCommands, all
   * pages, newest first): how a control plane that restarted finds what it had sent.
   */
  async commandsFor(instanceId: string, commentPrefix: string, opts?: OperationOptions): Promise<{ commandId: string; comment: string; status: string }[]> {
    const [id] = checkInstances([instanceId]);
    const out: { commandId: string; comment: string; status: string }[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await this.call({ operation: 'ListCommands', instanceIds: [instanceId] }, opts, (abortSignal) =>
        this.ssm.send(new ListCommandsCommand({ InstanceId: id, MaxResults: 50, ...(token ? { NextToken: token } : {}) }), { abortSignal }),
      );
      for (const c of page.Commands ?? []) {
        if (c.CommandId && c.Comment?.startsWith(commentPrefix)) out.push({ commandId: c.CommandId, comment: c.Comment, status: c.Status ?? '' });
      }
      token = page.NextToken;
      // SSM keeps 30 days of history; what a restart needs is among the newest.
    } while (token && ++pages < COMMAND_PAGES);
    return out;
  }

  /** One DescribeInstanceInformation: every instance must be registered with SSM and Online. */
  async checkAgents(instanceIds: string[], opts?: OperationOptions): Promise<void> {
    const ids = checkInstances(instanceIds);
    const ping = await this.agentPings(ids, opts);
    const problems = ids.filter((id) => ping.get(id) !== 'Online').map((id) => ({ id, ping: ping.get(id) }));
    if (problems.length === 0) return;
    const what = problems.map((p) => (p.ping === undefined ? `the SSM agent on ${p.id} is not registered with SSM` : `the SSM agent on ${p.id} is not online (PingStatus ${p.ping})`));
    throw new BerthError('host_not_connected', `${what.join('; ')} (region ${await this.region()})`, REGISTRATION_HINT, {
      operation: 'DescribeInstanceInformation',
      agents: Object.fromEntries(problems.map((p) => [p.id, p.ping ?? 'not registered'])),
    });
  }

  /** Checks the agents (unless told not to), then one SendCommand of the fail-fast script. */
  async send(instanceIds: string[], doc: SsmCommandDoc, opts: SendOptions = {}): Promise<SentCommand> {
    const ids = checkInstances(instanceIds);
    const script = failFastScript(doc);
    const execution = checkSeconds('executionTimeoutS', doc.executionTimeoutS, EXECUTION_TIMEOUT_S);
    const delivery = checkSeconds('deliveryTimeoutS', doc.deliveryTimeoutS, DELIVERY_TIMEOUT_S);
    if (doc.comment !== undefined && doc.comment.length > MAX_COMMENT) {
      throw new BerthError('validation_failed', `the SSM command comment is ${doc.comment.length} characters long; SSM allows ${MAX_COMMENT}`, 'Shorten the comment.');
    }
    if (!opts.skipAgentCheck) await this.checkAgents(ids, opts);
    const sentAt = Date.now();
    const out = await this.call({ operation: 'SendCommand', instanceIds: ids }, opts, (abortSignal) =>
      this.sender.send(
        new SendCommandCommand({
          InstanceIds: ids,
          DocumentName: SSM_DOCUMENT,
          Parameters: {
            commands: [script],
            executionTimeout: [String(execution)],
            ...(doc.workingDirectory !== undefined ? { workingDirectory: [doc.workingDirectory] } : {}),
          },
          TimeoutSeconds: delivery,
          ...(doc.comment !== undefined ? { Comment: doc.comment } : {}),
        }),
        { abortSignal },
      ),
    );
    const commandId = out.Command?.CommandId;
    if (!commandId) throw new BerthError('internal', 'SSM accepted SendCommand but returned no command id', 'Look for the command with `aws ssm list-commands`; report this.');
    this.remember(commandId, sentAt);
    return { commandId, instanceIds: ids, sentAt };
  }

  /** One GetCommandInvocation. Not visible yet within the grace after the send: Pending. */
  async status(commandId: string, instanceId: string, opts: StatusOptions = {}): Promise<SsmInvocation> {
    try {
      const out = await this.call({ operation: 'GetCommandInvocation', instanceIds: [instanceId], commandId }, opts, (abortSignal) =>
        this.ssm.send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }), { abortSignal }),
      );
      return readInvocation(commandId, instanceId, out);
    } catch (err) {
      // SSM is eventually consistent: right after SendCommand the invocation (even the command) may not exist yet.
      const sentAt = opts.sentAt ?? this.sent.get(commandId);
      if (hasAwsCode(err, 'InvocationDoesNotExist', 'InvalidCommandId') && sentAt !== undefined && Date.now() - sentAt < this.cfg.visibilityGraceMs) {
        return { ...readInvocation(commandId, instanceId, { Status: 'Pending' }), ssmStatus: '', reason: 'SSM does not show the invocation yet (it was sent moments ago)' };
      }
      if (!hasAwsCode(err, 'InvocationDoesNotExist')) throw err;
      throw new BerthError('command_not_found', `SSM has no invocation of command ${commandId} on instance ${instanceId}`, 'Check the command id and that the command was sent to this instance (aws ssm list-command-invocations --command-id …).', {
        ...(err instanceof BerthError ? err.details : {}),
        commandId,
        instanceId,
      }, { cause: err });
    }
  }

  /** Polls every invocation until all are terminal (200 ms, growing to 2 s between rounds). */
  async wait(commandId: string, instanceIds: string[], opts: WaitOptions = {}): Promise<SsmInvocation[]> {
    const ids = [...new Set(instanceIds)];
    const done = new Map<string, SsmInvocation>();
    let delay = opts.pollMs ?? FIRST_POLL_MS;
    const cap = Math.max(MAX_POLL_MS, delay);
    for (;;) {
      const open = ids.filter((id) => !done.has(id));
      const polled = await mapLimit(open, POLL_CONCURRENCY, (id) => this.status(commandId, id, opts));
      for (const inv of polled) if (isTerminal(inv.status)) done.set(inv.instanceId, inv);
      if (done.size === ids.length) return ids.map((id) => done.get(id)).filter((inv): inv is SsmInvocation => inv !== undefined);
      try {
        await sleep(delay, undefined, opts.signal ? { signal: opts.signal } : {});
      } catch (err) {
        throw new BerthError('deadline_exceeded', `waiting for SSM command ${commandId} was cancelled`, 'The command goes on running on the instances: cancel it if it is no longer wanted.', { commandId }, { cause: err });
      }
      delay = Math.min(cap, Math.round(delay * 1.5));
    }
  }

  /** One CancelCommand: SSM stops the invocations that have not finished (finished ones stay as they are). */
  async cancel(commandId: string, instanceIds: string[], opts?: OperationOptions): Promise<void> {
    const ids = checkInstances(instanceIds);
    await this.call({ operation: 'CancelCommand', instanceIds: ids, commandId }, opts, (abortSignal) =>
      this.ssm.send(new CancelCommandCommand({ CommandId: commandId, InstanceIds: ids }), { abortSignal }),
    );
  }

  close(): void {
    this.ssm.destroy();
    this.sender.destroy();
  }

  private remember(commandId: string, sentAt: number): void {
    for (const [id, at] of this.sent) if (sentAt - at > this.cfg.visibilityGraceMs) this.sent.delete(id);
    this.sent.set(commandId, sentAt);
  }

  private async region(): Promise<string> {
    return this.cfg.region ?? (await this.ssm.config.region().catch(() => 'unknown'));
  }

  private async call<T>(call: Call, opts: OperationOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await awsCall(this.ssm, this.cfg, { operation: call.operation }, opts, run);
    } catch (err) {
      throw ssmError(err, call, await this.region());
    }
  }
}

function checkInstances(instanceIds: string[]): string[] {
  const ids = [...new Set(instanceIds)];
  if (ids.length === 0) throw new BerthError('validation_failed', 'an SSM command needs at least one instance', 'Give the instance ids to run on.');
  if (ids.length > MAX_INSTANCES) throw new BerthError('validation_failed', `SSM takes at most ${MAX_INSTANCES} instances per command (got ${ids.length})`, `Send in batches of ${MAX_INSTANCES}.`);
  const bad = ids.filter((id) => !INSTANCE_RE.test(id));
  if (bad.length) throw new BerthError('validation_failed', `not an instance id: ${bad.join(', ')}`, 'Give EC2 instance ids (i-0123456789abcdef0) or SSM managed node ids (mi-…).');
  return ids;
}

function checkSeconds(what: string, value: number, [min, max]: readonly [number, number]): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BerthError('validation_failed', `${what} must be a whole number of seconds from ${min} to ${max} (got ${value})`, `SSM accepts ${min}–${max} s.`);
  }
  return value;
}

/**
 * awsCall's errors in SSM's terms: its own codes, `ssm:` permissions, SSM's rate limits, and an
 * endpoint that answers with something that is not an AWS answer (an emulator lacking the call).
 */
function ssmError(err: unknown, call: Call, region: string): unknown {
  if (!(err instanceof BerthError)) return err;
  const code = awsErrorCode(err) ?? '';
  const cause = err.cause as { code?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number } } | undefined;
  const details = { ...err.details, instanceIds: call.instanceIds, ...(call.commandId ? { commandId: call.commandId } : {}) };
  const make = (berthCode: ErrorCode, message: string, hint: string): BerthError => new BerthError(berthCode, message, hint, details, { cause: err.cause });
  const on = call.instanceIds.join(', ');
  // A lost SendCommand answer leaves its outcome unknown; it is not retried (throttlingRetriesOnly).
  const unknownOutcome = call.operation === 'SendCommand' ? ` SSM may have accepted the command before the answer was lost: look for it (aws ssm list-commands --instance-id ${call.instanceIds[0] ?? ''}) before sending it again.` : '';

  if (code === 'InvalidInstanceId' || code === 'InvalidInstanceInformationFilterValue') {
    return make('host_not_connected', `the SSM agent on ${on} is not registered/online in region ${region}, or the instance is not running (SSM refused ${call.operation}: ${code})`, REGISTRATION_HINT);
  }
  if (code === 'InvalidCommandId') return make('command_not_found', `SSM has no command ${call.commandId ?? ''} in region ${region}`, 'Check the command id; SSM keeps command history for 30 days.');
  if (['ValidationException', 'InvalidDocument', 'InvalidParameters', 'MaxDocumentSizeExceeded', 'DuplicateInstanceId', 'UnsupportedPlatformType', 'InvalidDocumentVersion'].includes(code)) {
    return make('validation_failed', `SSM refused ${call.operation}: ${code}: ${err.message}`, 'The commands may be too long for one SSM command (split them), or the instance is not Linux.');
  }
  if (PERMISSION.has(code)) {
    return make('driver_unavailable', `AWS refused ${call.operation}: the credentials berth runs with lack the permission ssm:${call.operation} in region ${region}`, `Grant ssm:${call.operation} (and ssm:DescribeInstanceInformation, ssm:SendCommand on the document ${SSM_DOCUMENT} and the instances, ssm:GetCommandInvocation, ssm:CancelCommand) to the IAM role or user berth runs as.`);
  }
  if (THROTTLING.has(code)) return make(err.code, err.message, 'Too many SSM API calls for this account and region: poll less often, send to more instances per command, raise maxAttempts, or ask AWS for a higher SSM rate limit.');
  if (NETWORK.has(code) || (typeof cause?.code === 'string' && NETWORK.has(cause.code))) {
    return make(err.code, err.message, `Check network access to the SSM endpoint (proxy, VPC endpoint for ssm, DNS) and the endpoint setting.${unknownOutcome}`);
  }
  const status = cause?.$metadata?.httpStatusCode;
  if (code === 'SyntaxError' || (typeof cause?.message === 'string' && cause.message.includes('Deserialization error'))) {
    return make('driver_unavailable', `the SSM endpoint answered ${call.operation} in region ${region} with${status ? ` HTTP ${status} and` : ''} a body that is not an AWS answer`, `An emulator that does not implement ${call.operation}, or a proxy in the way: check the endpoint setting.${unknownOutcome}`);
  }
  if (unknownOutcome && (err.code === 'deadline_exceeded' || err.code === 'internal')) return make(err.code, err.message, `${err.hint}${unknownOutcome}`);
  return err;
}
