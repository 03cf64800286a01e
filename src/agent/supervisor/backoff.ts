/**
 * The restart policy as a pure function: given how a run ended, how long it lasted and how many quick
 * exits preceded it, decide whether to restart (after which delay) or give up, and say why.
 */
import type { ServiceExit, ServiceRestartPolicy } from '../../protocol/messages.js';

/** An exit as the supervisor saw it; `known` is false for an adopted process (not our child). */
export interface ObservedExit extends ServiceExit {
  known: boolean;
}

export type AfterExit =
  | { action: 'restart'; delayMs: number; quickExits: number; reason: string }
  | { action: 'settle'; state: 'stopped' | 'failed'; quickExits: number; reason: string };

export function describeExit(exit: ObservedExit): string {
  if (!exit.known) return 'exit status unknown: the process was adopted from a previous agent';
  if (exit.signal !== null) return `killed by ${exit.signal}`;
  return `exit code ${exit.code ?? 'unknown'}`;
}

export function isFailure(exit: ObservedExit): boolean {
  return !exit.known || exit.signal !== null || exit.code !== 0;
}

/** initialDelayMs * factor^(step-1), capped at maxDelayMs; step counts from 1. */
export function backoffDelayMs(policy: ServiceRestartPolicy, step: number): number {
  const raw = policy.initialDelayMs * Math.pow(policy.factor, Math.max(0, step - 1));
  return Math.round(Math.min(policy.maxDelayMs, raw));
}

export function decideAfterExit(
  policy: ServiceRestartPolicy,
  exit: ObservedExit,
  ranMs: number,
  previousQuickExits: number,
): AfterExit {
  const what = describeExit(exit);
  const failed = isFailure(exit);
  if (policy.policy === 'never' || (policy.policy === 'on-failure' && !failed)) {
    return {
      action: 'settle',
      state: failed ? 'failed' : 'stopped',
      quickExits: 0,
      reason: `exited (${what}); restart policy ${policy.policy}`,
    };
  }
  // A run that stayed up long enough was healthy: this exit starts a fresh series. Every quick exit
  // counts towards the crash loop, a clean one too: a service meant to stay up that keeps exiting loops.
  const stable = ranMs >= policy.resetAfterSeconds * 1000;
  const quickExits = stable ? 0 : previousQuickExits + 1;
  if (quickExits >= policy.crashLoopLimit) {
    return { action: 'settle', state: 'failed', quickExits, reason: `crashed ${quickExits} times in a row (last: ${what})` };
  }
  const delayMs = backoffDelayMs(policy, Math.max(1, quickExits));
  return { action: 'restart', delayMs, quickExits, reason: `exited (${what}); restarting in ${delayMs} ms` };
}
