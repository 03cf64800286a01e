/** Row types of the store, as Kysely sees them. Timestamps are timestamptz, JSON columns are jsonb. */
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

/** A timestamptz column with a default (may be omitted on insert). */
type CreatedAt = ColumnType<Date, Date | string | undefined, Date | string>;
/** A nullable timestamptz column. */
type MaybeTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
type Json<T> = ColumnType<T, string, string>;

export interface TenantsTable {
  id: string;
  name: string;
  created_at: CreatedAt;
  /** Keys the config hashes shown to users (set by the database, never sent anywhere). */
  config_hash_key: Generated<string>;
}

export interface ApiTokensTable {
  id: string;
  tenant_id: string;
  name: string;
  token_hash: string;
  /** read < use < admin (src/tokens/roles.ts). */
  role: ColumnType<string, string | undefined, string>;
  created_at: CreatedAt;
  revoked_at: MaybeTimestamp;
  expires_at: MaybeTimestamp;
  last_used_at: MaybeTimestamp;
  /** Group names or prefixes (`alice-*`) the token may act in; null: the whole tenant (src/tokens/scope.ts). */
  scope: ColumnType<string[] | null, string | null | undefined, string | null>;
  /** `data-dir` (made by a server at first start, for its local CLI) or `api` (berth token create). */
  origin: ColumnType<string, string | undefined, string>;
}

export interface AuditLogTable {
  id: ColumnType<string, never, never>;
  tenant_id: string | null;
  at: ColumnType<Date, Date, never>;
  token_id: string | null;
  token_name: string | null;
  method: string;
  route: string;
  path: string;
  status: number;
  duration_ms: number;
  ip: string | null;
}

export interface HostsTable {
  id: string;
  tenant_id: string;
  driver: string;
  state: string;
  state_reason: Generated<string>;
  image: string;
  hostname: string;
  ip: string | null;
  tags: Json<Record<string, string>>;
  resources: Json<Record<string, number | number[] | boolean | string[]>>;
  driver_data: Json<Record<string, unknown>>;
  agent_token_hash: string;
  agent_connected: Generated<boolean>;
  agent_last_seen: MaybeTimestamp;
  agent_version: string | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
  ready_at: MaybeTimestamp;
  terminated_at: MaybeTimestamp;
  pool: string | null;
  generation: number | null;
  slot: string | null;
  slot_since: MaybeTimestamp;
  /** When the pool host first became ready in its pool (launch, warm-up and health check done): its refill time ends here. */
  pool_ready_at: MaybeTimestamp;
  group_name: string | null;
  claim_id: string | null;
  image_id: string | null;
  /** The desired supervised services (protocol ServiceSpec objects). */
  services: ColumnType<unknown[], string | undefined, string>;
}

export interface PoolsTable {
  tenant_id: string;
  name: string;
  image: string;
  template: Json<PoolTemplate>;
  generation: Generated<number>;
  size: number;
  max_size: number;
  max_launching: number;
  max_idle_age_s: number | null;
  warmup: Json<string[]>;
  health_check: Json<HealthCheck | null>;
  on_empty: string;
  on_release: Generated<string>;
  /** Demand sizing (src/pools/demand.ts); null: the pool keeps `size` ready hosts. */
  demand: ColumnType<PoolDemand | null, string | undefined, string>;
  /** Sizes by the clock (src/pools/schedule.ts); null: the pool keeps `size` ready hosts. */
  schedule: ColumnType<PoolSchedule | null, string | undefined, string>;
  hits: Generated<number>;
  misses: Generated<number>;
  consecutive_failures: Generated<number>;
  last_failure: string | null;
  last_failure_at: MaybeTimestamp;
  idle_host_seconds: Generated<number>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface PoolTemplate {
  cpus?: number;
  memoryMiB?: number;
  pids?: number;
  diskMiB?: number;
  machinePorts?: number[];
  egress?: boolean;
  egressAllow?: string[];
  tags: Record<string, string>;
  /** The AWS driver's settings for this pool's machines, over the server's. */
  aws?: AwsPoolSettings;
}

export interface AwsPoolSettings {
  instanceType?: string;
  subnetIds?: string[];
  securityGroupIds?: string[];
  instanceProfile?: string;
  /** How commands reach the hosts: berth's agent, or the AMI's SSM agent. Default: the server's. */
  commandChannel?: 'agent' | 'ssm';
  /** An EC2 warm pool behind the pool's group: pre-initialised instances, stopped or running, that enter service faster than new launches. */
  warmPool?: { state: 'Stopped' | 'Running' | 'Hibernated'; minSize?: number; maxPreparedCapacity?: number; reuseOnScaleIn?: boolean };
}

/** A pool sized by demand: between `size` and `max` ready hosts (see src/pools/demand.ts). */
export interface PoolDemand {
  max: number;
  windowS: number;
  /** Seconds a refill takes; null: measured from the pool's own recent hosts. */
  leadTimeS: number | null;
}

/** Sizes by the clock: the first rule that holds gives the size; none: the pool's own (see src/pools/schedule.ts). */
export interface PoolSchedule {
  timezone: string;
  rules: { cron: string; size: number }[];
}

export interface HealthCheck {
  command: string;
  intervalS: number;
  timeoutS: number;
}

export interface GroupsTable {
  tenant_id: string;
  name: string;
  labels: Json<Record<string, string>>;
  created_at: CreatedAt;
}

export interface ClaimsTable {
  id: string;
  tenant_id: string;
  pool: string;
  group_name: string;
  host_id: string | null;
  idempotency_key: string | null;
  state: string;
  request: Json<Record<string, unknown>>;
  hit: boolean | null;
  attempts: Generated<number>;
  timings: Json<Record<string, number>>;
  duration_ms: number | null;
  error: Json<Record<string, unknown> | null>;
  created_at: CreatedAt;
  finished_at: MaybeTimestamp;
}

export interface ImagesTable {
  tenant_id: string;
  name: string;
  id: string;
  current: boolean;
  /** As the spec says it: another image's name or a root filesystem path. */
  parent: string;
  parent_id: string | null;
  /** The root filesystem directory at the bottom of the layers. */
  base: string;
  /** Layer ids, bottom to top, the parent image's included. */
  layers: Json<string[]>;
  manifest: Json<Record<string, unknown>>;
  size_bytes: ColumnType<number, number, number>;
  created_at: CreatedAt;
}

export interface StacksTable {
  tenant_id: string;
  name: string;
  /** A stacks/spec.ts StackSpec. */
  spec: Json<Record<string, unknown>>;
  /** stacks/config.ts ConfigLayers. */
  config: Json<Record<string, unknown>>;
  updated_at: CreatedAt;
}

/** One finished create or deploy of an environment and its stage timings: the metrics' history (environments keep only their latest). */
export interface EnvironmentTimingsTable {
  id: Generated<string>;
  tenant_id: string;
  environment: string;
  pool: string;
  operation: string;
  timings: ColumnType<Record<string, number>, string, string>;
  finished_at: CreatedAt;
}

export interface EnvironmentsTable {
  tenant_id: string;
  name: string;
  stack: string;
  pool: string;
  /** review | service */
  mode: string;
  ref: string | null;
  /** A slug's command, when its ref is a slug without a Procfile. */
  command: string | null;
  /** The sha256 of the slug its ref named when it was created or deployed (null: not a slug, or before migration 0020). */
  slug_digest: ColumnType<string | null, string | null | undefined, string | null>;
  replicas: number;
  /** Service mode: services with a host count of their own (the others get `replicas`). */
  service_replicas: ColumnType<Record<string, number>, string | undefined, string>;
  owner: string | null;
  /** `--set KEY=VALUE`: host overrides of every service's env. */
  settings: Json<Record<string, string>>;
  /** environments/state.ts EnvironmentState */
  state: string;
  state_reason: Generated<string>;
  /** environments/views.ts EnvHost[]: the hosts serving it, with the service each runs. */
  hosts: Json<EnvHostRecord[]>;
  /** Where the router sends its traffic: the service and port on each of its hosts. */
  route: Json<{ service: string; port: number; healthPath: string; generation: number } | null>;
  timings: Json<Record<string, number>>;
  expires_at: MaybeTimestamp;
  /** Sleeps after this long without a request through the router; null: never (environments/sleep.ts). */
  sleep_after_ms: ColumnType<number | null, number | null | undefined, number | null>;
  /** What put it in its latest state with timings: create, deploy or wake; null before migration 0017. */
  operation: ColumnType<string | null, string | null | undefined, string | null>;
  /** Only requests with a token that may see it reach it (environments/access.ts). */
  private: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface EnvHostRecord {
  hostId: string;
  /** The service the host runs (service mode), or null for a review host (every service). */
  service: string | null;
  /** Bumped by each deploy: the route goes to the newest generation's hosts. */
  generation: number;
}

/** One rate limit of a command as the user gave it ("2", "25%") and the number it came to. */
export interface RateLimit {
  spec: string;
  limit: number;
}

/** A command's rate control (see src/commands/rate-control.ts). */
export interface RateControl {
  targets: number;
  maxConcurrency?: RateLimit;
  maxErrors?: RateLimit;
}

export interface CommandsTable {
  id: string;
  tenant_id: string;
  document: string;
  parameters: Json<Record<string, unknown>>;
  targets: Json<Record<string, unknown>>;
  delivery_timeout_s: number;
  /** Rate control (src/commands/rate-control.ts); null: every invocation sent at once. */
  rate_control: ColumnType<RateControl | null, string | null | undefined, string | null>;
  /** The id and name of the token that sent it; null: berth itself (a claim's init, a warm-up). */
  created_by_token: ColumnType<string | null, string | null | undefined, string | null>;
  created_by: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: CreatedAt;
}

export interface InvocationsTable {
  command_id: string;
  host_id: string;
  tenant_id: string;
  status: string;
  status_detail: Generated<string>;
  exit_codes: Json<number[]>;
  stdout: Generated<string>;
  stderr: Generated<string>;
  stdout_truncated: Generated<boolean>;
  stderr_truncated: Generated<boolean>;
  stdout_bytes: Generated<number>;
  stderr_bytes: Generated<number>;
  created_at: CreatedAt;
  /** When the server sent it to its agent; null while it waits its turn under rate control. */
  sent_at: MaybeTimestamp;
  delivered_at: MaybeTimestamp;
  started_at: MaybeTimestamp;
  finished_at: MaybeTimestamp;
}

export interface Database {
  tenants: TenantsTable;
  api_tokens: ApiTokensTable;
  audit_log: AuditLogTable;
  hosts: HostsTable;
  commands: CommandsTable;
  invocations: InvocationsTable;
  pools: PoolsTable;
  groups: GroupsTable;
  claims: ClaimsTable;
  images: ImagesTable;
  stacks: StacksTable;
  environments: EnvironmentsTable;
  environment_timings: EnvironmentTimingsTable;
}

export type HostRow = Selectable<HostsTable>;
export type NewHostRow = Insertable<HostsTable>;
export type HostRowUpdate = Updateable<HostsTable>;
export type CommandRow = Selectable<CommandsTable>;
export type InvocationRow = Selectable<InvocationsTable>;
export type PoolRow = Selectable<PoolsTable>;
export type GroupRow = Selectable<GroupsTable>;
export type ClaimRow = Selectable<ClaimsTable>;
export type ImageRow = Selectable<ImagesTable>;
export type StackRow = Selectable<StacksTable>;
export type EnvironmentRow = Selectable<EnvironmentsTable>;
