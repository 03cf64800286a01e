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

export const PROTOCOL_VERSION = 1;
export const AGENT_PATH = '/v1/agent';
export const HOST_ID_HEADER = 'x-berth-host-id';

export const runShellScriptParameters = z.object({
  commands: z.array(z.string()).check(z.minLength(1)),
  workingDirectory: z.optional(z.string()),
  executionTimeoutSeconds: z.number().check(z.positive()),
  env: z.optional(z.record(z.string(), z.string())),
});
export type RunShellScriptParameters = z.infer<typeof runShellScriptParameters>;

export const streamCapture = z.object({ text: z.string(), truncated: z.boolean(), bytes: z.int().check(z.nonnegative()) });

export const invocationResult = z.object({
  status: z.enum(['Success', 'Failed', 'TimedOut', 'Cancelled']),
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
  }),
  z.object({ type: z.literal('heartbeat'), at: z.string() }),
  z.object({ type: z.literal('accepted'), invocationId: z.string(), startedAt: z.string() }),
  z.object({ type: z.literal('output'), invocationId: z.string(), stream: z.enum(['stdout', 'stderr']), data: z.string() }),
  z.object({ type: z.literal('result'), invocationId: z.string(), result: invocationResult }),
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
/**
 * The environment an image's `env` steps set: one `KEY="value"` per line, the value a JSON string.
 * Written by bakes, applied by the agent to every command it runs.
 */
export const IMAGE_ENV_PATH = '/etc/berth/image.env';
export const agentIdentity = z.object({ hostId: z.string(), token: z.string(), serverUrl: z.string() });
export type AgentIdentity = z.infer<typeof agentIdentity>;
