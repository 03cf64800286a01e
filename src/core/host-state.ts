/**
 * The host state machine. Agent connectivity is tracked separately (a running host's agent may be
 * briefly disconnected); "ready" means state `running` with the agent connected.
 *
 *   launching ──▶ booting ──▶ running ──▶ terminating ──▶ terminated
 *       │            │           │              ▲
 *       ▼            ▼           ▼              │
 *     failed        lost ◀──── lost ────────────┘  (lost/failed hosts are terminated to clean up)
 */
import { BerthError } from './errors.js';

export const HOST_STATES = ['launching', 'booting', 'running', 'terminating', 'terminated', 'failed', 'lost'] as const;
export type HostState = (typeof HOST_STATES)[number];

const TRANSITIONS: Record<HostState, readonly HostState[]> = {
  launching: ['booting', 'running', 'failed', 'terminating'],
  booting: ['running', 'lost', 'failed', 'terminating'],
  // running -> booting: the host is reset in place (its agent enrols again).
  running: ['lost', 'terminating', 'booting'],
  lost: ['running', 'terminating'],
  failed: ['terminating'],
  terminating: ['terminated', 'failed'],
  terminated: [],
};

export function canTransition(from: HostState, to: HostState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(id: string, from: HostState, to: HostState): void {
  if (!canTransition(from, to)) {
    throw new BerthError('invalid_state', `host ${id} cannot go from ${from} to ${to}`, 'Check the host state with `berth host ls`.');
  }
}

/** States in which the host may still have processes and resources on the backend. */
export const LIVE_HOST_STATES: readonly HostState[] = ['launching', 'booting', 'running', 'lost', 'terminating'];
