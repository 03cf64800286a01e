/** What a berth server is started with: its data dir, driver, ports, store and tuning. */
import type { TlsFiles } from './tls-files.js';
import type { AgentTlsFiles } from './agent-tls.js';
import type { CommandRunner } from '../drivers/local/proc.js';
import type { HostDriver, HostResources } from '../drivers/types.js';
import type { EventBus } from '../events/event-bus.js';

export interface ServerConfig {
  dataDir: string;
  /** API listen address; loopback by default. */
  host?: string;
  /** API port; 0 picks a free one. */
  port?: number;
  /** The API (and dashboard) over HTTPS with this certificate and key, PEM files, watched for renewals (tls-files.ts). */
  tls?: TlsFiles;
  /** PostgreSQL only: wait while another server holds the database, and start when it lets go (`--standby`). */
  standby?: boolean;
  /** The agent channel (wss://, and enrolment and host downloads over https://) with this certificate, key and CA (agent-tls.ts). */
  agentTls?: AgentTlsFiles;
  /** Agent channel port on the driver's agent address; 0 picks a free one. */
  agentPort?: number;
  /** The address hosts dial for the agent channel, when not the one it listens on (0.0.0.0 on AWS). */
  agentAdvertiseHost?: string;
  databaseUrl?: string | undefined;
  driver: HostDriver;
  /** The agent bundle baked into every image (the directory hosts mount at /.berth/agent). */
  agentDir: string;
  /** Runs the image store's tools (mount, umount, mknod); default: spawned from this process. */
  toolRunner?: CommandRunner;
  defaultImage?: string;
  defaultResources?: HostResources;
  /** Log to stdout (pino JSON); false in tests. */
  logger?: boolean | { level: string };
  log?: (line: string) => void;
  /** Start-up steps as they begin, for a person watching (the first start takes seconds). */
  progress?: (step: string) => void;
  heartbeatIntervalMs?: number;
  sweepIntervalMs?: number;
  monitorIntervalMs?: number;
  /** How often every pool is reconciled even when nothing kicked it. */
  poolIntervalMs?: number;
  /** Pool tuning (tests shorten the back-off). */
  poolBackoffMs?: number;
  /** The time pools' schedules are read at; default the machine's clock (tests move it). */
  scheduleClock?: () => Date;
  /**
   * The environments' router: port (default 7080; 0 picks a free one), address and domain; HTTPS
   * with a certificate and key in PEM files (watched: a renewal is served without a restart), and
   * then, optionally, a plain HTTP port that redirects to it.
   */
  router?: { port?: number; host?: string; domain?: string; healthIntervalMs?: number; tls?: TlsFiles; redirectPort?: number };
  /** How often expired environments are removed. */
  envSweepIntervalMs?: number;
  /** How often machines the store does not know are looked for and removed (and, on AWS, claiming groups left empty). */
  orphanSweepIntervalMs?: number;
  /** How often which hosts reach each other is set whole again (a failed change made then). Default 5 min. */
  networkSyncIntervalMs?: number;
  /** How long a host's agent has to enrol after its launch before the host is failed (berth's agent; a backend's agent has the driver's own limit). Default: the driver's (AWS: 5 min), else 60 s for the host monitor and 30 s for pools' launches and `host launch`. */
  bootTimeoutMs?: number;
  /** How often pools whose machines run no berth agent (SSM) look for new machines in their group. Default 5000 ms. */
  fleetDiscoveryIntervalMs?: number;
  /** Where state changes are reported (`berth server` logs them); default: a bus of this server's own. */
  events?: EventBus;
  /** Comments on an idle `GET /v1/events?follow=true` stream, ms (default 15 s). */
  eventsHeartbeatMs?: number;
  /** Shell sessions with no byte either way for this long are ended; default never. */
  shellIdleTimeoutMs?: number;
  /** Record each shell session's output in the data dir (`shells/`, asciicast v2); default off. */
  recordShells?: boolean;
  /** Audit log entries older than this are removed (ms); default 90 days. */
  auditRetentionMs?: number;
  /**
   * The local image store's own garbage collection (image-gc.ts): a layer no build uses goes once
   * older than this, ms (default 24 h; 0: only `berth image gc` collects), and so do cached artifacts
   * and slugs no environment runs unused this long (slugs/slug-retention.ts). Runs every hour, or as often as this if shorter.
   */
  imageGcAfterMs?: number;
  /** Image builds on the AWS driver: AMIs kept per image besides those in use (default 3), poll interval, builder boot limit. */
  amiImages?: { keep?: number; pollMs?: number; builderBootTimeoutMs?: number };
  /**
   * false: no background work at all (no periodic loops, pool refills or environment sweeps), for
   * `berth down`, which starts a server only to remove its hosts (take-down.ts). Default true.
   */
  runLoops?: boolean;
  /** What one host costs an hour, for the dashboard's idle cost (unset: host-hours only). */
  hostHourPrice?: { amount: number; currency: string };
}
