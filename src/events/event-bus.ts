/**
 * The server's events in memory: numbered, kept in a bounded ring buffer (the last `capacity`) so a
 * client can ask for what happened since a seq — a dashboard reconnecting with Last-Event-ID loses
 * nothing that is still buffered — and handed at once to subscribers. Emitting never throws: it is
 * called right where state changes are recorded.
 */
import { currentActor } from './actor.js';
import type { BerthEvent, EventKind, EventSink, NewEvent } from './types.js';

export const DEFAULT_EVENT_CAPACITY = 10_000;

export interface EventFilter {
  /** Always set for a client: a tenant sees only its own events. */
  tenantId?: string;
  kinds?: readonly EventKind[];
  pool?: string;
  hostId?: string;
  /** Only changes this token (by name) made. */
  actor?: string;
}

export function matches(event: BerthEvent, filter: EventFilter): boolean {
  if (filter.tenantId !== undefined && event.tenantId !== filter.tenantId) return false;
  if (filter.kinds && filter.kinds.length > 0 && !filter.kinds.includes(event.kind)) return false;
  if (filter.pool !== undefined && event.pool !== filter.pool) return false;
  if (filter.hostId !== undefined && event.hostId !== filter.hostId) return false;
  if (filter.actor !== undefined && event.actor !== filter.actor) return false;
  return true;
}

export type EventListener = (event: BerthEvent) => void;

interface Subscriber {
  listener: EventListener;
  filter: EventFilter;
  onClose: (() => void) | undefined;
}

export class EventBus implements EventSink {
  private readonly capacity: number;
  private readonly now: () => Date;
  private readonly ring: (BerthEvent | undefined)[];
  /** The seq the next event gets. */
  private next = 1;
  private readonly subscribers = new Set<Subscriber>();
  private closed = false;

  constructor(opts: { capacity?: number; now?: () => Date } = {}) {
    this.capacity = Math.max(1, Math.floor(opts.capacity ?? DEFAULT_EVENT_CAPACITY));
    this.now = opts.now ?? (() => new Date());
    this.ring = new Array<BerthEvent | undefined>(this.capacity);
  }

  /** The seq of the newest event (0 before the first). */
  get lastSeq(): number {
    return this.next - 1;
  }

  /** The seq of the oldest event still buffered (lastSeq + 1 while none is). */
  get oldestSeq(): number {
    return Math.max(1, this.next - this.capacity);
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  emit(input: NewEvent): BerthEvent {
    const actor = input.actor ?? currentActor()?.name;
    const event: BerthEvent = { seq: this.next, at: this.now().toISOString(), ...input, ...(actor !== undefined ? { actor } : {}) };
    this.ring[this.next % this.capacity] = event;
    this.next++;
    for (const sub of this.subscribers) {
      if (!matches(event, sub.filter)) continue;
      try {
        sub.listener(event);
      } catch {
        // A subscriber's failure is its own (a closed socket, say): the change it reports happened.
      }
    }
    return event;
  }

  /**
   * Buffered events after `seq` that match, oldest first, at most `limit`. A seq beyond the newest
   * comes from an earlier server process (seqs start again at a restart): every buffered event is
   * new to that client.
   */
  since(seq: number, filter: EventFilter = {}, limit = Number.POSITIVE_INFINITY): BerthEvent[] {
    const out: BerthEvent[] = [];
    const first = seq > this.lastSeq ? this.oldestSeq : Math.max(this.oldestSeq, Math.floor(seq) + 1);
    for (let s = first; s < this.next && out.length < limit; s++) {
      const event = this.ring[s % this.capacity];
      if (event && matches(event, filter)) out.push(event);
    }
    return out;
  }

  /**
   * Calls `listener` with every new matching event until the returned function is called (or the
   * bus closes: then `onClose` runs). Events already buffered are the caller's to read first, with
   * `since`, in the same tick: nothing can fall between the two.
   */
  subscribe(listener: EventListener, opts: { filter?: EventFilter; onClose?: () => void } = {}): () => void {
    const sub: Subscriber = { listener, filter: opts.filter ?? {}, onClose: opts.onClose };
    if (this.closed) {
      sub.onClose?.();
      return () => {};
    }
    this.subscribers.add(sub);
    return () => void this.subscribers.delete(sub);
  }

  /** Ends every subscription (the server stops); events are still buffered after. */
  close(): void {
    this.closed = true;
    const subs = [...this.subscribers];
    this.subscribers.clear();
    for (const sub of subs) {
      try {
        sub.onClose?.();
      } catch {
        // as in emit
      }
    }
  }
}
