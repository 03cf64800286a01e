/**
 * Events made from what the store returned for a change (the compare-and-set's row), so each
 * carries the ids that correlate it: host, claim, command, pool, group, environment.
 */
import type { ClaimRow, HostRow, InvocationRow } from '../store/schema.js';
import type { EventKind, NewEvent } from './types.js';

type Fields = { [K in keyof NewEvent]?: NewEvent[K] | null };

/** Leaves out what is unknown or empty, so events hold only what they say. */
function event(kind: EventKind, id: string, tenantId: string, state: string, fields: Omit<Fields, 'kind' | 'id' | 'tenantId' | 'state'>): NewEvent {
  const out: NewEvent = { kind, id, tenantId, state };
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null && value !== '') (out as unknown as Record<string, unknown>)[key] = value;
  }
  return out;
}

/** The state left, when the compare-and-set allowed only one. */
function single(from: readonly string[] | string | undefined): string | undefined {
  if (typeof from === 'string') return from;
  return from?.length === 1 ? from[0] : undefined;
}

export function hostEvent(row: HostRow, from?: readonly string[] | string, reason?: string): NewEvent {
  return event('host', row.id, row.tenant_id, row.state, { from: single(from), hostId: row.id, pool: row.pool, group: row.group_name, claimId: row.claim_id, reason });
}

/** A pool host moved to another slot (warming, ready, claiming, claimed, …). */
export function slotEvent(row: HostRow, from?: string): NewEvent {
  return event('pool', row.id, row.tenant_id, row.slot ?? 'none', { from, hostId: row.id, pool: row.pool, group: row.group_name, claimId: row.claim_id });
}

/**
 * A pool itself: created, updated, rolled (a new generation), roll-complete (no waiting host of an
 * older one left), resized (by its schedule or demand) or removed.
 */
export function poolEvent(tenantId: string, pool: string, state: 'created' | 'updated' | 'rolled' | 'roll-complete' | 'resized' | 'removed'): NewEvent {
  return event('pool', pool, tenantId, state, { pool });
}

export function claimEvent(row: ClaimRow, from?: string): NewEvent {
  const error = row.error as { message?: unknown } | null;
  return event('claim', row.id, row.tenant_id, row.state, {
    from,
    claimId: row.id,
    hostId: row.host_id,
    pool: row.pool,
    group: row.group_name,
    reason: typeof error?.message === 'string' ? error.message : undefined,
  });
}

/** A claim just recorded (pending: it is picking a host). */
export function claimCreated(claim: { id: string; tenantId: string; pool: string; group: string }): NewEvent {
  return event('claim', claim.id, claim.tenantId, 'pending', { claimId: claim.id, pool: claim.pool, group: claim.group });
}

export function invocationEvent(row: InvocationRow, from?: readonly string[]): NewEvent {
  return event('invocation', `${row.command_id}/${row.host_id}`, row.tenant_id, row.status, { from: single(from), commandId: row.command_id, hostId: row.host_id, reason: row.status_detail });
}

/** A command's status (its invocations' aggregate): when it is created, and when it is done. */
export function commandEvent(tenantId: string, commandId: string, status: string, hostIds: readonly string[]): NewEvent {
  return event('command', commandId, tenantId, status, { commandId, hostId: hostIds.length === 1 ? hostIds[0] : undefined });
}

export function environmentEvent(row: { tenant_id: string; name: string; pool: string; state: string }, from?: readonly string[], reason?: string): NewEvent {
  return event('environment', row.name, row.tenant_id, row.state, { from: single(from), environment: row.name, pool: row.pool, reason });
}

/**
 * Agents report all their services' statuses after any change; this keeps each service's last
 * state so only changes become events. Kept across agent reconnects (a reconnect changes nothing);
 * forgotten with the host.
 */
export class ServiceStates {
  private readonly last = new Map<string, Map<string, string>>();

  changes(tenantId: string, hostId: string, statuses: readonly { name: string; state: string; reason: string }[]): NewEvent[] {
    let known = this.last.get(hostId);
    if (!known) this.last.set(hostId, (known = new Map<string, string>()));
    const out: NewEvent[] = [];
    for (const status of statuses) {
      const from = known.get(status.name);
      if (from === status.state) continue;
      known.set(status.name, status.state);
      out.push(event('service', `${hostId}/${status.name}`, tenantId, status.state, { from, hostId, service: status.name, reason: status.reason }));
    }
    return out;
  }

  forget(hostId: string): void {
    this.last.delete(hostId);
  }
}
