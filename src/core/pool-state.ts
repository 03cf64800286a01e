/**
 * Where a host stands towards its pool and group (its "slot"), separate from the host's own
 * lifecycle (host-state.ts): a running host may be warming, ready, claimed and so on.
 *
 *   warming ──▶ ready ──▶ claiming ──▶ claimed ──▶ released
 *      │          │          │            │
 *      ▼          ▼          ▼            ▼
 *   retiring ◀─ quarantined ◀┘        (reuse) warming
 *
 * `ready` means: agent connected, warm-up succeeded, health check passed — a claim may take it.
 * `claiming` is held only while a claim runs its init; it ends `claimed` or `quarantined`, never
 * stays. `retiring` hosts are being terminated (old image, idle too long, unhealthy, pool removed).
 */
import { BerthError } from './errors.js';

export const SLOTS = ['warming', 'ready', 'claiming', 'claimed', 'quarantined', 'retiring', 'released'] as const;
export type Slot = (typeof SLOTS)[number];

const SLOT_TRANSITIONS: Record<Slot, readonly Slot[]> = {
  warming: ['ready', 'quarantined', 'retiring'],
  ready: ['claiming', 'quarantined', 'retiring'],
  claiming: ['claimed', 'quarantined', 'retiring'],
  claimed: ['released', 'warming', 'retiring'],
  quarantined: ['retiring'],
  retiring: ['released'],
  released: [],
};

export function canSlotTransition(from: Slot, to: Slot): boolean {
  return SLOT_TRANSITIONS[from].includes(to);
}

export function assertSlotTransition(id: string, from: Slot, to: Slot): void {
  if (!canSlotTransition(from, to)) {
    throw new BerthError('invalid_state', `host ${id} cannot go from ${from} to ${to} in its pool`, 'This is a bug in berth; please report it.');
  }
}

/**
 * A claim: `pending` while it picks a host and runs init; then `ready` (the host is the group's) or
 * `failed` (nothing of it is left in the group). A ready claim ends `released` with its host.
 */
export const CLAIM_STATES = ['pending', 'ready', 'failed', 'released'] as const;
export type ClaimState = (typeof CLAIM_STATES)[number];

const CLAIM_TRANSITIONS: Record<ClaimState, readonly ClaimState[]> = {
  pending: ['ready', 'failed'],
  ready: ['released'],
  failed: [],
  released: [],
};

export function canClaimTransition(from: ClaimState, to: ClaimState): boolean {
  return CLAIM_TRANSITIONS[from].includes(to);
}
