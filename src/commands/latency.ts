/**
 * Agent round-trip latency: from handing a `run` to the agent channel to receiving its result, per
 * invocation — the part of a command's life the agent and its channel own (no HTTP, no store).
 * Kept as a bounded window of recent samples for benchmarks and, later, metrics.
 */
export class AgentRoundTrips {
  private readonly sentAt = new Map<string, number>();
  private readonly samples: number[] = [];

  constructor(private readonly window = 10_000) {}

  sent(commandId: string, hostId: string, now = performance.now()): void {
    this.sentAt.set(`${commandId}/${hostId}`, now);
  }

  /** Records the sample, if this process sent the invocation. */
  received(commandId: string, hostId: string, now = performance.now()): void {
    const key = `${commandId}/${hostId}`;
    const start = this.sentAt.get(key);
    if (start === undefined) return;
    this.sentAt.delete(key);
    this.samples.push(now - start);
    if (this.samples.length > this.window) this.samples.shift();
  }

  /** Forgets an invocation that will never report (cancelled, timed out, host gone). */
  forget(commandId: string, hostId: string): void {
    this.sentAt.delete(`${commandId}/${hostId}`);
  }

  recent(): readonly number[] {
    return this.samples;
  }
}
