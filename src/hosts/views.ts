import { maskedTags } from '../core/secret-names.js';
import type { HostStats } from '../drivers/types.js';
import type { HostSummaryRow } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';

export interface HostView {
  id: string;
  state: string;
  stateReason: string;
  hostname: string;
  ip: string | null;
  image: string;
  /** The image build the host boots from; null for a plain root filesystem. */
  imageId: string | null;
  driver: string;
  /** Its tags; variable overrides' values masked (core/secret-names.ts: `berth config show` shows them). */
  tags: Record<string, string>;
  resources: Record<string, number | number[] | boolean | string[]>;
  /** The pool it belongs to, and the group that claimed it (null: none). */
  pool: string | null;
  group: string | null;
  agent: { connected: boolean; lastSeen: string | null; version: string | null };
  createdAt: string;
  readyAt: string | null;
  terminatedAt: string | null;
}

const iso = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);

export function toHostView(row: HostRow, connected: boolean): HostView {
  return {
    id: row.id,
    state: row.state,
    stateReason: row.state_reason,
    hostname: row.hostname,
    ip: row.ip,
    image: row.image,
    imageId: row.image_id,
    driver: row.driver,
    tags: maskedTags(row.tags),
    resources: row.resources,
    pool: row.pool,
    group: row.group_name,
    agent: { connected, lastSeen: iso(row.agent_last_seen), version: row.agent_version },
    createdAt: new Date(row.created_at).toISOString(),
    readyAt: iso(row.ready_at),
    terminatedAt: iso(row.terminated_at),
  };
}

/** A host as a table lists it: its state, where it belongs, its agent. */
export interface HostSummary {
  id: string;
  state: string;
  stateReason: string;
  pool: string | null;
  group: string | null;
  image: string;
  ip: string | null;
  agentConnected: boolean;
  agentLastSeen: string | null;
  createdAt: string;
}

export function toHostSummary(row: HostSummaryRow, connected: boolean): HostSummary {
  return {
    id: row.id,
    state: row.state,
    stateReason: row.state_reason,
    pool: row.pool,
    group: row.group_name,
    image: row.image,
    ip: row.ip,
    agentConnected: connected,
    agentLastSeen: iso(row.agent_last_seen),
    createdAt: new Date(row.created_at).toISOString(),
  };
}

/** What a host uses at one moment (`GET /v1/hosts/{id}/stats`): HostDriver.stats's fields, absent when not measured. */
export interface HostStatsView extends HostStats {
  hostId: string;
  /** When it was read: two readings give a CPU rate. */
  at: string;
}
