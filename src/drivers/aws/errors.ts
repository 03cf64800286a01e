/**
 * AWS errors turned into berth's typed errors: a stable code, a message that says what is wrong in
 * berth's terms (which permission, which image in which region) instead of the SDK's text, and a
 * hint. The AWS error code, operation and request id stay in `details` for whoever must dig further.
 */
import { BerthError, errorMessage, type ErrorCode } from '../../core/errors.js';

export interface CallContext {
  /** Operation, e.g. `RunInstances`. */
  operation: string;
  /** IAM service prefix of the operation; default `ec2`. */
  service?: 'ec2' | 'autoscaling';
  /** Set for Auto Scaling calls: the group and the instance they are about, for messages. */
  group?: string;
  instanceId?: string;
  region: string;
  /** The caller's signal had fired: the call was cancelled, not failed. */
  cancelled: boolean;
  /** The driver's own per-call timeout had fired. */
  timedOut: boolean;
  timeoutMs: number;
  /** Set for RunInstances: what was launched from what, for messages. */
  imageId?: string;
  instanceProfile?: string;
  hostId?: string;
}

interface SdkErrorShape {
  name: string;
  message: string;
  code?: string;
  $metadata?: { requestId?: string; attempts?: number; httpStatusCode?: number };
}

export const PERMISSION = new Set(['UnauthorizedOperation', 'AccessDenied', 'AccessDeniedException', 'UnauthorizedAccess', 'Blocked', 'OptInRequired']);
const CREDENTIALS = new Set(['AuthFailure', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'ExpiredToken', 'RequestExpired', 'UnrecognizedClientException', 'CredentialsProviderError', 'MissingAuthenticationToken']);
export const THROTTLING = new Set(['RequestLimitExceeded', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestThrottled', 'RequestThrottledException', 'SlowDown']);
const CAPACITY = new Set(['InsufficientInstanceCapacity', 'InstanceLimitExceeded', 'VcpuLimitExceeded', 'MaxSpotInstanceCountExceeded', 'InsufficientFreeAddressesInSubnet']);
/** Auto Scaling's answers to a group being changed by another request at the same moment. */
const CONTENTION = new Set(['ResourceContention', 'ScalingActivityInProgress', 'ResourceInUse']);
export const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'TimeoutError']);

function seconds(ms: number): string {
  return ms % 1000 === 0 ? String(ms / 1000) : (ms / 1000).toFixed(1);
}

function shape(err: unknown): SdkErrorShape {
  if (err instanceof Error) {
    const e = err as Error & { code?: unknown; $metadata?: SdkErrorShape['$metadata'] };
    return { name: err.name, message: err.message, ...(typeof e.code === 'string' ? { code: e.code } : {}), ...(e.$metadata ? { $metadata: e.$metadata } : {}) };
  }
  return { name: 'Error', message: errorMessage(err) };
}

/** The AWS error code (`InvalidInstanceID.NotFound`...) of an SDK error or of a berth error made from one. */
export function awsErrorCode(err: unknown): string | undefined {
  if (err instanceof BerthError) return typeof err.details?.['awsCode'] === 'string' ? err.details['awsCode'] : undefined;
  return err instanceof Error ? err.name : undefined;
}

export function hasAwsCode(err: unknown, ...codes: string[]): boolean {
  const code = awsErrorCode(err);
  return code !== undefined && codes.includes(code);
}

export function toBerthError(err: unknown, ctx: CallContext): BerthError {
  if (err instanceof BerthError) return err;
  const e = shape(err);
  const code = e.name;
  const service = ctx.service ?? 'ec2';
  const details: Record<string, unknown> = {
    operation: ctx.operation,
    awsCode: code,
    ...(ctx.hostId ? { hostId: ctx.hostId } : {}),
    ...(ctx.group ? { group: ctx.group } : {}),
    ...(ctx.instanceId ? { instanceId: ctx.instanceId } : {}),
  };
  if (e.$metadata?.requestId) details['requestId'] = e.$metadata.requestId;
  if (e.$metadata?.attempts) details['attempts'] = e.$metadata.attempts;
  const make = (berthCode: ErrorCode, message: string, hint: string): BerthError => new BerthError(berthCode, message, hint, details, { cause: err });
  const subject = ctx.hostId && ctx.operation === 'RunInstances' ? `launch of host ${ctx.hostId}` : `AWS call ${ctx.operation}`;

  // The caller's signal first: a cancelled call often surfaces as an AbortError, sometimes as what
  // the aborted socket did; either way the caller asked for it.
  if (ctx.cancelled) return make('deadline_exceeded', `${subject} was cancelled`, 'Retry if it is still wanted.');
  if (ctx.timedOut || code === 'AbortError') {
    return make('deadline_exceeded', `${subject} did not complete within ${seconds(ctx.timeoutMs)} s (region ${ctx.region})`, 'Check the network path to the AWS endpoint; raise callTimeoutMs if AWS is merely slow.');
  }
  if (PERMISSION.has(code)) {
    const extra = [
      ctx.operation === 'RunInstances' ? 'ec2:CreateTags (tags at launch)' : undefined,
      ctx.operation === 'RunInstances' && ctx.instanceProfile ? `iam:PassRole on the role of instance profile ${ctx.instanceProfile}` : undefined,
      // A group launches with the caller's rights on the launch template (and AWS makes its
      // service-linked role on the account's first group).
      ctx.operation === 'CreateAutoScalingGroup' || ctx.operation === 'UpdateAutoScalingGroup' ? 'ec2:RunInstances and ec2:CreateTags with the launch template' : undefined,
      ctx.operation === 'CreateAutoScalingGroup' ? 'iam:CreateServiceLinkedRole (first group of the account)' : undefined,
    ].filter((x): x is string => x !== undefined);
    return make(
      'driver_unavailable',
      `AWS refused ${ctx.operation}: the credentials berth runs with lack the permission ${service}:${ctx.operation}${extra.length ? ` (or ${extra.join(', or ')})` : ''} in region ${ctx.region}`,
      `Grant ${service}:${ctx.operation}${extra.length ? `, ${extra.join(', ')}` : ''} to the IAM role or user berth runs as (see src/drivers/aws/README.md for the whole policy); \`aws sts decode-authorization-message\` decodes AWS's encoded reason.`,
    );
  }
  if (CREDENTIALS.has(code)) {
    return make('driver_unavailable', `AWS did not accept berth's credentials for ${ctx.operation} (${code}: ${e.message})`, 'Check the credentials the SDK finds (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, the instance role) and that the clock is right.');
  }
  if (THROTTLING.has(code)) {
    const attempts = e.$metadata?.attempts;
    return make(
      'driver_unavailable',
      `AWS throttled ${ctx.operation} in region ${ctx.region}${attempts ? ` and was still throttling after ${attempts} attempts` : ''}`,
      `Too many ${service === 'ec2' ? 'EC2' : 'Auto Scaling'} API calls for this account and region: lower the rate (smaller pools, fewer concurrent launches or claims), raise maxAttempts, or ask AWS for a higher API rate limit.`,
    );
  }
  if (code.startsWith('InvalidAMIID')) {
    const image = ctx.imageId ?? 'the configured AMI';
    return make('image_not_found', `the image ${image} does not exist in region ${ctx.region} (or this account may not use it)`, 'AMIs are regional: use an AMI id of this region (aws ec2 describe-images --image-ids …), or copy the AMI to it.');
  }
  if (code.startsWith('InvalidSubnetID') || code.startsWith('InvalidGroup') || code.startsWith('InvalidSecurityGroupID')) {
    return make('validation_failed', `a subnet or security group of the AWS driver does not exist in region ${ctx.region} (${code}: ${e.message})`, 'Check subnetIds and securityGroupIds: they must exist in the driver\'s region and belong to the same VPC.');
  }
  if (code === 'InvalidParameterValue' && /iamInstanceProfile/i.test(e.message)) {
    return make('validation_failed', `the IAM instance profile ${ctx.instanceProfile ?? ''} does not exist or cannot be used (${e.message})`, 'Check instanceProfile (a name or ARN); a profile created moments ago may need a few seconds before EC2 sees it.');
  }
  if (CAPACITY.has(code)) {
    return make('launch_failed', `EC2 could not launch an instance: ${code} (${e.message})`, 'Try another instance type or subnet (availability zone), or ask AWS to raise the account\'s limit.');
  }
  if (service === 'autoscaling') {
    const mapped = autoScalingError(code, e.message, ctx, make);
    if (mapped) return mapped;
  }
  if (NETWORK.has(code) || (e.code !== undefined && NETWORK.has(e.code))) {
    return make('driver_unavailable', `berth could not reach the AWS endpoint for ${ctx.operation} in region ${ctx.region} (${e.code ?? code}: ${e.message})`, 'Check network access to the EC2 endpoint (proxy, VPC endpoint, DNS) and the endpoint setting.');
  }
  const berthCode: ErrorCode = ctx.operation === 'RunInstances' ? 'launch_failed' : 'internal';
  return make(berthCode, `AWS ${ctx.operation} failed: ${code}: ${e.message}`, 'See the AWS error code in the details; retry if the cause was transient.');
}

const NOT_IN_GROUP = 'notInGroup';

/** Whether an Auto Scaling call was refused because the instance is not (or no longer) in the group. */
export function isNotInGroup(err: unknown): boolean {
  return err instanceof BerthError && err.details?.[NOT_IN_GROUP] === true;
}

/** Auto Scaling's own codes; its ValidationError covers many cases, told apart by the message. */
function autoScalingError(code: string, message: string, ctx: CallContext, make: (c: ErrorCode, m: string, h: string) => BerthError): BerthError | undefined {
  const group = ctx.group ? `Auto Scaling group ${ctx.group}` : 'an Auto Scaling group';
  if (CONTENTION.has(code)) {
    // moto answers ResourceContention also when an attach would exceed the group's max size.
    return make('conflict', `${ctx.operation} on ${group} collided with another change to it (${code}: ${message})`, 'Retry: another request was changing the group; if it persists, check the group\'s max size and scaling activities.');
  }
  if (code === 'AlreadyExists') return make('conflict', `${group} already exists`, 'Another server created it at the same moment; use it.');
  if (code === 'LimitExceeded') return make('launch_failed', `AWS refused ${ctx.operation}: the account's limit of Auto Scaling groups is reached (${message})`, 'Remove unused groups (claiming groups that ended) or ask AWS for a higher Auto Scaling group quota.');
  if (code !== 'ValidationError') return undefined;
  if (/not found/i.test(message)) return make('not_found', `${group} does not exist in region ${ctx.region}`, 'Ensure the group first (ensurePoolGroup / ensureUserGroup); it may have been removed.');
  if (/not part of|is not in/i.test(message)) {
    const err = make('conflict', `instance ${ctx.instanceId ?? '?'} is not in ${group}: another claim took it, or it left the group`, 'Pick another instance of the pool.');
    if (err.details) err.details[NOT_IN_GROUP] = true;
    return err;
  }
  if (/max/i.test(message)) return make('conflict', `${ctx.operation} would take ${group} over its max size (${message})`, 'Raise the group\'s max size first.');
  return make('validation_failed', `AWS refused ${ctx.operation} on ${group}: ${message}`, 'See the message; the instance must be running, in a subnet of the group, and in no other group.');
}
