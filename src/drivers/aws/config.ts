/**
 * Configuration of the AWS driver and every name it derives from it. Like the local driver's
 * cgroupName, `name` prefixes everything the driver creates and tags every instance, so two drivers
 * (two berth installations, or a test next to a real one) never touch each other's resources.
 */
import type { EC2ClientConfig } from '@aws-sdk/client-ec2';
import { BerthError } from '../../core/errors.js';
import { IMAGE_AGENT_DIR } from '../../images/file-steps.js';

/** Structured logger; pino's Logger satisfies it. */
export interface AwsDriverLogger {
  debug(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface AwsDriverConfig {
  /** Region; default: the SDK's standard chain (AWS_REGION, the profile's region). */
  region?: string;
  /** Another endpoint than AWS's own, for emulators (moto) and VPC endpoints. */
  endpoint?: string;
  /** Default: the SDK's standard chain (environment, profile, SSO, instance role...). */
  credentials?: EC2ClientConfig['credentials'];
  /** AMI every host boots from unless its spec names one (`spec.image` = `ami-…`). */
  imageId: string;
  /** e.g. `t3.micro`. */
  instanceType: string;
  /** Subnets hosts are spread over, round-robin. Empty: the default VPC's. */
  subnetIds?: string[];
  /** Security groups of every host. Empty: the subnet VPC's default group. */
  securityGroupIds?: string[];
  /** IAM instance profile of every host: its name, or its ARN. */
  instanceProfile?: string;
  /** Prefix of everything the driver creates and value of its `berth:managed-by` tag. Default `berth`. */
  name?: string;
  /** Attempts per AWS call, retries included (SDK standard retry strategy). Default 3. */
  maxAttempts?: number;
  /** Bound on one AWS call, its retries included. Default 30000 ms. */
  callTimeoutMs?: number;
  /**
   * How long after a launch an instance EC2 says does not exist is still taken for one being
   * launched: EC2's API is eventually consistent, and a describe right after RunInstances can miss
   * the new instance. Default 60000 ms.
   */
  visibilityGraceMs?: number;
  /** What the host's boot script starts and keeps running. Default: node and the agent baked into the AMI. */
  agentCommand?: string[];
  /** Where the control plane listens for agents. Default 0.0.0.0 (instances reach it over the VPC); tests use loopback. */
  agentListenHost?: string;
  /**
   * How commands reach hosts: `agent` (default) = berth's agent, started by the boot script, dials
   * the control plane; `ssm` = the SSM agent already on the AMI runs them (SendCommand with
   * AWS-RunShellScript), and the boot script starts no berth agent. A pool's
   * `template.aws.commandChannel` overrides it for the pool's hosts.
   */
  commandChannel?: CommandChannel;
  /** Another endpoint for SSM than `endpoint` (an SSM VPC endpoint, or an emulator of SSM alone). */
  ssmEndpoint?: string;
  /** How often the SSM channel asks which hosts' SSM agents are online. Default 5000 ms. */
  ssmPollMs?: number;
  /**
   * How long an SSM host may take from its launch until its SSM agent is registered and Online
   * (berth's agent enrols in a second; SSM registration takes a minute or more). Default 10 min.
   */
  ssmRegistrationTimeoutMs?: number;
  /** How long an instance may take from its launch until berth's agent on it enrols (EC2 boots take a minute). Default 5 min. */
  bootTimeoutMs?: number;
  logger?: AwsDriverLogger;
}

export const COMMAND_CHANNELS = ['agent', 'ssm'] as const;
export type CommandChannel = (typeof COMMAND_CHANNELS)[number];

export interface ResolvedAwsConfig {
  region: string | undefined;
  endpoint: string | undefined;
  credentials: EC2ClientConfig['credentials'];
  imageId: string;
  instanceType: string;
  subnetIds: string[];
  securityGroupIds: string[];
  instanceProfile: string | undefined;
  name: string;
  maxAttempts: number;
  callTimeoutMs: number;
  visibilityGraceMs: number;
  agentCommand: string[];
  agentListenHost: string;
  commandChannel: CommandChannel;
  ssmEndpoint: string | undefined;
  ssmPollMs: number;
  ssmRegistrationTimeoutMs: number;
  bootTimeoutMs: number;
  logger: AwsDriverLogger;
}

/** Tag keys the driver puts on everything it launches. */
export const TAG_HOST_ID = 'berth:host-id';
export const TAG_MANAGED_BY = 'berth:managed-by';

export const DEFAULT_AGENT_COMMAND = ['node', `${IMAGE_AGENT_DIR}/berth-agent.cjs`];

/** Launch template names allow more, but the name also goes into tags and messages: keep it plain. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const AMI_RE = /^ami-[0-9a-f]{8,17}$/;

const silentLogger: AwsDriverLogger = { debug: () => undefined, info: () => undefined, warn: () => undefined };

function badConfig(message: string, hint: string): BerthError {
  return new BerthError('validation_failed', message, hint);
}

export function isAmiId(value: string): boolean {
  return AMI_RE.test(value);
}

export function resolveAwsConfig(config: AwsDriverConfig): ResolvedAwsConfig {
  const name = config.name ?? 'berth';
  if (!NAME_RE.test(name)) throw badConfig(`AWS driver name ${JSON.stringify(name)} is not valid`, 'Use 1-63 letters, digits, hyphens or underscores, starting with a letter or digit.');
  if (!isAmiId(config.imageId)) throw badConfig(`image ${JSON.stringify(config.imageId)} is not an AMI id`, 'Give the id of an AMI in the driver\'s region, e.g. ami-0123456789abcdef0.');
  if (!config.instanceType) throw badConfig('the AWS driver needs an instance type', 'Set instanceType, e.g. t3.micro.');
  const positive = (what: string, value: number | undefined, fallback: number): number => {
    if (value === undefined) return fallback;
    if (!Number.isFinite(value) || value <= 0) throw badConfig(`AWS driver ${what} must be a positive number (got ${value})`, `Remove ${what} to use the default (${fallback}).`);
    return value;
  };
  const agentCommand = config.agentCommand ?? DEFAULT_AGENT_COMMAND;
  if (agentCommand.length === 0) throw badConfig('the AWS driver\'s agent command is empty', 'Remove agentCommand to use the default.');
  const commandChannel = config.commandChannel ?? 'agent';
  if (!COMMAND_CHANNELS.includes(commandChannel)) throw badConfig(`command channel ${JSON.stringify(commandChannel)} is not known`, `Use one of: ${COMMAND_CHANNELS.join(', ')}.`);
  return {
    region: config.region,
    endpoint: config.endpoint,
    credentials: config.credentials,
    imageId: config.imageId,
    instanceType: config.instanceType,
    subnetIds: [...(config.subnetIds ?? [])],
    securityGroupIds: [...(config.securityGroupIds ?? [])],
    instanceProfile: config.instanceProfile,
    name,
    maxAttempts: Math.floor(positive('maxAttempts', config.maxAttempts, 3)),
    callTimeoutMs: positive('callTimeoutMs', config.callTimeoutMs, 30_000),
    visibilityGraceMs: positive('visibilityGraceMs', config.visibilityGraceMs, 60_000),
    agentCommand,
    agentListenHost: config.agentListenHost ?? '0.0.0.0',
    commandChannel,
    ssmEndpoint: config.ssmEndpoint,
    ssmPollMs: positive('ssmPollMs', config.ssmPollMs, 5_000),
    ssmRegistrationTimeoutMs: positive('ssmRegistrationTimeoutMs', config.ssmRegistrationTimeoutMs, 10 * 60_000),
    bootTimeoutMs: positive('bootTimeoutMs', config.bootTimeoutMs, 5 * 60_000),
    logger: config.logger ?? silentLogger,
  };
}

export function launchTemplateName(cfg: ResolvedAwsConfig): string {
  return `${cfg.name}-hosts`;
}
