/**
 * Puts an environment's services on hosts: claims them from the stack's pool with the tags that
 * make each host run what it should (berth.mode review: the whole stack; service: one service,
 * with the addresses of the services it depends on), then waits until every service reports ready
 * under its new configuration. Each claimed host is handed to `onClaimed` at once, so a caller can
 * record it and release it should anything later fail: nothing is ever left claimed by mistake.
 */
import { BerthError } from '../core/errors.js';
import { settleAll } from '../core/settle-all.js';
import type { ClaimView } from '../pools/views.js';
import { ENV_OVERRIDE_TAG_PREFIX, MODE_TAG, SERVICE_TAG, STACK_TAG } from '../stacks/modes.js';
import type { StackSpec } from '../stacks/spec.js';
import type { ClaimInput } from '../pools/spec.js';
import type { EnvHostRecord } from '../store/schema.js';
import { checkBackend } from './backend-check.js';
import { replicasOf } from './replicas.js';

/** The tag that says which environment a host serves (system tags have a colon, as berth:group). */
export const ENVIRONMENT_NAME_TAG = 'berth:environment';

export interface PlacementDeps {
  claim(tenantId: string, pool: string, input: ClaimInput, signal?: AbortSignal, opts?: { refillAfter?: Promise<unknown> }): Promise<ClaimView>;
  /** Resolves once every service of the host is ready under its current config (ServicesService.awaitReady). */
  awaitServicesReady(tenantId: string, hostId: string, timeoutMs: number, label: string): Promise<unknown>;
}

export interface PlacementRequest {
  tenantId: string;
  name: string;
  stack: StackSpec;
  pool: string;
  mode: 'review' | 'service';
  ref: string | null;
  /** Review hosts, or hosts of every service without a count of its own (replicas.ts). */
  replicas: number;
  /** Service mode: services with a count of their own. */
  serviceReplicas?: Record<string, number>;
  owner: string | null;
  settings: Record<string, string>;
  generation: number;
  /** Run on each host at its claim, before its services start (a slug's download). */
  init?: string[];
  /** The pool refills once this settles (the whole create), not while the services start. */
  refillAfter?: Promise<unknown>;
  /** What the router will reach: each of its hosts must answer there over the network too. */
  target: RouteTarget;
  /**
   * Service mode, a scale in place (scale.ts): only this many more hosts of these services, each
   * told the addresses of the environment's `existing` hosts as its siblings were at their placement.
   */
  adding?: { counts: Record<string, number>; existing: readonly PlacedHost[] };
  /** Epoch ms by which every service must be ready. */
  deadline: number;
  signal?: AbortSignal;
  onClaimed: (host: PlacedHost) => Promise<void>;
}

/**
 * What the environment service's own placement takes besides the environment and its stack: the
 * request's other fields, the list each claimed host is pushed onto (and recorded with `recordWith`,
 * the hosts it keeps meanwhile), the services attached to a load balancer so far, and whether the
 * route it sets is private.
 */
export type PlaceOptions = Omit<PlacementRequest, 'tenantId' | 'name' | 'stack' | 'onClaimed' | 'target'> & {
  claimed: EnvHostRecord[];
  balanced: Set<string>;
  recordWith?: EnvHostRecord[];
  /** Hosts routed besides the placed ones (a scale in place adds to them). */
  routeWith?: readonly PlacedHost[];
  private: boolean;
};

export interface PlacedHost extends EnvHostRecord {
  ip: string;
}

export interface Placement {
  hosts: PlacedHost[];
  /**
   * claimMs: claims (hosts picked and initialised); servicesMs: from then until all were ready;
   * readyMs: how much longer the routed service took to answer over the network (checked meanwhile).
   */
  timings: { claimMs: number; initMs: number; servicesMs: number; readyMs: number };
}

/** Stage timings as environments keep and show them: ms, to a tenth. */
export function roundTimings(timings: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v * 10) / 10]));
}

/** Where the router sends an environment's traffic: `web`, or else the first service with a port. */
export interface RouteTarget {
  service: string;
  port: number;
  healthPath: string;
}

export function routeTarget(stack: StackSpec): RouteTarget | undefined {
  const services = Object.values(stack.services);
  const portOf = (s: (typeof services)[number]) => s.ports[0] ?? s.ready?.http?.port;
  const chosen = services.find((s) => s.name === 'web' && portOf(s) !== undefined) ?? services.find((s) => portOf(s) !== undefined);
  const port = chosen ? portOf(chosen) : undefined;
  if (!chosen || port === undefined) return undefined;
  return { service: chosen.name, port, healthPath: chosen.ready?.http?.path ?? '/' };
}

export async function placeServices(deps: PlacementDeps, req: PlacementRequest): Promise<Placement> {
  const t0 = performance.now();
  const claimMs: number[] = [];
  const initMs: number[] = [];
  const placed: PlacedHost[] = [];
  const claimOne = async (service: string | null, tags: Record<string, string>): Promise<PlacedHost> => {
    const left = Math.max(1, Math.floor((req.deadline - Date.now()) / 1000));
    const view = await deps.claim(req.tenantId, req.pool, { group: req.name, tags, init: req.init ?? [], env: {}, deadline: Math.min(left, 3600), maxAttempts: 3 }, req.signal, req.refillAfter ? { refillAfter: req.refillAfter } : {});
    if (!view.host?.ip) throw new BerthError('internal', `claim ${view.id} gave no host address`, 'Retry; this is a bug if it persists.');
    claimMs.push(view.timings['totalMs'] ?? 0);
    initMs.push(view.timings['initMs'] ?? 0);
    const host: PlacedHost = { hostId: view.host.id, service, generation: req.generation, ip: view.host.ip };
    placed.push(host);
    await req.onClaimed(host);
    return host;
  };
  // The claim sent the services its tags ask for (ClaimService.onClaimed) before it answered. The
  // routed service is checked over the network at the same time (a host of a review pool answers
  // at once), and the longer of the two is the host's readiness.
  let readyMs = 0;
  const ready = async (host: PlacedHost) => {
    const routed = host.service === null || host.service === req.target.service;
    const answered = routed ? checkBackend(`http://${host.ip}:${req.target.port}${req.target.healthPath}`, req.deadline, req.signal).then(() => performance.now()) : Promise.resolve(0);
    answered.catch(() => undefined);
    await waitReady(deps, req, host);
    const servicesAt = performance.now();
    readyMs = Math.max(readyMs, (await answered) - servicesAt);
  };

  const tClaims = performance.now();
  let servicesStart = tClaims;
  if (req.mode === 'review') {
    // Every claim ends before a failure is thrown: one still under way would land after the caller
    // gave back what it had, in a group no one records.
    const hosts = await settleAll(Array.from({ length: req.replicas }, () => claimOne(null, hostTags(req, { [MODE_TAG]: 'review' }))));
    servicesStart = performance.now();
    await Promise.all(hosts.map(ready));
  } else {
    // Dependencies first, so each service's hosts are told where the services it needs answer:
    // the services of the levels below its own.
    const levels = dependencyLevels(req.stack);
    const countOf = (service: string) => (req.adding ? (req.adding.counts[service] ?? 0) : replicasOf({ replicas: req.replicas, serviceReplicas: req.serviceReplicas ?? {} }, service));
    for (const [i, level] of levels.entries()) {
      const below = new Set(levels.slice(0, i).flat());
      const existing = (req.adding?.existing ?? []).filter((h) => h.service !== null && below.has(h.service));
      const addresses = serviceAddresses(req.stack, [...existing, ...placed]);
      const hosts = await settleAll(level.flatMap((service) => Array.from({ length: countOf(service) }, () => claimOne(service, hostTags(req, { [MODE_TAG]: 'service', [SERVICE_TAG]: service, ...addresses })))));
      if (hosts.length === 0) continue;
      servicesStart = performance.now();
      await Promise.all(hosts.map(ready));
    }
  }
  const claimTotal = servicesStart - tClaims;
  return {
    hosts: placed,
    timings: { claimMs: Math.max(claimTotal, ...claimMs), initMs: Math.max(0, ...initMs), servicesMs: performance.now() - t0 - claimTotal - Math.max(0, readyMs), readyMs: Math.max(0, readyMs) },
  };
}

function hostTags(req: PlacementRequest, mode: Record<string, string>): Record<string, string> {
  const tags: Record<string, string> = { [STACK_TAG]: req.stack.name, ...mode, [ENVIRONMENT_NAME_TAG]: req.name, [`${ENV_OVERRIDE_TAG_PREFIX}BERTH_ENVIRONMENT`]: req.name };
  if (req.ref !== null) {
    tags['berth.ref'] = req.ref;
    tags[`${ENV_OVERRIDE_TAG_PREFIX}BERTH_REF`] = req.ref;
  }
  if (req.owner !== null) tags['owner'] = req.owner;
  for (const [key, value] of Object.entries(req.settings)) tags[`${ENV_OVERRIDE_TAG_PREFIX}${key}`] = value;
  return tags;
}

/** The port other services reach a service on (its `BERTH_SERVICE_<NAME>_ADDR`); undefined: it listens on none. */
export function listeningPort(service: StackSpec['services'][string]): number | undefined {
  return service.ports[0] ?? service.ready?.http?.port ?? service.ready?.tcp?.port;
}

/** `BERTH_SERVICE_<NAME>_ADDR=ip:port,…` for every placed service that listens. */
function serviceAddresses(stack: StackSpec, placed: readonly PlacedHost[]): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const service of Object.values(stack.services)) {
    const port = listeningPort(service);
    const hosts = placed.filter((h) => h.service === service.name);
    if (port === undefined || hosts.length === 0) continue;
    const key = `BERTH_SERVICE_${service.name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_ADDR`;
    tags[`${ENV_OVERRIDE_TAG_PREFIX}${key}`] = hosts.map((h) => `${h.ip}:${port}`).join(',');
  }
  return tags;
}

/** The stack's services in levels: each level depends only on the levels before it. */
export function dependencyLevels(stack: StackSpec): string[][] {
  const level = new Map<string, number>();
  const depth = (name: string, seen: Set<string>): number => {
    const known = level.get(name);
    if (known !== undefined) return known;
    if (seen.has(name)) return 0; // stacks are checked for cycles when applied; never loop here
    seen.add(name);
    const deps = Object.hasOwn(stack.services, name) ? (stack.services[name]?.dependsOn ?? []) : [];
    const d = deps.length === 0 ? 0 : 1 + Math.max(...deps.map((dep) => depth(dep, seen)));
    level.set(name, d);
    return d;
  };
  for (const name of Object.keys(stack.services)) depth(name, new Set());
  const levels: string[][] = [];
  for (const [name, d] of level) (levels[d] ??= []).push(name);
  return levels.filter((l) => l.length > 0);
}

function waitReady(deps: PlacementDeps, req: PlacementRequest, host: PlacedHost): Promise<unknown> {
  return deps.awaitServicesReady(req.tenantId, host.hostId, Math.max(0, req.deadline - Date.now()), `environment ${req.name}: host ${host.hostId}`);
}
