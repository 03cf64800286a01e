/**
 * The agent <-> server wire protocol: JSON text frames over one WebSocket that the agent dials out
 * (hosts open no inbound port). This module is the only code the agent and the server share; both
 * sides validate every frame they receive against these schemas.
 *
 * Delivery guarantees: the server may send `run` for the same invocation more than once (after a
 * reconnect it cannot know whether the first one arrived); the agent journals every invocation before
 * starting it and never runs one twice. The agent resends a `result` until the server `ack`s it.
 */
// zod/mini: the same validation as zod with a fraction of its size; the agent loads this module at
// every host start, where the full zod would add ~40 ms and several MB.
import * as z from 'zod/mini';
import { shellAgentFrames, shellServerFrames } from './shell.js';

export const PROTOCOL_VERSION = 1;
export const AGENT_PATH = '/v1/agent';
export const HOST_ID_HEADER = 'x-berth-host-id';

export const runShellScriptParameters = z.object({
  commands: z.array(z.string()).check(z.minLength(1)),
  workingDirectory: z.optional(z.string()),
  executionTimeoutSeconds: z.number().check(z.positive()),
  env: z.optional(z.record(z.string(), z.string())),
  /** TERM, then KILL this long after (on timeout or cancel); absent: the agent's default. An older agent ignores it. */
  killGraceSeconds: z.optional(z.number().check(z.nonnegative())),
});
export type RunShellScriptParameters = z.infer<typeof runShellScriptParameters>;

export const streamCapture = z.object({ text: z.string(), truncated: z.boolean(), bytes: z.int().check(z.nonnegative()) });

export const invocationResult = z.object({
  // berth's agent reports the first four; a backend's agent (SSM) can also fail to take a command up.
  status: z.enum(['Success', 'Failed', 'TimedOut', 'Cancelled', 'DeliveryTimedOut', 'Undeliverable']),
  statusDetail: z.string(),
  exitCodes: z.array(z.int()),
  stdout: streamCapture,
  stderr: streamCapture,
  startedAt: z.string(),
  finishedAt: z.string(),
});
export type InvocationResult = z.infer<typeof invocationResult>;

const knownInvocation = z.object({
  invocationId: z.string(),
  state: z.enum(['running', 'finished']),
  startedAt: z.optional(z.string()),
  result: z.optional(invocationResult),
});
export type KnownInvocation = z.infer<typeof knownInvocation>;

// ---------------------------------------------------------------------------------------------
// Supervised services (the agent's supervisor, src/agent/supervisor/). The server resolves each
// service's effective configuration (layered env, mode from tags) and sends the agent a flat spec.

/** A service name is also its log, FIFO and state file name: keep it a safe file name. */
export const SERVICE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** A variable name a POSIX shell can export; the supervisor refuses a service env with any other. */
export const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const SERVICE_STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGKILL'] as const;
/** Signals a service may take as "apply your new configuration" (the default action of each is to exit). */
export const SERVICE_RELOAD_SIGNALS = ['SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const;
export const SERVICE_STATES = ['starting', 'ready', 'backoff', 'stopping', 'stopped', 'failed'] as const;

const tcpPort = z.int().check(z.gte(1), z.lte(65535));

export const serviceReadyCheck = z.object({
  /** GET http://127.0.0.1:port/path answers 2xx or 3xx. */
  http: z.optional(z.object({ port: tcpPort, path: z._default(z.string().check(z.startsWith('/')), '/') })),
  /** A TCP connection to 127.0.0.1:port is accepted. */
  tcp: z.optional(z.object({ port: tcpPort })),
  /** Run by /bin/sh -c with the service's env, cwd and user; exit 0 means ready. */
  command: z.optional(z.string().check(z.minLength(1))),
  timeoutSeconds: z._default(z.number().check(z.positive()), 30),
  intervalMs: z._default(z.int().check(z.positive()), 200),
});
export type ServiceReadyCheck = z.infer<typeof serviceReadyCheck>;

export const serviceRestartPolicy = z.object({
  policy: z.enum(['always', 'on-failure', 'never']),
  initialDelayMs: z._default(z.int().check(z.nonnegative()), 100),
  factor: z._default(z.number().check(z.gte(1)), 2),
  maxDelayMs: z._default(z.int().check(z.nonnegative()), 30_000),
  /** A run that stayed up this long resets the delay and the crash count. */
  resetAfterSeconds: z._default(z.number().check(z.nonnegative()), 60),
  /** This many consecutive quick exits (runs shorter than resetAfterSeconds) make the service `failed`. */
  crashLoopLimit: z._default(z.int().check(z.positive()), 5),
});
export type ServiceRestartPolicy = z.infer<typeof serviceRestartPolicy>;

export const serviceLogPolicy = z.object({
  /** The current file is rotated before it would grow past this size. */
  maxBytes: z._default(z.int().check(z.positive()), 10 * 1024 * 1024),
  /** Rotated files kept (<name>.log.1 is the newest); 0 keeps none. */
  keep: z._default(z.int().check(z.nonnegative()), 5),
  /** Prefix each line with the ISO time the agent read it. */
  timestamps: z._default(z.boolean(), true),
});
export type ServiceLogPolicy = z.infer<typeof serviceLogPolicy>;

/**
 * The service applies a new env on a signal: a converge that changes only `env` rewrites the service's
 * env file (BERTH_ENV_FILE) and sends this signal to its main process instead of restarting it.
 */
export const serviceReload = z.object({
  signal: z.enum(SERVICE_RELOAD_SIGNALS),
});
export type ServiceReload = z.infer<typeof serviceReload>;

/** Everything the agent needs to run one service, fully resolved by the server. */
export const serviceSpec = z.object({
  name: z.string().check(z.regex(SERVICE_NAME_PATTERN)),
  /** Run by /bin/sh -c in its own session and process group. */
  cmd: z.string().check(z.minLength(1)),
  cwd: z.optional(z.string()),
  /** A user name or numeric uid from the host's /etc/passwd. */
  user: z.optional(z.string()),
  /** The effective environment, added to the agent's own. */
  env: z._default(z.record(z.string(), z.string()), {}),
  ports: z._default(z.array(tcpPort), []),
  dependsOn: z._default(z.array(z.string()), []),
  ready: z.optional(serviceReadyCheck),
  stopSignal: z._default(z.enum(SERVICE_STOP_SIGNALS), 'SIGTERM'),
  /** After the stop signal, KILL goes to the whole process group once this has passed. */
  stopTimeoutSeconds: z._default(z.number().check(z.nonnegative()), 10),
  restart: serviceRestartPolicy,
  logs: z.prefault(serviceLogPolicy, {}),
  /** Absent: every configuration change restarts the service. */
  reload: z.optional(serviceReload),
  /**
   * Hash of the effective configuration: a converge restarts a service only when it changes (or, with
   * `reload`, signals it when nothing but `env` changed).
   */
  configHash: z.string(),
});
export type ServiceSpec = z.infer<typeof serviceSpec>;
/** A spec as written before defaults are applied (`serviceSpec.parse(input)` gives a ServiceSpec). */
export type ServiceSpecInput = z.input<typeof serviceSpec>;

export const serviceExit = z.object({
  /** Both null when the exit status is unknown (a process adopted from a previous agent). */
  code: z.nullable(z.int()),
  signal: z.nullable(z.string()),
  at: z.string(),
});
export type ServiceExit = z.infer<typeof serviceExit>;

export const serviceStatus = z.object({
  name: z.string(),
  state: z.enum(SERVICE_STATES),
  /**
   * Restarts made by the restart policy since the service last started with a new configuration (a
   * reload does not start it again: the count goes on).
   */
  restarts: z.int().check(z.nonnegative()),
  /** Reloads by signal since then (see serviceSpec.reload); absent from agents that do not reload. */
  reloads: z.optional(z.int().check(z.nonnegative())),
  pid: z.nullable(z.int()),
  lastExit: z.nullable(serviceExit),
  /** Why the service is in this state, e.g. "crashed 5 times in a row (last: exit code 1)". */
  reason: z.string(),
  /** When the service entered this state (ISO time). */
  since: z.string(),
  configHash: z.string(),
});
export type ServiceStatus = z.infer<typeof serviceStatus>;
export type ServiceState = ServiceStatus['state'];

/** Where the agent writes each service's log (`<name>.log`, rotated to `.1`, `.2`, …). */
export const SERVICE_LOG_DIR = '/var/log/berth';

/**
 * What a host's machine uses, as its agent reads it (/proc, statfs of `/`), for drivers that cannot
 * measure their hosts themselves (EC2): the whole machine's CPU time since boot (seconds), memory in
 * use (total less available) against the total, processes, and the root filesystem.
 */
export const machineStats = z.object({
  cpuSeconds: z.optional(z.number()),
  memoryBytes: z.optional(z.number()),
  memoryLimitBytes: z.optional(z.number()),
  pids: z.optional(z.int()),
  diskUsedBytes: z.optional(z.number()),
  diskSizeBytes: z.optional(z.number()),
});
export type MachineStats = z.infer<typeof machineStats>;

export const agentMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('hello'),
    protocol: z.int(),
    hostId: z.string(),
    agentVersion: z.string(),
    /** Unique per agent process start; tells the server whether the agent restarted. */
    bootId: z.string(),
    pid: z.int(),
    /** Invocations the agent still holds: running ones and results not yet acknowledged. */
    invocations: z.array(knownInvocation),
    /** The tags the host has now (its tags file): the server sends the stored ones when they differ. */
    tags: z.optional(z.record(z.string(), z.string())),
  }),
  z.object({ type: z.literal('heartbeat'), at: z.string() }),
  z.object({ type: z.literal('accepted'), invocationId: z.string(), startedAt: z.string() }),
  z.object({ type: z.literal('output'), invocationId: z.string(), stream: z.enum(['stdout', 'stderr']), data: z.string() }),
  z.object({ type: z.literal('result'), invocationId: z.string(), result: invocationResult }),
  /** Every service's status, after any change (and once after each hello). */
  z.object({ type: z.literal('services'), statuses: z.array(serviceStatus) }),
  /** The answer to a `statsRequest` (`error`: what could not be read, when nothing could). */
  z.object({ type: z.literal('stats'), requestId: z.string(), stats: machineStats, error: z.optional(z.string()) }),
  ...shellAgentFrames,
]);
export type AgentMessage = z.infer<typeof agentMessage>;

export const serverMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), heartbeatIntervalMs: z.int().check(z.positive()), serverTime: z.string() }),
  z.object({
    type: z.literal('run'),
    invocationId: z.string(),
    document: z.literal('RunShellScript'),
    parameters: runShellScriptParameters,
    /** Stream output frames while running (someone is following, or output is wanted live). */
    streamOutput: z.boolean(),
    /**
     * Delivery deadline (ISO time). Past it the server has already reported DeliveryTimedOut, so an
     * agent that receives the run late (it was stopped, its socket was backed up) must not start it.
     */
    deliverBy: z.optional(z.string()),
  }),
  z.object({ type: z.literal('cancel'), invocationId: z.string() }),
  z.object({ type: z.literal('ack'), invocationId: z.string() }),
  /** The host's desired services: the supervisor converges (only changed services restart). */
  z.object({ type: z.literal('services'), services: z.array(serviceSpec) }),
  z.object({ type: z.literal('serviceAction'), name: z.string(), action: z.enum(['start', 'stop', 'restart']) }),
  /** The host's tags changed (a claim gave it its user's): commands and services can read them. */
  z.object({ type: z.literal('tags'), tags: z.record(z.string(), z.string()) }),
  /**
   * What the agent trusts for its wss:// channel from now on (the CA bundle, PEM): sent after the
   * welcome and whenever it changes. Taken only over TLS, from a server the agent verified.
   */
  z.object({ type: z.literal('trust'), ca: z.string() }),
  /**
   * The server now serves the agent channel over TLS, on the port the agent dialled in plain: dial
   * `url` (wss://, same host and port) trusting `ca` (absent: the system's roots) from now on, and
   * keep both for the next start. Sent, and taken, only on a plain ws:// connection.
   */
  z.object({ type: z.literal('switch'), url: z.string(), ca: z.optional(z.string()) }),
  /** Asks what the machine uses now; answered by a `stats` frame. An agent older than this ignores it. */
  z.object({ type: z.literal('statsRequest'), requestId: z.string() }),
  ...shellServerFrames,
]);
export type ServerMessage = z.infer<typeof serverMessage>;

/** Parses one frame; returns undefined (never throws) for anything malformed. */
export function parseAgentMessage(raw: string): AgentMessage | undefined {
  return parseFrame(raw, agentMessage);
}

export function parseServerMessage(raw: string): ServerMessage | undefined {
  return parseFrame(raw, serverMessage);
}

function parseFrame<T>(raw: string, schema: z.ZodMiniType<T>): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/** The file inside every host that tells its agent who it is and where to connect. */
export const AGENT_IDENTITY_PATH = '/etc/berth/agent.json';
/** The host's tags, written at launch and again by the agent when they change (a claim); commands also get them as BERTH_TAGS (JSON). */
export const HOST_TAGS_PATH = '/etc/berth/tags.json';
/**
 * What a host must make for itself at first boot, written by a bake's identity layer when it
 * stripped something the image had: `{ "sshHostKeyTypes": ["ed25519", "rsa"] }`. Without it nothing
 * is generated (most hosts run no sshd, and an RSA key costs a third of a second of CPU).
 */
export const FIRST_BOOT_PATH = '/etc/berth/first-boot.json';
export interface FirstBootPlan {
  sshHostKeyTypes: string[];
}

/**
 * The environment an image's `env` steps set: one `KEY="value"` per line, the value a JSON string.
 * Written by bakes, applied by the agent to every command it runs.
 */
export const IMAGE_ENV_PATH = '/etc/berth/image.env';
/**
 * `ca`: the certificates (PEM) the agent trusts for a `wss://` serverUrl, when the agent channel's
 * certificate is not from a public CA; without it the system's roots apply.
 */
export const agentIdentity = z.object({ hostId: z.string(), token: z.string(), serverUrl: z.string(), ca: z.optional(z.string()) });
export type AgentIdentity = z.infer<typeof agentIdentity>;



/**
 * A host its backend launched by itself (a pool's Auto Scaling group) has no identity yet: its
 * boot script writes this file instead, and its agent trades it, with the machine's id, for an
 * identity (AGENT_ENROL_PATH on the agent channel's port), which it then keeps in agent.json.
 */
export const AGENT_ENROLMENT_PATH = '/etc/berth/enrol.json';
export const agentEnrolment = z.object({
  /** e.g. `http://10.0.0.5:7071/v1/agent/enrol`. */
  enrolUrl: z.string(),
  tenantId: z.string(),
  pool: z.string(),
  token: z.string(),
  /** The pool's generation the machine's template was made for. */
  generation: z.optional(z.number()),
  /** Given by a harness that emulates the machine; on EC2 the agent asks the instance metadata service. */
  machineId: z.optional(z.string()),
  /** What the agent trusts for an https:// enrolUrl (as AgentIdentity's ca). */
  ca: z.optional(z.string()),
});
export type AgentEnrolment = z.infer<typeof agentEnrolment>;
export const AGENT_ENROL_PATH = '/v1/agent/enrol';
export const enrolRequest = z.object({ tenantId: z.string(), pool: z.string(), token: z.string(), machineId: z.string(), generation: z.optional(z.number()) });
export type EnrolRequest = z.infer<typeof enrolRequest>;
