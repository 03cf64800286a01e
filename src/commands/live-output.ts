/**
 * Output of running invocations as the agent streams it: bounded (head and tail, like the final
 * result) so that `berth cmd show` on a running command shows what it printed so far, and fanned out
 * to followers (`berth run --follow`, `GET /v1/commands/:id/output`).
 */
import { EventEmitter } from 'node:events';

export interface OutputEvent {
  type: 'output';
  hostId: string;
  stream: 'stdout' | 'stderr';
  data: string;
}
export interface StatusEvent {
  type: 'status';
  hostId: string;
  status: string;
}
export type FollowEvent = OutputEvent | StatusEvent | { type: 'done' };

class BoundedText {
  private head = '';
  private tail = '';
  private total = 0;
  constructor(private readonly limit: number) {}

  append(data: string): void {
    this.total += Buffer.byteLength(data);
    const half = this.limit / 2;
    if (this.head.length < half) {
      // Never between the two halves of a surrogate pair (an emoji would show as two U+FFFD).
      const room = endsWithinPair(data, half - this.head.length) ? half - this.head.length - 1 : half - this.head.length;
      this.head += data.slice(0, room);
      data = data.slice(room);
    }
    if (data.length > 0) {
      const joined = this.tail + data;
      const from = Math.max(0, joined.length - half);
      this.tail = joined.slice(endsWithinPair(joined, from) ? from + 1 : from);
    }
  }

  view(): { text: string; truncated: boolean; bytes: number } {
    const kept = Buffer.byteLength(this.head) + Buffer.byteLength(this.tail);
    const omitted = this.total - kept;
    if (omitted <= 0) return { text: this.head + this.tail, truncated: false, bytes: this.total };
    return { text: `${this.head}\n[berth: ${omitted} bytes omitted]\n${this.tail}`, truncated: true, bytes: this.total };
  }
}

/** Whether cutting `text` at `at` would split a surrogate pair. */
function endsWithinPair(text: string, at: number): boolean {
  const before = text.charCodeAt(at - 1);
  return at > 0 && at < text.length && before >= 0xd800 && before <= 0xdbff;
}

export class LiveOutput {
  private readonly buffers = new Map<string, { stdout: BoundedText; stderr: BoundedText }>();
  private readonly events = new EventEmitter();

  constructor(private readonly limitBytes: number) {
    this.events.setMaxListeners(0);
  }

  append(commandId: string, hostId: string, stream: 'stdout' | 'stderr', data: string): void {
    const key = `${commandId}/${hostId}`;
    let entry = this.buffers.get(key);
    if (!entry) {
      entry = { stdout: new BoundedText(this.limitBytes), stderr: new BoundedText(this.limitBytes) };
      this.buffers.set(key, entry);
    }
    entry[stream].append(data);
    this.events.emit(commandId, { type: 'output', hostId, stream, data } satisfies FollowEvent);
  }

  snapshot(commandId: string, hostId: string): { stdout: ReturnType<BoundedText['view']>; stderr: ReturnType<BoundedText['view']> } | undefined {
    const entry = this.buffers.get(`${commandId}/${hostId}`);
    return entry ? { stdout: entry.stdout.view(), stderr: entry.stderr.view() } : undefined;
  }

  status(commandId: string, hostId: string, status: string): void {
    this.events.emit(commandId, { type: 'status', hostId, status } satisfies FollowEvent);
  }

  /** The invocation ended and its result is stored: the live copy is no longer needed. */
  drop(commandId: string, hostId: string): void {
    this.buffers.delete(`${commandId}/${hostId}`);
  }

  done(commandId: string): void {
    this.events.emit(commandId, { type: 'done' } satisfies FollowEvent);
  }

  subscribe(commandId: string, listener: (event: FollowEvent) => void): () => void {
    this.events.on(commandId, listener);
    return () => this.events.off(commandId, listener);
  }
}
