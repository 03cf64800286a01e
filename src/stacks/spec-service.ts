/**
 * One service of a stack as berth.yaml writes it (grammar: src/stacks/spec.ts), read into the
 * protocol's spec input (src/protocol/messages.ts) with the friendlier yaml names translated:
 * `stopTimeout` → stopTimeoutSeconds, durations → the protocol's ms or seconds, `maxSize` → maxBytes.
 */
import { isMap, isScalar } from 'yaml';
import { describe, type Reader, type Slot, type SourceLocation } from '../images/spec-reader.js';
import { ENV_NAME_PATTERN, SERVICE_NAME_PATTERN, SERVICE_RELOAD_SIGNALS, SERVICE_STOP_SIGNALS, type ServiceSpecInput } from '../protocol/messages.js';
import { readDurationMs, readInteger, readNames, readNumber, readPort } from './values.js';

/** A service of a stack: the agent's spec without what the host decides (env layers, configHash). */
export type StackService = Omit<ServiceSpecInput, 'configHash' | 'env' | 'ports' | 'dependsOn'> & {
  env: Record<string, string>;
  ports: number[];
  dependsOn: string[];
  /** Where the service is named: its key under `services:`, or its Procfile line. */
  at: SourceLocation;
  from: 'services' | 'procfile';
  /** `env` is the service's inline env; this is where each of its variables is written. */
  envAt: Record<string, SourceLocation>;
};

/** What the stack checks after reading every service: dependencies exist and do not loop. */
export interface ReadService {
  service: StackService;
  dependsOn: Array<{ name: string; slot: Slot }>;
}

type ReadyInput = NonNullable<ServiceSpecInput['ready']>;
type RestartInput = ServiceSpecInput['restart'];
type LogsInput = NonNullable<ServiceSpecInput['logs']>;
type ReloadInput = NonNullable<ServiceSpecInput['reload']>;

export const SERVICE_KEYS = ['cmd', 'cwd', 'user', 'env', 'ports', 'dependsOn', 'ready', 'stopSignal', 'stopTimeout', 'restart', 'reload', 'logs'] as const;
const READY_KEYS = ['http', 'tcp', 'command', 'timeout', 'interval'] as const;
const RESTART_KEYS = ['policy', 'initialDelay', 'factor', 'maxDelay', 'resetAfter', 'crashLoopLimit'] as const;
const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const;
const LOG_KEYS = ['maxSize', 'keep', 'timestamps'] as const;
const RELOAD_KEYS = ['signal'] as const;

export const SERVICE_NAME_RULE = 'A service name is 1-63 lowercase letters, digits, "_" and "-", starting with a letter or digit.';
export const ENV_NAME_RULE = 'A variable name is letters, digits and underscores, not starting with a digit.';

/** A service's mapping, or its command alone (`worker: bin/worker`, as a Procfile line would say). */
export function readService(r: Reader, name: string, slot: Slot): ReadService | undefined {
  if (!SERVICE_NAME_PATTERN.test(name)) r.report(slot.keyAt, slot.path, `bad service name "${name}"`, SERVICE_NAME_RULE);
  if (isScalar(slot.node) && typeof slot.node.value === 'string') {
    const cmd = r.text(slot, 'a command', 'Write the command the service runs.');
    if (cmd === undefined) return undefined;
    return { service: { name, cmd, env: {}, envAt: {}, ports: [], dependsOn: [], restart: { policy: 'always' }, at: slot.keyAt, from: 'services' }, dependsOn: [] };
  }
  const fields = r.entries(slot, SERVICE_KEYS, `a mapping (${SERVICE_KEYS.join(', ')}) or a command`, 'Give the service at least its command: e.g. "web: {cmd: bin/web}".');
  if (!fields) return undefined;
  const service: StackService = { name, cmd: '', env: {}, envAt: {}, ports: [], dependsOn: [], restart: { policy: 'always' }, at: slot.keyAt, from: 'services' };
  const cmdSlot = fields.get('cmd');
  if (!cmdSlot) r.report(slot.keyAt, slot.path, 'missing cmd', 'Add cmd: with the command the service runs (by /bin/sh -c).');
  const cmd = cmdSlot && r.text(cmdSlot, 'a command', 'Write the command the service runs (by /bin/sh -c).');
  let dependsOn: ReadService['dependsOn'] = [];
  for (const [key, value] of fields) {
    if (key === 'cwd') service.cwd = r.absolutePath(value, 'an absolute directory on the host');
    else if (key === 'user') service.user = r.text(value, 'a user name or numeric uid', "Name a user from the host's /etc/passwd, or a uid.");
    else if (key === 'env') readInlineEnv(r, value, service);
    else if (key === 'ports') service.ports = (r.items(value, 'a list of TCP ports', 'Write ports: [8080].') ?? []).map((item) => readPort(r, item)).filter((port) => port !== undefined);
    else if (key === 'dependsOn') dependsOn = readNames(r, value, SERVICE_NAME_PATTERN, 'service name', SERVICE_NAME_RULE);
    else if (key === 'ready') service.ready = readReady(r, value);
    else if (key === 'stopSignal') service.stopSignal = readSignal(r, value, SERVICE_STOP_SIGNALS, 'stop signal');
    else if (key === 'stopTimeout') service.stopTimeoutSeconds = seconds(readDurationMs(r, value, false));
    else if (key === 'restart') service.restart = readRestart(r, value) ?? service.restart;
    else if (key === 'reload') service.reload = readReload(r, value);
    else if (key === 'logs') service.logs = readLogs(r, value);
  }
  if (cmd === undefined) return undefined;
  service.cmd = cmd;
  service.dependsOn = dependsOn.map((dep) => dep.name);
  return { service: dropUndefined(service), dependsOn };
}

/** Variables as NAME: value; numbers and booleans are taken as written (`VERSION: 1.10` is "1.10"). */
function readInlineEnv(r: Reader, slot: Slot, service: StackService): void {
  const entries = r.entries(slot, null, 'a mapping of variable names to values', 'Write variables as NAME: value, e.g. {PORT: "8080"}.');
  const env = new Map<string, string>();
  const envAt = new Map<string, SourceLocation>();
  for (const [name, value] of entries ?? []) {
    if (!ENV_NAME_PATTERN.test(name)) {
      r.report(value.keyAt, value.path, `bad variable name "${name}"`, ENV_NAME_RULE);
      continue;
    }
    const node = value.node;
    const plain = isScalar(node) && ['number', 'bigint', 'boolean'].includes(typeof node.value);
    const text = isScalar(node) && typeof node.value === 'string' ? node.value : plain && isScalar(node) ? (node.source ?? String(node.value)) : undefined;
    if (text === undefined) r.report(value.at, value.path, `must be text, a number or a boolean (got ${describe(node)})`, `For an empty value write ${name}: "".`);
    else {
      env.set(name, text);
      envAt.set(name, value.keyAt);
    }
  }
  // fromEntries, not assignment: a variable may be called __proto__.
  service.env = Object.fromEntries(env);
  service.envAt = Object.fromEntries(envAt);
}

function readReady(r: Reader, slot: Slot): ReadyInput | undefined {
  const hint = 'Write ready: {http: {port: 8080, path: /health}}, {tcp: 5432} or {command: "pg_isready"}, with an optional timeout.';
  const fields = r.entries(slot, READY_KEYS, `a mapping (${READY_KEYS.join(', ')})`, hint);
  if (!fields) return undefined;
  const ready: ReadyInput = {};
  for (const [key, value] of fields) {
    if (key === 'http') ready.http = readHttpProbe(r, value);
    else if (key === 'tcp') {
      const portSlot = isMap(value.node) ? portOf(r, value) : value;
      const port = portSlot && readPort(r, portSlot);
      if (port !== undefined) ready.tcp = { port };
    } else if (key === 'command') ready.command = r.text(value, 'a command', 'Write a command that exits 0 once the service is ready.');
    else if (key === 'timeout') ready.timeoutSeconds = seconds(readDurationMs(r, value, true));
    else if (key === 'interval') ready.intervalMs = wholeMs(readDurationMs(r, value, true), 1);
  }
  if (!fields.has('http') && !fields.has('tcp') && !fields.has('command')) r.report(slot.at, slot.path, 'a ready check needs http, tcp or command', hint);
  return dropUndefined(ready);
}

/** `http: 8080` (path /) or `http: {port: 8080, path: /health}`. */
function readHttpProbe(r: Reader, slot: Slot): ReadyInput['http'] {
  if (!isMap(slot.node)) {
    const port = readPort(r, slot);
    return port === undefined ? undefined : { port };
  }
  const fields = r.entries(slot, ['port', 'path'], 'a mapping (port, path)', 'Write http: {port: 8080, path: /health}.');
  const portSlot = portOf(r, slot, fields);
  const port = portSlot && readPort(r, portSlot);
  const pathSlot = fields?.get('path');
  let path: string | undefined;
  if (pathSlot) {
    path = r.text(pathSlot, 'a path starting with "/"', 'Write the path of the URL, e.g. /health.');
    if (path !== undefined && !path.startsWith('/')) {
      r.report(pathSlot.at, pathSlot.path, `must start with "/" (got ${JSON.stringify(path)})`, `Write "/${path}"?`);
      path = undefined;
    }
  }
  if (port === undefined) return undefined;
  return path === undefined ? { port } : { port, path };
}

/** The `port` of a probe's mapping; a missing one is reported at the probe's key. */
function portOf(r: Reader, slot: Slot, fields = r.entries(slot, ['port'], 'a mapping (port)', 'Write {port: 8080}.')): Slot | undefined {
  const port = fields?.get('port');
  if (!port && fields) r.report(slot.keyAt, slot.path, 'missing port', 'Add port: with the TCP port to check.');
  return port;
}

/** A signal by name, with or without SIG (`HUP`, `SIGHUP`, any case), from the `known` ones. */
function readSignal<S extends string>(r: Reader, slot: Slot, known: readonly S[], what: string): S | undefined {
  const hint = `Use one of ${known.join(', ')}.`;
  const text = r.text(slot, 'a signal name', hint);
  if (text === undefined) return undefined;
  const upper = text.trim().toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  const signal = known.find((candidate) => candidate === name);
  if (!signal) r.report(slot.at, slot.path, `unknown ${what} ${JSON.stringify(text)}`, hint);
  return signal;
}

/** `reload: HUP`, or `reload: {signal: HUP}`: the signal that makes the service re-read its env file. */
function readReload(r: Reader, slot: Slot): ReloadInput | undefined {
  const hint = `Write reload: {signal: HUP}, with one of ${SERVICE_RELOAD_SIGNALS.join(', ')}.`;
  if (isScalar(slot.node) && typeof slot.node.value === 'string') {
    const signal = readSignal(r, slot, SERVICE_RELOAD_SIGNALS, 'reload signal');
    return signal && { signal };
  }
  const fields = r.entries(slot, RELOAD_KEYS, 'a signal name or a mapping (signal)', hint);
  if (!fields) return undefined;
  const signalSlot = fields.get('signal');
  if (!signalSlot) {
    r.report(slot.keyAt, slot.path, 'missing signal', hint);
    return undefined;
  }
  const signal = readSignal(r, signalSlot, SERVICE_RELOAD_SIGNALS, 'reload signal');
  return signal && { signal };
}

/** `restart: on-failure`, or a mapping; the policy defaults to always. */
function readRestart(r: Reader, slot: Slot): RestartInput | undefined {
  const policyHint = `Use one of ${RESTART_POLICIES.join(', ')}.`;
  const readPolicy = (policySlot: Slot): RestartInput['policy'] | undefined => {
    const text = r.text(policySlot, 'a restart policy', policyHint);
    const policy = RESTART_POLICIES.find((known) => known === text);
    if (text !== undefined && !policy) r.report(policySlot.at, policySlot.path, `unknown restart policy ${JSON.stringify(text)}`, policyHint);
    return policy;
  };
  if (isScalar(slot.node) && typeof slot.node.value === 'string') {
    const policy = readPolicy(slot);
    return policy && { policy };
  }
  const fields = r.entries(slot, RESTART_KEYS, `a policy (${RESTART_POLICIES.join(', ')}) or a mapping (${RESTART_KEYS.join(', ')})`, 'Write restart: {policy: always, maxDelay: 30s}.');
  if (!fields) return undefined;
  const restart: RestartInput = { policy: 'always' };
  for (const [key, value] of fields) {
    if (key === 'policy') restart.policy = readPolicy(value) ?? restart.policy;
    else if (key === 'initialDelay') restart.initialDelayMs = wholeMs(readDurationMs(r, value, false), 0);
    else if (key === 'maxDelay') restart.maxDelayMs = wholeMs(readDurationMs(r, value, false), 0);
    else if (key === 'resetAfter') restart.resetAfterSeconds = seconds(readDurationMs(r, value, false));
    else if (key === 'factor') restart.factor = readNumber(r, value, 1, 'a backoff factor');
    else if (key === 'crashLoopLimit') restart.crashLoopLimit = readInteger(r, value, 1, 1_000_000, 'a number of quick exits');
  }
  return dropUndefined(restart);
}

function readLogs(r: Reader, slot: Slot): LogsInput | undefined {
  const fields = r.entries(slot, LOG_KEYS, `a mapping (${LOG_KEYS.join(', ')})`, 'Write logs: {maxSize: 10MiB, keep: 5, timestamps: true}.');
  if (!fields) return undefined;
  const logs: LogsInput = {};
  for (const [key, value] of fields) {
    if (key === 'maxSize') logs.maxBytes = r.size(value);
    else if (key === 'keep') logs.keep = readInteger(r, value, 0, 1000, 'a number of rotated files');
    else if (key === 'timestamps') logs.timestamps = r.bool(value);
  }
  return dropUndefined(logs);
}

function seconds(ms: number | undefined): number | undefined {
  return ms === undefined ? undefined : ms / 1000;
}

/** The protocol takes whole milliseconds: "1.5ms" is 2. */
function wholeMs(ms: number | undefined, min: number): number | undefined {
  return ms === undefined ? undefined : Math.max(min, Math.round(ms));
}

/** Options a bad value left undefined are absent, never present as undefined (they are hashed and compared). */
function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
