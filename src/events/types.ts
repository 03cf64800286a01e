/**
 * Events: one per state change of a host, a pool host's slot (or a pool), a claim, a command or one
 * of its invocations, a supervised service, an environment, or a shell session on a host — with
 * the ids that correlate them.
 * The server's structured log, `GET /v1/events` and `berth events` all carry these.
 */
export const EVENT_KINDS = ['host', 'pool', 'claim', 'command', 'invocation', 'service', 'environment', 'shell'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

export interface BerthEvent {
  /** Increases by one per event in this server process (it starts again at 1 after a restart). */
  seq: number;
  /** When the change was recorded (ISO time). */
  at: string;
  kind: EventKind;
  /**
   * What changed: a host, claim or command id; `COMMAND/HOST` for an invocation; `HOST/SERVICE`
   * for a service; an environment's name. A `pool` event is about a pool host's slot (the id is
   * the host's) or, without hostId, about the pool itself (the id is its name).
   */
  id: string;
  tenantId: string;
  /** The state it is in now. */
  state: string;
  /** The state it left, when known. */
  from?: string;
  hostId?: string;
  claimId?: string;
  commandId?: string;
  pool?: string;
  group?: string;
  environment?: string;
  service?: string;
  reason?: string;
  /** The API token (its name) whose request made the change; absent for berth's own work. */
  actor?: string;
}

/** An event before the bus numbers and timestamps it. */
export type NewEvent = Omit<BerthEvent, 'seq' | 'at'>;

/** Where state changes are reported (the EventBus; NO_EVENTS in tests and tools). */
export interface EventSink {
  emit(event: NewEvent): void;
}

export const NO_EVENTS: EventSink = { emit: () => {} };

export function isEventKind(value: string): value is EventKind {
  return (EVENT_KINDS as readonly string[]).includes(value);
}
