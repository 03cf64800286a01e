/**
 * Holds a scoped token (scope.ts) to its groups, route by route: a route that acts on one thing
 * (a host, an environment, a command, a claim) checks that thing's group before its handler runs;
 * a listing is filtered to the scope as its answer goes out; what every user shares (pools,
 * images) passes. Every other route is refused to a scoped token, so a new route is closed to it
 * until someone decides here what its scope is. An unscoped token is not looked at.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { BerthError } from '../core/errors.js';
import { inScope, outOfScope, requireInScope } from './scope.js';
import type { Principal } from './token-service.js';

export interface ScopeLookups {
  /** The group of each host (null: none); hosts not found are left out. */
  hostGroups(tenantId: string, hostIds: readonly string[]): Promise<Map<string, string | null>>;
  /** The id of the token that sent a command (null: berth itself); undefined when there is no such command. */
  commandSender(tenantId: string, commandId: string): Promise<string | null | undefined>;
  /** The group a claim is for; undefined when there is no such claim. */
  claimGroup(tenantId: string, claimId: string): Promise<string | undefined>;
}

type Scoped = Principal & { scope: string[] };
type Check = (request: FastifyRequest, who: Scoped, lookups: ScopeLookups) => Promise<void>;
type Filter = (payload: Record<string, unknown>, who: Scoped, lookups: ScopeLookups) => Promise<Record<string, unknown>>;

const text = (value: unknown): string => (typeof value === 'string' ? value : '');
const param = (request: FastifyRequest, name: string): string => text((request.params as Record<string, unknown>)[name]);
const body = (request: FastifyRequest): Record<string, unknown> => (request.body ?? {}) as Record<string, unknown>;

/** A host of the scope's groups; a host that does not exist is left to its route (404). */
const host: Check = async (request, who, lookups) => {
  const id = param(request, 'id');
  const groups = await lookups.hostGroups(who.tenantId, [id]);
  if (groups.has(id)) requireInScope(who, groups.get(id), `host ${id}`);
};
const namedGroup =
  (pick: (request: FastifyRequest) => unknown, what: string): Check =>
  (request, who) => {
    const name = text(pick(request));
    requireInScope(who, name, `${what} ${name}`);
    return Promise.resolve();
  };
/**
 * A command this token sent. Not "a command to hosts of the scope": a host handed on (released with
 * reuse) keeps its id, and its last user's commands are not the next one's to read.
 */
const command: Check = async (request, who, lookups) => {
  const id = param(request, 'id');
  const sender = await lookups.commandSender(who.tenantId, id);
  if (sender !== undefined && sender !== who.tokenId) throw outOfScope(who, `command ${id} (sent by another token)`);
};
/** A new command: to hosts or a group of the scope; tags alone would reach the whole tenant. */
const commandTargets: Check = async (request, who, lookups) => {
  const targets = (body(request)['targets'] ?? {}) as { hostIds?: string[]; group?: string };
  if (targets.group !== undefined) requireInScope(who, targets.group, `group ${targets.group}`);
  else if (!targets.hostIds?.length) throw new BerthError('forbidden', `token "${who.tokenName}" is scoped to groups, so its commands name their hosts or a group`, 'Target --host ID or --group NAME (with --tag to narrow it).');
  const ids = targets.hostIds ?? [];
  const groups = await lookups.hostGroups(who.tenantId, ids);
  const outside = ids.find((id) => groups.has(id) && !inScope(who.scope, groups.get(id)));
  if (outside !== undefined) throw outOfScope(who, `host ${outside}`);
};
const claim: Check = async (request, who, lookups) => {
  const id = param(request, 'id');
  const group = await lookups.claimGroup(who.tenantId, id);
  if (group !== undefined) requireInScope(who, group, `claim ${id}`);
};

/** A listing's `key` array, cut to the items `keep` (made once per answer, from all of them) passes. */
const listOf =
  <T>(key: string, keep: (who: Scoped, lookups: ScopeLookups, all: T[]) => Promise<(item: T) => boolean>): Filter =>
  async (payload, who, lookups) => {
    const items = (payload[key] ?? []) as T[];
    return { ...payload, [key]: items.filter(await keep(who, lookups, items)) };
  };
const byGroup = <T extends { group?: string | null }>(key: string): Filter => listOf<T>(key, (who) => Promise.resolve((item) => inScope(who.scope, item.group)));
const byName = <T extends { name: string }>(key: string): Filter => listOf<T>(key, (who) => Promise.resolve((item) => inScope(who.scope, item.name)));
/** Items on hosts (a terminal's): those whose hosts are all of the scope's groups now. */
const byHosts = <T>(key: string, hostsOf: (item: T) => string[]): Filter =>
  listOf<T>(key, async (who, lookups, all) => {
    const groups = await lookups.hostGroups(who.tenantId, [...new Set(all.flatMap(hostsOf))]);
    return (item) => {
      const hosts = hostsOf(item);
      return hosts.length > 0 && hosts.every((id) => inScope(who.scope, groups.get(id)));
    };
  });

const CHECKS: Record<string, Check> = {
  'GET /v1/hosts/:id': host,
  'GET /v1/hosts/:id/stats': host,
  'GET /v1/hosts/:id/config': host,
  'GET /v1/hosts/:id/services': host,
  'PUT /v1/hosts/:id/services': host,
  'POST /v1/hosts/:id/services/:name/:action': host,
  'POST /v1/hosts/:id/reset': host,
  'POST /v1/hosts/:id/release': host,
  'PATCH /v1/hosts/:id/tags': host,
  'POST /v1/commands': commandTargets,
  'GET /v1/commands/:id': command,
  'GET /v1/commands/:id/output': command,
  'POST /v1/commands/:id/cancel': command,
  'POST /v1/pools/:name/claims': namedGroup((r) => body(r)['group'], 'group'),
  'GET /v1/claims/:id': claim,
  'GET /v1/groups/:name/hosts': namedGroup((r) => param(r, 'name'), 'group'),
  'POST /v1/environments': namedGroup((r) => body(r)['name'], 'environment'),
  'GET /v1/environments/:name': namedGroup((r) => param(r, 'name'), 'environment'),
  'POST /v1/environments/:name/deploy': namedGroup((r) => param(r, 'name'), 'environment'),
  'DELETE /v1/environments/:name': namedGroup((r) => param(r, 'name'), 'environment'),
  'PATCH /v1/environments/:name': namedGroup((r) => param(r, 'name'), 'environment'),
  'PATCH /v1/environments/:name/settings': namedGroup((r) => param(r, 'name'), 'environment'),
  'POST /v1/environments/:name/restart': namedGroup((r) => param(r, 'name'), 'environment'),
  'POST /v1/environments/:name/sleep': namedGroup((r) => param(r, 'name'), 'environment'),
  'PUT /v1/environments/:name': namedGroup((r) => param(r, 'name'), 'environment'),
  'POST /v1/environments/:name/scale': namedGroup((r) => param(r, 'name'), 'environment'),
  'POST /v1/environments/:name/access': namedGroup((r) => param(r, 'name'), 'environment'),
  'POST /v1/environments/:name/wake': namedGroup((r) => param(r, 'name'), 'environment'),
};

const FILTERS: Record<string, Filter> = {
  'GET /v1/hosts': byGroup('hosts'),
  'GET /v1/pools/:name/hosts': byGroup('hosts'),
  'GET /v1/claims': byGroup('claims'),
  'GET /v1/groups': byName('groups'),
  'GET /v1/environments': byName('environments'),
  'GET /v1/commands': listOf<{ createdBy: { tokenId: string } | null }>('commands', (who) => Promise.resolve((c) => c.createdBy?.tokenId === who.tokenId)),
  'GET /v1/shells': byHosts<{ hostId: string }>('sessions', (s) => [s.hostId]),
};

/** What every user of the platform shares. */
const SHARED = new Set(['GET /v1/whoami', 'GET /v1/pools', 'GET /v1/pools/:name', 'GET /v1/images', 'GET /v1/images/:name', 'GET /v1/driver', 'GET /openapi.json']);

function keyOf(request: FastifyRequest): string {
  const method = request.method === 'HEAD' ? 'GET' : request.method;
  return `${method} ${request.routeOptions.url ?? ''}`;
}

function scoped(request: FastifyRequest): Scoped | undefined {
  const p = request.principal;
  return p?.scope ? { ...p, scope: p.scope } : undefined;
}

export function installScopeGuard(app: FastifyInstance, lookups: ScopeLookups): void {
  app.addHook('preHandler', async (request) => {
    const who = scoped(request);
    if (!who) return;
    const key = keyOf(request);
    // No route matched: its 404 says so, to anyone.
    if (request.routeOptions.url === undefined || SHARED.has(key) || FILTERS[key] || key.startsWith('GET /docs')) return;
    const check = CHECKS[key];
    if (!check) {
      throw new BerthError('forbidden', `token "${who.tokenName}" is scoped to groups (${who.scope.join(', ')}), and ${key} is not open to a scoped token`, 'Tenant-wide views (the dashboard, /metrics, events) need a token without a scope.');
    }
    await check(request, who, lookups);
  });
  app.addHook('preSerialization', async (request, reply, payload: unknown) => {
    const who = scoped(request);
    const filter = who && reply.statusCode < 300 ? FILTERS[keyOf(request)] : undefined;
    if (!who || !filter || typeof payload !== 'object' || payload === null) return payload;
    return filter(payload as Record<string, unknown>, who, lookups);
  });
}

/** For the terminal endpoint, which is not a route: a host of the scope's groups. */
export async function requireHostInScope(principal: Principal, hostId: string, lookups: Pick<ScopeLookups, 'hostGroups'>): Promise<void> {
  if (!principal.scope) return;
  const groups = await lookups.hostGroups(principal.tenantId, [hostId]);
  if (groups.has(hostId)) requireInScope(principal, groups.get(hostId), `host ${hostId}`);
}
