/**
 * An environment's life: `creating` (claiming hosts, starting services, routing) → `ready`;
 * `ready` → `deploying` (new hosts for a new ref, then the route switches) → `ready`; `ready` →
 * `configuring` (new settings, host by host; settings.ts) or `restarting` (its services, host by
 * host; restart.ts) or `scaling` (review hosts added or removed in place; scale.ts) or `healing`
 * (hosts that were lost replaced; heal.ts) → `ready`; `ready` or `failed` → `removing` → gone. A create that fails releases what it claimed and is gone too;
 * `failed` is where a deploy or a recovery that could not restore the route leaves it. `ready` →
 * `sleeping` (idle: its hosts go back to the pool, the router holds its next request; sleep.ts) →
 * `waking` (hosts claimed again) → `ready`, or back to `sleeping` when the wake fails.
 */
import { BerthError } from '../core/errors.js';

export const ENVIRONMENT_STATES = ['creating', 'ready', 'deploying', 'configuring', 'restarting', 'scaling', 'healing', 'sleeping', 'waking', 'failed', 'removing'] as const;
export type EnvironmentState = (typeof ENVIRONMENT_STATES)[number];

const NEXT: Record<EnvironmentState, readonly EnvironmentState[]> = {
  creating: ['ready', 'failed', 'removing'],
  ready: ['deploying', 'configuring', 'restarting', 'scaling', 'healing', 'sleeping', 'removing', 'failed'],
  deploying: ['ready', 'failed', 'removing'],
  configuring: ['ready', 'failed'],
  restarting: ['ready', 'failed'],
  scaling: ['ready', 'failed'],
  healing: ['ready', 'failed'],
  sleeping: ['waking', 'removing'],
  waking: ['ready', 'sleeping'],
  failed: ['removing', 'deploying'],
  removing: [],
};

export function canEnvTransition(from: EnvironmentState, to: EnvironmentState): boolean {
  return NEXT[from].includes(to);
}

export function assertEnvTransition(name: string, from: EnvironmentState, to: EnvironmentState): void {
  if (!canEnvTransition(from, to)) {
    throw new BerthError('invalid_state', `environment ${name} cannot go from ${from} to ${to}`, 'This is a bug in berth: please report it.');
  }
}
