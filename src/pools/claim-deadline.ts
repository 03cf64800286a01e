/** How long a claim may take. */

/** A claim's deadline when it names none and the driver boots fast. */
const DEFAULT_DEADLINE_S = 60;

/**
 * The seconds a claim may take: as given, else 60, or the driver's boot limit and 30 s more when
 * that is longer: a cold launch must fit in a claim that names no deadline (on EC2 one takes minutes).
 */
export function claimDeadlineS(given: number | undefined, bootTimeoutMs: number | undefined): number {
  return given ?? Math.max(DEFAULT_DEADLINE_S, Math.ceil((bootTimeoutMs ?? 0) / 1000) + 30);
}
