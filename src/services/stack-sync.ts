/**
 * Hosts run what their tags ask of a stack: `berth.stack=NAME` with `berth.mode=review` (every
 * service) or `berth.mode=service` + `berth.service=web` (one), `berth.env=ENV` for the config layer,
 * `berth.env.KEY=value` overrides. A host's services are computed again whenever that may change
 * them: its agent enrolls (launch, reset, reuse), it is claimed with new tags, or its stack is
 * applied again. Only changed services restart (their config hash changed).
 */
import { BerthError } from '../core/errors.js';
import type { ConfigLayers, EffectiveConfig } from '../stacks/config.js';
import { maskSecrets, servicesForHost, STACK_TAG, type HostMode } from '../stacks/modes.js';
import type { StackSpec } from '../stacks/spec.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';
import type { StacksRepo } from '../store/stacks-repo.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import type { ServicesService } from './services-service.js';

export interface StackSyncDeps {
  stacks: StacksRepo;
  hosts: HostsRepo;
  services: ServicesService;
  /** Each tenant's key for config hashes (see stacks/config.ts configHash). */
  hashKeys: { of(tenantId: string): Promise<string> };
  log: (line: string) => void;
}

export interface HostConfigView {
  hostId: string;
  stack: string;
  mode: HostMode;
  problems: string[];
  services: Record<string, EffectiveConfig & { masked: string[] }>;
}

export class StackSync {
  constructor(private readonly deps: StackSyncDeps) {}

  /** Stores a stack and brings every live host of it up to date; returns what changed. */
  async apply(tenantId: string, name: string, spec: Record<string, unknown>, config: Record<string, unknown>): Promise<{ action: 'created' | 'updated' | 'unchanged'; hosts: number }> {
    if (spec['name'] !== name) throw new BerthError('validation_failed', `the stack's name ${JSON.stringify(spec['name'])} is not ${JSON.stringify(name)}`, 'Send the stack under its own name.');
    const action = await this.deps.stacks.put(tenantId, name, spec, config);
    const hosts = (await this.deps.hosts.list(tenantId, { states: LIVE_HOST_STATES, tags: { [STACK_TAG]: name } })).filter((h) => h.state !== 'terminating');
    for (const host of hosts) await this.syncHost(tenantId, host.id);
    return { action, hosts: hosts.length };
  }

  /** syncHost for a host whose row the caller holds: nothing to read for one that names no stack. */
  async syncTagged(host: HostRow): Promise<void> {
    if (host.tags[STACK_TAG]) await this.syncRow(host);
  }

  /** Sets the services the host's tags ask for; a host without `berth.stack` keeps its own set. */
  async syncHost(tenantId: string, hostId: string): Promise<void> {
    const row = await this.deps.hosts.get(tenantId, hostId);
    if (!row) throw new BerthError('host_not_found', `host ${hostId} does not exist`, 'List hosts with `berth host ls`.', { hostId });
    await this.syncRow(row);
  }

  /** syncHost with the host's row as just read: on a claim's path, every read counts. */
  private async syncRow(row: HostRow): Promise<void> {
    const hostId = row.id;
    const resolved = await this.resolveRow(row);
    if (!resolved) return;
    const { result, current } = resolved;
    this.deps.services.noteStack(hostId, { stack: resolved.stack, mode: result.mode, problems: result.problems });
    // Problems change nothing: an empty set would stop every service the host runs.
    if (result.problems.length > 0) return;
    const same = current.length === result.services.length && result.services.every((s, i) => current[i]?.name === s.name && current[i]?.configHash === s.configHash);
    if (same) return;
    await this.deps.services.setResolved(row, result.services);
  }

  /** The effective config of the host's services (`berth config show`), secrets masked unless asked. */
  async config(tenantId: string, hostId: string, opts: { service?: string | undefined; showSecrets?: boolean }): Promise<HostConfigView> {
    const resolved = await this.resolve(tenantId, hostId);
    if (!resolved) throw new BerthError('invalid_state', `host ${hostId} has no ${STACK_TAG} tag: its services are not from a stack`, 'Tag the host with berth.stack=NAME (and berth.mode), or see `berth svc ls`.', { hostId });
    const { result, spec } = resolved;
    const names = Object.keys(result.configs).filter((name) => opts.service === undefined || name === opts.service);
    if (opts.service !== undefined && names.length === 0) {
      throw new BerthError('not_found', `host ${hostId} runs no service ${JSON.stringify(opts.service)} of stack ${resolved.stack}`, `It runs: ${Object.keys(result.configs).join(', ') || 'none'}.`, { hostId });
    }
    const services: HostConfigView['services'] = {};
    for (const name of names) {
      const config = result.configs[name];
      if (config) services[name] = maskSecrets(config, spec.secrets, opts.showSecrets ?? false);
    }
    return { hostId, stack: resolved.stack, mode: result.mode, problems: result.problems, services };
  }

  private async resolve(tenantId: string, hostId: string) {
    const row = await this.deps.hosts.get(tenantId, hostId);
    if (!row) throw new BerthError('host_not_found', `host ${hostId} does not exist`, 'List hosts with `berth host ls`.', { hostId });
    return this.resolveRow(row);
  }

  private async resolveRow(row: HostRow) {
    const tenantId = row.tenant_id;
    const hostId = row.id;
    const stack = row.tags[STACK_TAG];
    if (!stack) return undefined;
    const stored = await this.deps.stacks.get(tenantId, stack);
    if (!stored) {
      const problem = `stack ${stack} does not exist (apply it with \`berth apply -f berth.yaml\`)`;
      this.deps.services.noteStack(hostId, { stack, mode: 'none', problems: [problem] });
      return undefined;
    }
    const spec = stored.spec as unknown as StackSpec;
    const result = servicesForHost(spec, stored.config as unknown as ConfigLayers, row.tags, await this.deps.hashKeys.of(tenantId));
    return { stack, spec, result, current: this.deps.services.desiredOf(row) };
  }
}
