/**
 * How many hosts each service of an environment gets. One count for every service (`--replicas 2`)
 * and, in service mode, counts of its own for some services (`--replicas worker=1`, as `heroku
 * ps:scale web=3 worker=1` or a Fly process group's count): a production fleet runs three web
 * hosts in front of one worker, not three of each. A review host runs the whole stack, so review
 * mode has the one count only.
 *
 * Changes read as a person means them: `N` alone is every service N (their own counts dropped);
 * `SERVICE=N` alone changes that service and keeps the rest; both give the one count and exactly
 * those of their own.
 */
import { z } from 'zod';
import { BerthError } from '../core/errors.js';
import { SERVICE_NAME_PATTERN } from '../protocol/messages.js';
import type { StackSpec } from '../stacks/spec.js';

export const MAX_REPLICAS = 100;

export const replicaCount = z.number().int().min(1, 'replicas must be at least 1').max(MAX_REPLICAS);

export const serviceReplicasField = z
  .record(z.string().regex(SERVICE_NAME_PATTERN, 'a service name is 1-63 lowercase letters, digits, "_" and "-"'), replicaCount)
  .describe('Service mode: hosts for these services, each its own count (the others get `replicas`)');

export interface ReplicaCounts {
  /** Hosts of every service without a count of its own (service mode), or review hosts. */
  replicas: number;
  /** Service mode: services with a count of their own. */
  serviceReplicas: Record<string, number>;
}

/** A change of counts, as `env scale` and `env up` take it (see the header). */
export interface ReplicaChange {
  replicas?: number | undefined;
  services?: Record<string, number> | undefined;
}

/** The hosts `service` gets. */
export function replicasOf(counts: ReplicaCounts, service: string): number {
  return counts.serviceReplicas[service] ?? counts.replicas;
}

/** `current` changed as `change` says (see the header). */
export function applyReplicaChange(current: ReplicaCounts, change: ReplicaChange): ReplicaCounts {
  const own = change.replicas !== undefined ? (change.services ?? {}) : { ...current.serviceReplicas, ...change.services };
  return { replicas: change.replicas ?? current.replicas, serviceReplicas: Object.fromEntries(Object.entries(own).sort(([a], [b]) => a.localeCompare(b))) };
}

export function sameCounts(a: ReplicaCounts, b: ReplicaCounts): boolean {
  const keys = Object.keys(a.serviceReplicas);
  return a.replicas === b.replicas && keys.length === Object.keys(b.serviceReplicas).length && keys.every((key) => b.serviceReplicas[key] === a.serviceReplicas[key]);
}

/** Counts of their own only in service mode, and only for services of the stack (else 4xx, nothing done). */
export function checkServiceReplicas(stack: StackSpec | undefined, mode: string, serviceReplicas: Record<string, number>): void {
  const named = Object.keys(serviceReplicas);
  if (named.length === 0) return;
  if (mode !== 'service') {
    throw new BerthError('validation_failed', `a review environment runs every service on each host, so ${named.join(', ')} cannot have a count of its own`, 'Give one count (--replicas N), or use --mode service to give each service its own hosts.');
  }
  const unknown = stack ? named.filter((service) => !Object.hasOwn(stack.services, service)) : [];
  if (stack && unknown.length > 0) {
    throw new BerthError('validation_failed', `stack ${stack.name} has no service ${unknown.join(', ')}`, `Its services: ${Object.keys(stack.services).join(', ')}.`);
  }
}

/** `2 replicas`, `2 replicas (worker 1)`. */
export function describeCounts(counts: ReplicaCounts): string {
  const own = Object.entries(counts.serviceReplicas).map(([service, n]) => `${service} ${n}`);
  return `${counts.replicas} replica${counts.replicas === 1 ? '' : 's'}${own.length > 0 ? ` (${own.join(', ')})` : ''}`;
}

/** An environment row's counts. */
export function countsOf(row: { replicas: number; service_replicas: Record<string, number> | null }): ReplicaCounts {
  return { replicas: row.replicas, serviceReplicas: row.service_replicas ?? {} };
}

