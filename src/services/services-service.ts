/**
 * Supervised services on the control plane: each host's desired set is stored (and sent again when
 * its agent reconnects); the agent's supervisor converges to it and reports every state change,
 * which is kept in memory here and handed to waiters. The server resolves everything a service
 * needs before sending it: the agent gets flat specs with a hash of their configuration.
 */
import { EventEmitter } from 'node:events';
import { BerthError } from '../core/errors.js';
import { configHash } from '../stacks/config.js';
import { serviceSpec, type ServerMessage, type ServiceSpec, type ServiceStatus } from '../protocol/messages.js';
import { checkServiceSet } from '../protocol/services.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';
import { ServiceStates } from '../events/changes.js';
import type { EventSink } from '../events/types.js';

export interface ServiceChannel {
  isConnected(hostId: string): boolean;
  send(hostId: string, msg: ServerMessage): boolean;
  /** The connected agent's session: its tenant, for events. */
  session?(hostId: string): { tenantId: string } | undefined;
  /** false for a host whose commands go through a backend's agent (SSM): nothing supervises services there. */
  supervises?(hostId: string): boolean;
}

export interface ServicesServiceDeps {
  hosts: HostsRepo;
  agents: ServiceChannel;
  /** Each tenant's key for config hashes (see stacks/config.ts configHash). */
  hashKeys: { of(tenantId: string): Promise<string> };
  log: (line: string) => void;
  /** Where each service's change of state, as its agent reports it, is reported. */
  events?: EventSink;
}

/** A service as the API shows it: what is wanted (env values left out: they may be secrets) and what runs. */
export interface ServiceView {
  name: string;
  cmd: string;
  dependsOn: string[];
  ports: number[];
  envNames: string[];
  configHash: string;
  status: ServiceStatus | null;
}

export interface HostServicesView {
  hostId: string;
  agentConnected: boolean;
  /** When the agent last reported its services (null: not since this server started). */
  reportedAt: string | null;
  services: ServiceView[];
  /** Services the agent still runs or reports that the host should not have (being stopped). */
  leaving: ServiceStatus[];
  /** When the host's tags name a stack: which, the mode they give, and why nothing was applied. */
  stack: StackNote | null;
}

export interface StackNote {
  stack: string;
  mode: string;
  problems: string[];
}

export type ServiceAction = 'start' | 'stop' | 'restart';

export class ServicesService {
  private readonly reported = new Map<string, { statuses: ServiceStatus[]; at: Date }>();
  private readonly stackNotes = new Map<string, StackNote>();
  private readonly changes = new EventEmitter();
  private readonly states = new ServiceStates();

  constructor(private readonly deps: ServicesServiceDeps) {
    this.changes.setMaxListeners(0);
  }

  /**
   * Replaces a host's services. Every spec is checked (schema, names, env names, dependencies,
   * cycles) before anything is stored or sent: bad input changes nothing.
   */
  async set(tenantId: string, hostId: string, inputs: unknown[]): Promise<HostServicesView> {
    const row = await this.liveHost(tenantId, hostId);
    const hashKey = await this.deps.hashKeys.of(tenantId);
    const specs = inputs.map((input, i) => withConfigHash(input, i, hashKey));
    const problems = checkServiceSet(specs);
    if (problems.length > 0) throw new BerthError('validation_failed', problems.join('\n'), 'Fix the services and send them again; nothing was changed.', { problems });
    this.checkSupervised(hostId, specs);
    if (!(await this.deps.hosts.setServices(tenantId, hostId, specs))) throw notLive(hostId, row.state);
    this.push(hostId, specs);
    return this.view(tenantId, hostId);
  }

  /**
   * A stack's set for a host whose row the caller just read (stack-sync.ts): its specs were made by
   * servicesForHost, checked and hashed with the same key, so they are stored and sent as they are.
   * On a claim's path: no second read, no second parse.
   */
  async setResolved(row: HostRow, specs: ServiceSpec[]): Promise<void> {
    this.checkSupervised(row.id, specs);
    if (!(await this.deps.hosts.setServices(row.tenant_id, row.id, specs))) throw notLive(row.id, row.state);
    this.push(row.id, specs);
  }

  /** Services on a host nothing would supervise are refused before anything is stored. */
  private checkSupervised(hostId: string, specs: readonly ServiceSpec[]): void {
    if (specs.length === 0 || this.deps.agents.supervises?.(hostId) !== false) return;
    throw new BerthError(
      'invalid_state',
      `host ${hostId} runs its commands through the SSM agent, which has no service supervisor: it cannot run services`,
      "Services, stacks and environments need berth's agent: use a pool whose hosts run it (template.aws.commandChannel: agent).",
      { hostId },
    );
  }

  /** The services a host row holds. */
  desiredOf(row: HostRow): ServiceSpec[] {
    return desiredOf(row);
  }

  async get(tenantId: string, hostId: string): Promise<HostServicesView> {
    return this.view(tenantId, hostId);
  }

  /** Asks the host's supervisor to start, stop or restart one of its services. */
  async act(tenantId: string, hostId: string, name: string, action: ServiceAction): Promise<HostServicesView> {
    const row = await this.liveHost(tenantId, hostId);
    if (!desiredOf(row).some((s) => s.name === name)) {
      throw new BerthError('not_found', `host ${hostId} has no service ${JSON.stringify(name)}`, 'List its services with `berth svc ls --host ID`.', { hostId, service: name });
    }
    if (!this.deps.agents.send(hostId, { type: 'serviceAction', name, action })) {
      throw new BerthError('host_not_connected', `the agent of host ${hostId} is not connected`, 'Retry once the host is running (`berth host ls`).', { hostId });
    }
    return this.view(tenantId, hostId);
  }

  /**
   * The agent reported its services (after every change, and after each hello). One that runs
   * services the host should not have (they were removed while it was away) gets the set again.
   */
  onAgentReport(hostId: string, statuses: ServiceStatus[]): void {
    const first = !this.reported.has(hostId);
    this.reported.set(hostId, { statuses, at: new Date() });
    this.changes.emit(hostId);
    const tenantId = this.deps.events && this.deps.agents.session?.(hostId)?.tenantId;
    if (tenantId) for (const event of this.states.changes(tenantId, hostId, statuses)) this.deps.events?.emit(event);
    if (first && statuses.length > 0) {
      void this.deps.hosts.getAnyTenant(hostId).then((row) => {
        const wanted = new Set(row ? desiredOf(row).map((s) => s.name) : []);
        if (statuses.some((s) => !wanted.has(s.name))) this.push(hostId, row ? desiredOf(row) : []);
      }, (err: unknown) => this.deps.log(`host ${hostId}: services: ${String(err)}`));
    }
  }

  /**
   * An agent said hello: what its previous session reported is forgotten, so its first report is
   * checked against the desired set (onAgentReport). Called as the hello arrives, before anything
   * is read: a report the new session sends meanwhile must not be forgotten after it.
   */
  onAgentSession(hostId: string): void {
    this.reported.delete(hostId);
  }

  /**
   * A (re)connected agent gets the host's desired services again, so its supervisor converges. A
   * host with none gets nothing: that is most hosts, and enrolment is on the launch path.
   */
  onAgentHello(row: HostRow): void {
    if (row.services.length > 0) this.push(row.id, desiredOf(row));
  }

  /** Every service the tenant's connected agents last reported, with its state and restart count (for the metrics). */
  reportedServices(tenantId: string): Array<{ hostId: string; service: string; state: string; restarts: number }> {
    const out: Array<{ hostId: string; service: string; state: string; restarts: number }> = [];
    for (const [hostId, { statuses }] of this.reported) {
      if (this.deps.agents.session?.(hostId)?.tenantId !== tenantId) continue;
      for (const s of statuses) out.push({ hostId, service: s.name, state: s.state, restarts: s.restarts });
    }
    return out.sort((a, b) => a.hostId.localeCompare(b.hostId) || a.service.localeCompare(b.service));
  }

  onHostGone(hostId: string): void {
    this.reported.delete(hostId);
    this.stackNotes.delete(hostId);
    this.states.forget(hostId);
  }

  /** Tells the host's agent its tags changed (a claim): its tags file and commands' BERTH_TAGS follow. */
  pushTags(hostId: string, tags: Record<string, string>): void {
    this.deps.agents.send(hostId, { type: 'tags', tags });
  }

  /** What the stack sync last found for the host (see stack-sync.ts). */
  noteStack(hostId: string, note: StackNote): void {
    this.stackNotes.set(hostId, note);
  }


  /**
   * Resolves once every service the host should run reports ready under its current configuration;
   * throws with the reason when its stack's tags make no sense, a service failed, or `timeoutMs`
   * passed (naming what was still waiting). `label` starts the messages ("environment e: host h").
   */
  async awaitReady(tenantId: string, hostId: string, timeoutMs: number, label: string): Promise<HostServicesView> {
    const current = (s: ServiceView) => s.status?.configHash === s.configHash;
    const view = await this.waitFor(
      tenantId,
      hostId,
      (v) => (v.stack?.problems.length ?? 0) > 0 || v.services.some((s) => s.status?.state === 'failed' && current(s)) || (v.services.length > 0 && v.services.every((s) => s.status?.state === 'ready' && current(s))),
      timeoutMs,
    );
    const problems = view.stack?.problems ?? [];
    if (problems.length > 0) throw new BerthError('environment_failed', `${label} cannot run its stack: ${problems.join('; ')}`, 'Fix the stack (berth apply) or the tags and settings.', { hostId, problems });
    const failed = view.services.find((s) => s.status?.state === 'failed' && current(s));
    if (failed) throw new BerthError('environment_failed', `${label}: service ${failed.name} failed: ${failed.status?.reason ?? 'no reason given'}`, `See its log: berth svc logs ${failed.name} --host ${hostId}`, { hostId, service: failed.name });
    const waiting = view.services.filter((s) => s.status?.state !== 'ready' || !current(s));
    if (view.services.length === 0 || waiting.length > 0) {
      const states = waiting.map((s) => `${s.name} ${s.status?.state ?? 'not reported'}${s.status?.reason ? ` (${s.status.reason})` : ''}`).join(', ');
      throw new BerthError('deadline_exceeded', `${label} was not ready in time: ${states || 'no services'}`, "Look at `berth svc ls --host ID` and the services' logs.", { hostId });
    }
    return view;
  }

  /** Resolves when `done` holds for the host's reported services, or rejects after `timeoutMs`. */
  async waitFor(tenantId: string, hostId: string, done: (view: HostServicesView) => boolean, timeoutMs: number): Promise<HostServicesView> {
    const deadline = Date.now() + timeoutMs;
    // Read once: what changes while one waits is the agent's reports (a claim's path waits here, and
    // every store read counts). A desired set changed meanwhile is waited for by its own caller.
    // Except an empty one: a new pool host's set is written by the stack sync its agent's hello
    // starts, which can land after its health check, and so after this read.
    let desired = desiredOf(await this.existingHost(tenantId, hostId));
    for (let first = true; ; first = false) {
      if (!first && desired.length === 0) desired = desiredOf(await this.existingHost(tenantId, hostId));
      const view = this.viewOf(hostId, desired);
      if (done(view)) return view;
      const left = deadline - Date.now();
      if (left <= 0) return view;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(finish, left);
        function finish(): void {
          clearTimeout(timer);
          resolve();
        }
        this.changes.once(hostId, finish);
      });
    }
  }

  private push(hostId: string, specs: ServiceSpec[]): void {
    if (this.deps.agents.isConnected(hostId)) this.deps.agents.send(hostId, { type: 'services', services: specs });
  }

  private async liveHost(tenantId: string, hostId: string): Promise<HostRow> {
    const row = await this.deps.hosts.get(tenantId, hostId);
    if (!row) throw new BerthError('host_not_found', `host ${hostId} does not exist`, 'List hosts with `berth host ls`.', { hostId });
    if (!['booting', 'running', 'lost'].includes(row.state)) throw notLive(hostId, row.state);
    return row;
  }

  private async view(tenantId: string, hostId: string): Promise<HostServicesView> {
    return this.viewOf(hostId, desiredOf(await this.existingHost(tenantId, hostId)));
  }

  private async existingHost(tenantId: string, hostId: string): Promise<HostRow> {
    const row = await this.deps.hosts.get(tenantId, hostId);
    if (!row) throw new BerthError('host_not_found', `host ${hostId} does not exist`, 'List hosts with `berth host ls`.', { hostId });
    return row;
  }

  /** The host's desired services beside what its agent last reported. */
  private viewOf(hostId: string, desired: ServiceSpec[]): HostServicesView {
    const reported = this.reported.get(hostId);
    const statuses = new Map((reported?.statuses ?? []).map((s) => [s.name, s]));
    const wanted = new Set(desired.map((spec) => spec.name));
    return {
      hostId,
      agentConnected: this.deps.agents.isConnected(hostId),
      reportedAt: reported ? reported.at.toISOString() : null,
      leaving: (reported?.statuses ?? []).filter((st) => !wanted.has(st.name)),
      stack: this.stackNotes.get(hostId) ?? null,
      services: desired.map((spec) => ({
        name: spec.name,
        cmd: spec.cmd,
        dependsOn: spec.dependsOn,
        ports: spec.ports,
        envNames: Object.keys(spec.env).sort(),
        configHash: spec.configHash,
        status: statuses.get(spec.name) ?? null,
      })),
    };
  }
}

/** A spec as given, its defaults applied and its configuration hashed (the hash is ours to set). */
function withConfigHash(input: unknown, index: number, hashKey: string): ServiceSpec {
  const given = input && typeof input === 'object' ? { ...(input as Record<string, unknown>), configHash: '' } : input;
  const parsed = serviceSpec.safeParse(given);
  if (!parsed.success) {
    const name = (input as { name?: unknown } | null)?.name;
    const label = typeof name === 'string' ? `service ${JSON.stringify(name)}` : `service #${index + 1}`;
    const problems = parsed.error.issues.map((issue) => `${label}: ${issue.path.join('.') || 'spec'}: ${issue.message}`);
    throw new BerthError('validation_failed', problems.join('\n'), 'Fix the services and send them again; nothing was changed.', { problems });
  }
  const { configHash: _ignored, ...config } = parsed.data;
  return { ...parsed.data, configHash: configHash(config, hashKey) };
}

function desiredOf(row: HostRow): ServiceSpec[] {
  return row.services.flatMap((raw) => {
    const parsed = serviceSpec.safeParse(raw);
    return parsed.success ? [parsed.data] : [];
  });
}

function notLive(hostId: string, state: string): BerthError {
  return new BerthError('invalid_state', `host ${hostId} is ${state}; services run only on a live host`, 'Launch or claim a host first.', { hostId });
}
