/**
 * Monotonic milliseconds for the agent's deadlines and durations. Not `performance.now()`: the
 * `performance` global loads perf_hooks and seven modules of its own on first use, which the agent
 * compiles from source (its V8 flags are set by then, see v8-tuning.ts): ~1.9 ms of CPU at a host's
 * first service start. The lint config keeps the global out of the agent.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
