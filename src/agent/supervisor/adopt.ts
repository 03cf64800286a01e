/**
 * What a new agent makes of a service's state file: the process recorded there is still running (adopt
 * it), it died while no agent watched (its exit status is lost: apply the restart policy to an unknown
 * exit), or there was none (the service was waiting or in backoff: start it again).
 */
import type { ObservedExit } from './backoff.js';
import { killServiceRemnants, ServiceProcess } from './process.js';
import type { ServiceRecord } from './state-file.js';

export type RestorePlan =
  /** The supervisor did not want it running (stopped or failed): keep the recorded status. */
  | { kind: 'idle' }
  | { kind: 'adopted'; proc: ServiceProcess }
  | { kind: 'start-again' }
  | { kind: 'lost-exit'; exit: ObservedExit; ranMs: number; remnantsGone: Promise<void> };

export function planRestore(record: ServiceRecord, marker: string, clock: () => number, pollMs: number): RestorePlan {
  if (!record.active) return { kind: 'idle' };
  const { pid, startTime, startedAtMs } = record;
  if (pid === null || startTime === null || startedAtMs === null) return { kind: 'start-again' };
  const proc = ServiceProcess.adopt({ pid, startTime, startedAtMs }, marker, clock, pollMs);
  if (proc) return { kind: 'adopted', proc };
  const now = clock();
  return {
    kind: 'lost-exit',
    exit: { code: null, signal: null, known: false, at: new Date(now).toISOString() },
    ranMs: now - startedAtMs,
    // Its children may outlive it. Only by marker: the recorded pid, and so its group id, may be reused.
    remnantsGone: killServiceRemnants({ marker }),
  };
}
