/**
 * Run Command statuses (AWS SSM's names) and the invocation state machine. A command's status is an
 * aggregate of its invocations'.
 */
export const INVOCATION_STATUSES = [
  'Pending',
  'InProgress',
  'Success',
  'Failed',
  'TimedOut',
  'Cancelling',
  'Cancelled',
  'Undeliverable',
  'DeliveryTimedOut',
] as const;
export type InvocationStatus = (typeof INVOCATION_STATUSES)[number];
export type CommandStatus = InvocationStatus;

export const TERMINAL_STATUSES: readonly InvocationStatus[] = ['Success', 'Failed', 'TimedOut', 'Cancelled', 'Undeliverable', 'DeliveryTimedOut'];
export const OPEN_STATUSES: readonly InvocationStatus[] = ['Pending', 'InProgress', 'Cancelling'];

export function isTerminal(status: InvocationStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

const TRANSITIONS: Record<InvocationStatus, readonly InvocationStatus[]> = {
  Pending: ['InProgress', 'Success', 'Failed', 'TimedOut', 'Cancelling', 'Cancelled', 'Undeliverable', 'DeliveryTimedOut'],
  InProgress: ['Success', 'Failed', 'TimedOut', 'Cancelling', 'Cancelled'],
  Cancelling: ['Cancelled', 'Success', 'Failed', 'TimedOut'],
  Success: [],
  Failed: [],
  TimedOut: [],
  Cancelled: [],
  Undeliverable: [],
  DeliveryTimedOut: [],
};

export function canTransition(from: InvocationStatus, to: InvocationStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/**
 * Aggregate status of a command: open while any invocation is open; then the worst outcome wins,
 * so a single failure is never hidden behind other hosts' successes.
 */
export function aggregateStatus(statuses: readonly InvocationStatus[]): CommandStatus {
  if (statuses.length === 0) return 'Undeliverable';
  if (statuses.includes('Cancelling')) return 'Cancelling';
  if (statuses.includes('InProgress')) return 'InProgress';
  if (statuses.includes('Pending')) return statuses.every((s) => s === 'Pending') ? 'Pending' : 'InProgress';
  const precedence: InvocationStatus[] = ['Failed', 'TimedOut', 'DeliveryTimedOut', 'Undeliverable', 'Cancelled', 'Success'];
  for (const status of precedence) if (statuses.includes(status)) return status;
  return 'Failed';
}
