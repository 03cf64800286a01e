import { describe, expect, it } from 'vitest';
import { aggregateStatus, canTransition as canInvocation, INVOCATION_STATUSES, isTerminal } from './command-status.js';
import { assertTransition, canTransition as canHost, HOST_STATES } from './host-state.js';

describe('host state machine', () => {
  it('lets a host go only forward to termination, and never out of terminated', () => {
    expect(canHost('launching', 'booting')).toBe(true);
    expect(canHost('running', 'terminating')).toBe(true);
    expect(canHost('terminating', 'terminated')).toBe(true);
    for (const to of HOST_STATES) expect(canHost('terminated', to)).toBe(false);
    expect(canHost('running', 'launching')).toBe(false);
    expect(() => assertTransition('h-1', 'terminated', 'running')).toThrow(/cannot go from terminated to running/);
  });
});

describe('invocation statuses', () => {
  it('never leave a terminal status', () => {
    for (const from of INVOCATION_STATUSES.filter(isTerminal)) {
      for (const to of INVOCATION_STATUSES) expect(canInvocation(from, to)).toBe(false);
    }
  });

  it('aggregate into the command status, worst outcome first', () => {
    expect(aggregateStatus(['Pending', 'Pending'])).toBe('Pending');
    expect(aggregateStatus(['Pending', 'Success'])).toBe('InProgress');
    expect(aggregateStatus(['InProgress', 'Cancelling'])).toBe('Cancelling');
    expect(aggregateStatus(['Success', 'Success'])).toBe('Success');
    expect(aggregateStatus(['Success', 'Failed', 'TimedOut'])).toBe('Failed');
    expect(aggregateStatus(['Success', 'TimedOut'])).toBe('TimedOut');
    expect(aggregateStatus(['Success', 'Undeliverable'])).toBe('Undeliverable');
    expect(aggregateStatus([])).toBe('Undeliverable');
  });
});
