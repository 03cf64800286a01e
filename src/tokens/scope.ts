/**
 * A token's scope: the groups it may act in, for the platform whose every user (or branch, or CI
 * job) gets a group of their own. `alice` is the group alice; `alice-*` every group whose name
 * starts with `alice-`. An environment's hosts are in the group named after it, so a scope
 * `alice, alice-*` covers alice's environments `alice` and `alice-feature-x`, their hosts, and
 * the claims she makes into them.
 *
 * A scoped token (role read or use) sees and touches only what is in its scope: hosts of its
 * groups, the commands it sent (to them), its environments, claims, groups and terminals; besides, what every user of the platform shares (pools, images, the driver). Anything
 * tenant-wide (the dashboard, /metrics, events) is refused to it: scope-guard.ts.
 */
import { BerthError } from '../core/errors.js';
import type { Principal } from './token-service.js';

/** A group name (as `berth claim --group` takes it), or a prefix of one followed by `*`. */
export const SCOPE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\*?$/;

export function validateScope(scope: readonly string[]): void {
  if (scope.length === 0 || scope.length > 32) throw new BerthError('validation_failed', `a scope names 1-32 groups (got ${scope.length})`, 'Give --scope alice or --scope alice,alice-*.');
  const bad = scope.find((p) => !SCOPE_PATTERN.test(p));
  if (bad !== undefined) {
    throw new BerthError('validation_failed', `scope ${JSON.stringify(bad)} is not a group name or prefix`, 'Write a group name (alice) or a prefix ending in * (alice-*): letters, digits, . _ -.');
  }
}

/** Whether a group (null: none, as a pool's waiting host) is in the scope. */
export function inScope(scope: readonly string[], group: string | null | undefined): boolean {
  if (!group) return false;
  return scope.some((p) => (p.endsWith('*') ? group.startsWith(p.slice(0, -1)) : group === p));
}

/** Refuses what is outside a scoped principal's groups; an unscoped one passes. */
export function requireInScope(principal: Principal | undefined, group: string | null | undefined, what: string): void {
  if (!principal?.scope || inScope(principal.scope, group)) return;
  throw outOfScope(principal, what);
}

export function outOfScope(principal: Principal, what: string): BerthError {
  return new BerthError(
    'forbidden',
    `token "${principal.tokenName}" may act only in the groups ${(principal.scope ?? []).join(', ')}, and ${what} is not in them`,
    'Use a token whose scope covers it; `berth whoami` shows this one\'s.',
  );
}
