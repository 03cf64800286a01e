/**
 * Which of a stack's services a host runs, decided by the host's tags, and each one's resolved spec:
 *
 *   berth.stack=<stack>        the host belongs to this stack (any other value or none: mode none)
 *   berth.mode=review          every service of the stack (a QA host of any branch)
 *   berth.mode=service         one service, named by
 *   berth.service=<service>
 *   berth.env=<environment>    the environment layer of the config (src/stacks/config.ts)
 *   berth.env.<NAME>=<value>   a host override of variable NAME (the highest layer; "" sets it empty)
 *
 * A service-mode host runs one service; its dependencies live elsewhere (other hosts), so its
 * dependsOn is dropped for services not on the host — the supervisor would otherwise wait forever
 * for a service it does not run. A review host runs them all with their dependencies.
 *
 * When `problems` is not empty, `services` is empty and the caller must NOT apply it: a bad tag must
 * change nothing on the host (an empty set would stop everything it runs).
 */
import { ENV_NAME_PATTERN, serviceSpec, type ServiceSpec } from '../protocol/messages.js';
import { checkServiceSet } from '../protocol/services.js';
import { configHash, effectiveConfig, ownValue, type ConfigLayers, type EffectiveConfig } from './config.js';
import { MASK, SECRET_NAME_PATTERN } from '../core/secret-names.js';
import type { StackService, StackSpec } from './spec.js';

export const STACK_TAG = 'berth.stack';
export const MODE_TAG = 'berth.mode';
export const SERVICE_TAG = 'berth.service';
export const ENVIRONMENT_TAG = 'berth.env';
export const ENV_OVERRIDE_TAG_PREFIX = 'berth.env.';

export type HostMode = 'review' | 'service' | 'none';

export interface HostServices {
  /** Fully resolved (protocol defaults filled in), each with its configHash: ready to send to the agent. */
  services: ServiceSpec[];
  mode: HostMode;
  problems: string[];
  /** Each service's effective env with where every value came from (for `berth config show`). */
  configs: Record<string, EffectiveConfig>;
}

/** `hashKey`: the tenant's key for config hashes (see config.ts configHash). */
export function servicesForHost(stack: StackSpec, layers: ConfigLayers, tags: Record<string, string>, hashKey: string): HostServices {
  if (ownValue(tags, STACK_TAG) !== stack.name) return { services: [], mode: 'none', problems: [], configs: {} };
  const names = Object.keys(stack.services);
  const has = `(it has: ${names.join(', ')})`;
  const modeTag = ownValue(tags, MODE_TAG);
  const failed = (mode: HostMode, problems: string[]): HostServices => ({ services: [], mode, problems, configs: {} });
  let mode: HostMode;
  let chosen: string[];
  if (modeTag === 'review') {
    mode = 'review';
    chosen = names;
  } else if (modeTag === 'service') {
    mode = 'service';
    const serviceTag = ownValue(tags, SERVICE_TAG);
    if (serviceTag === undefined || serviceTag === '') return failed(mode, [`host is tagged ${MODE_TAG}=service but names no service: tag it ${SERVICE_TAG}=NAME ${has}`]);
    if (!Object.hasOwn(stack.services, serviceTag)) return failed(mode, [`stack ${stack.name} has no service ${serviceTag} ${has}`]);
    chosen = [serviceTag];
  } else {
    const problem = modeTag === undefined ? `host is tagged ${STACK_TAG}=${stack.name} but has no ${MODE_TAG} tag (review or service)` : `unknown ${MODE_TAG} ${JSON.stringify(modeTag)} (expected review or service)`;
    return failed('none', [problem]);
  }

  const problems: string[] = [];
  const environment = ownValue(tags, ENVIRONMENT_TAG);
  const environments = Object.keys(layers.environments);
  // A config without environments has nothing to pick: the tag may be there for other stacks.
  if (environment !== undefined && environments.length > 0 && !Object.hasOwn(layers.environments, environment)) {
    problems.push(`stack ${stack.name} has no environment ${environment} (its config has: ${environments.join(', ')})`);
  }
  const hostOverrides = new Map<string, string>();
  for (const [tag, value] of Object.entries(tags)) {
    if (!tag.startsWith(ENV_OVERRIDE_TAG_PREFIX)) continue;
    const name = tag.slice(ENV_OVERRIDE_TAG_PREFIX.length);
    if (ENV_NAME_PATTERN.test(name)) hostOverrides.set(name, value);
    else problems.push(`tag ${tag}: ${JSON.stringify(name)} is not a valid variable name (letters, digits and underscores, not starting with a digit)`);
  }
  if (problems.length > 0) return failed(mode, problems);

  const onHost = new Set(chosen);
  const services: ServiceSpec[] = [];
  const configs = new Map<string, EffectiveConfig>();
  for (const name of chosen) {
    const service = ownValue(stack.services, name);
    if (!service) continue;
    const config = effectiveConfig(layers, { environment, service: name, inline: service.env, inlineSources: inlineSources(service), hostOverrides: Object.fromEntries(hostOverrides), hashKey });
    const resolved = resolveService(service, config, onHost, hashKey);
    if (typeof resolved === 'string') problems.push(resolved);
    else services.push(resolved);
    configs.set(name, config);
  }
  problems.push(...checkServiceSet(services));
  if (problems.length > 0) return failed(mode, problems);
  return { services, mode, problems, configs: Object.fromEntries(configs) };
}

/**
 * The agent's spec for a service, or what is wrong with it. Its configHash covers the whole resolved
 * spec (cmd, env, ready, restart, …) after defaults, computed as the server's own services API does,
 * so a converge restarts exactly the services whose configuration changed.
 */
function resolveService(service: StackService, config: EffectiveConfig, onHost: ReadonlySet<string>, hashKey: string): ServiceSpec | string {
  const { at: _at, from: _from, envAt: _envAt, env: _inline, ...definition } = service;
  const dependsOn = service.dependsOn.filter((dep) => onHost.has(dep));
  const parsed = serviceSpec.safeParse({ ...definition, env: config.env, dependsOn, configHash: '' });
  if (!parsed.success) {
    return `service ${service.name}: ${parsed.error.issues.map((issue) => `${issue.path.join('.') || 'spec'}: ${issue.message}`).join('; ')}`;
  }
  const { configHash: _unset, ...resolved } = parsed.data;
  return { ...parsed.data, configHash: configHash(resolved, hashKey) };
}

function inlineSources(service: StackService): Record<string, string> {
  return Object.fromEntries(Object.entries(service.envAt).map(([name, at]) => [name, `service ${service.name} (${at.file}:${at.line}:${at.column})`]));
}

/** Names whose values are secret: the stack's `secrets:` list, and any name that says it is one. */
export function isSecretName(name: string, secrets: readonly string[]): boolean {
  return secrets.includes(name) || SECRET_NAME_PATTERN.test(name);
}

/**
 * The config as `berth config show` prints it: secret values replaced by MASK unless `show`. The
 * hash is kept (it is what `config diff` compares); sources and unset names are not secret.
 */
export function maskSecrets(config: EffectiveConfig, secrets: readonly string[], show: boolean): EffectiveConfig & { masked: string[] } {
  const masked = show ? [] : Object.keys(config.env).filter((name) => isSecretName(name, secrets));
  const env = Object.fromEntries(Object.entries(config.env).map(([name, value]) => [name, masked.includes(name) ? MASK : value]));
  return { ...config, env, sources: { ...config.sources }, unset: [...config.unset], masked };
}

/**
 * What in a config directory matches nothing in the stack: a `services/<name>/` for a service the
 * stack does not have is almost always a typo or a leftover, and its variables would reach no one.
 */
export function configProblems(stack: StackSpec, layers: ConfigLayers): string[] {
  const names = Object.keys(stack.services);
  return Object.keys(layers.services)
    .filter((name) => !Object.hasOwn(stack.services, name))
    .map((name) => `${layers.label ? `${layers.label}/` : ''}services/${name}: stack ${stack.name} has no service ${name} (it has: ${names.join(', ')})`);
}
