/**
 * One ordered set of migrations for PGlite and PostgreSQL alike. Only PostgreSQL 15 features:
 * PGlite is PostgreSQL 18, production may be 15.
 */
import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

export const DEFAULT_TENANT = 'default';

const FOUNDATION = [
  `create table tenants (
    id text primary key,
    name text not null,
    created_at timestamptz not null default now()
  )`,
  `insert into tenants (id, name) values ('default', 'default')`,
  `create table api_tokens (
    id text primary key,
    tenant_id text not null references tenants(id),
    name text not null,
    token_hash text not null unique,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
  )`,
  `create table hosts (
    id text primary key,
    tenant_id text not null references tenants(id),
    driver text not null,
    state text not null,
    state_reason text not null default '',
    image text not null,
    hostname text not null,
    ip text,
    tags jsonb not null default '{}',
    resources jsonb not null default '{}',
    driver_data jsonb not null default '{}',
    agent_token_hash text not null,
    agent_connected boolean not null default false,
    agent_last_seen timestamptz,
    agent_version text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    ready_at timestamptz,
    terminated_at timestamptz
  )`,
  `create index hosts_tenant_state on hosts (tenant_id, state)`,
  `create index hosts_tags on hosts using gin (tags)`,
  `create table commands (
    id text primary key,
    tenant_id text not null references tenants(id),
    document text not null,
    parameters jsonb not null,
    targets jsonb not null,
    delivery_timeout_s integer not null,
    created_at timestamptz not null default now()
  )`,
  `create index commands_tenant_created on commands (tenant_id, created_at desc)`,
  `create table invocations (
    command_id text not null references commands(id) on delete cascade,
    host_id text not null references hosts(id),
    -- the command's tenant, copied for tenant-scoped queries (the command's own key guards it)
    tenant_id text not null,
    status text not null,
    status_detail text not null default '',
    exit_codes jsonb not null default '[]',
    stdout text not null default '',
    stderr text not null default '',
    stdout_truncated boolean not null default false,
    stderr_truncated boolean not null default false,
    stdout_bytes integer not null default 0,
    stderr_bytes integer not null default 0,
    created_at timestamptz not null default now(),
    delivered_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    primary key (command_id, host_id)
  )`,
  // Only open invocations are looked up by status (timeouts, reconnects): one small partial index.
  `create index invocations_open on invocations (host_id) where status in ('Pending', 'InProgress', 'Cancelling')`,
];

const POOLS = [
  `create table pools (
    tenant_id text not null references tenants(id),
    name text not null,
    -- the host template; a change bumps the generation, and only hosts of the current generation
    -- may be claimed
    image text not null,
    template jsonb not null,
    generation integer not null default 1,
    size integer not null,
    max_size integer not null,
    max_launching integer not null,
    max_idle_age_s integer,
    warmup jsonb not null default '[]',
    health_check jsonb,
    on_empty text not null,
    -- counters kept by claims and the reconciler
    hits integer not null default 0,
    misses integer not null default 0,
    consecutive_failures integer not null default 0,
    last_failure text,
    last_failure_at timestamptz,
    -- seconds hosts spent ready and unclaimed, summed when each leaves ready: the cost of readiness
    idle_host_seconds double precision not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, name)
  )`,
  `create table groups (
    tenant_id text not null references tenants(id),
    name text not null,
    labels jsonb not null default '{}',
    created_at timestamptz not null default now(),
    primary key (tenant_id, name)
  )`,
  `alter table hosts add column pool text`,
  `alter table hosts add column generation integer`,
  `alter table hosts add column slot text`,
  `alter table hosts add column slot_since timestamptz`,
  `alter table hosts add column group_name text`,
  `alter table hosts add column claim_id text`,
  // The claim path's one lookup: the oldest ready host of a pool.
  `create index hosts_pool_ready on hosts (tenant_id, pool, generation, ready_at) where slot = 'ready'`,
  `create index hosts_group on hosts (tenant_id, group_name) where group_name is not null`,
  `create table claims (
    id text primary key,
    tenant_id text not null references tenants(id),
    pool text not null,
    group_name text not null,
    host_id text references hosts(id),
    idempotency_key text,
    state text not null,
    request jsonb not null,
    hit boolean,
    attempts integer not null default 0,
    timings jsonb not null default '{}',
    duration_ms double precision,
    error jsonb,
    created_at timestamptz not null default now(),
    finished_at timestamptz
  )`,
  `create unique index claims_idempotency on claims (tenant_id, idempotency_key) where idempotency_key is not null`,
  `create index claims_pending on claims (tenant_id) where state = 'pending'`,
  // The pool's claim latency histogram is bucketed from finished claims.
  `create index claims_pool_finished on claims (tenant_id, pool, finished_at)`,
];

/** Images: each build of a name is a row, content-addressed by id; one row per name is current. */
const IMAGES = [
  `create table images (
    tenant_id text not null references tenants(id),
    name text not null,
    id text not null,
    current boolean not null,
    parent text not null,
    parent_id text,
    base text not null,
    layers jsonb not null,
    manifest jsonb not null,
    size_bytes double precision not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, name, id)
  )`,
  `create unique index images_current on images (tenant_id, name) where current`,
  `create index images_by_id on images (tenant_id, id)`,
  `alter table hosts add column image_id text`,
];

/** Supervised services: each host's desired set, as the server resolved it (re-sent when its agent reconnects). */
const SERVICES = [`alter table hosts add column services jsonb not null default '[]'`];

/** Stacks: the services of `stacks:` in berth.yaml and their layered config, as `berth apply` sent them. */
const STACKS = [
  `create table stacks (
    tenant_id text not null references tenants(id),
    name text not null,
    spec jsonb not null,
    config jsonb not null,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, name)
  )`,
];

/**
 * A key per tenant for the config hashes users see: a hash of an environment that holds a secret must
 * not let anyone test guesses of that secret offline (see stacks/config.ts configHash).
 */
const CONFIG_HASH_KEYS = [`alter table tenants add column config_hash_key text not null default encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex')`];

/** Environments (src/environments), and what releasing a pool's host does. */
const ENVIRONMENTS = [
  `alter table pools add column on_release text not null default 'terminate'`,
  `create table environments (
    tenant_id text not null references tenants(id),
    name text not null,
    stack text not null,
    pool text not null,
    mode text not null,
    ref text,
    command text,
    replicas integer not null,
    owner text,
    settings jsonb not null default '{}',
    state text not null,
    state_reason text not null default '',
    hosts jsonb not null default '[]',
    route jsonb,
    timings jsonb not null default '{}',
    expires_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, name)
  )`,
  `create index environments_expiry on environments (expires_at) where expires_at is not null`,
];

/**
 * Readiness history for the metrics: when a pool host first became ready in its pool, and indexes
 * so a scrape reads only hosts that became ready since the last one (terminated hosts stay in the
 * table for good).
 */
const READINESS = [
  `alter table hosts add column pool_ready_at timestamptz`,
  `create index hosts_ready_at on hosts (tenant_id, ready_at) where ready_at is not null`,
  `create index hosts_pool_ready_at on hosts (tenant_id, pool_ready_at) where pool_ready_at is not null`,
];

/** Every finished create and deploy of an environment with its stage timings, for the metrics' histograms. */
const ENVIRONMENT_TIMINGS = [
  `create table environment_timings (
    id bigint generated always as identity primary key,
    tenant_id text not null references tenants(id),
    environment text not null,
    pool text not null,
    operation text not null,
    timings jsonb not null,
    finished_at timestamptz not null default now()
  )`,
  `create index environment_timings_finished on environment_timings (tenant_id, finished_at)`,
];

/** A migration that runs its statements in order (the migrator runs migrations in a transaction). */
function statements(list: readonly string[]): Migration {
  return {
    async up(db: Kysely<unknown>) {
      for (const statement of list) await sql.raw(statement).execute(db);
    },
  };
}

/** Pools sized by demand (src/pools/demand.ts): null keeps the pool at its fixed size. */
const POOL_DEMAND = [`alter table pools add column demand jsonb`];

/** Run Command rate control: limits per command, and when each invocation was sent. */
const COMMAND_RATE_CONTROL = [
  `alter table commands add column rate_control jsonb`,
  `alter table invocations add column sent_at timestamptz`,
  `update invocations set sent_at = created_at where status <> 'Undeliverable'`,
];

/** A pool's demand is read by the claims' arrival (ClaimsRepo.demandPeak). */
const CLAIMS_ARRIVAL = [`create index claims_pool_created on claims (tenant_id, pool, created_at)`];

/**
 * API tokens with a role (read < use < admin), an optional expiry and when each was last used.
 * Tokens made before roles existed were all-powerful, so they stay `admin`. Names are not unique in the
 * table: every data dir sharing one PostgreSQL has its own `data dir token`.
 */
const TOKEN_ROLES = [
  `alter table api_tokens add column role text not null default 'admin' check (role in ('read', 'use', 'admin'))`,
  `alter table api_tokens add column expires_at timestamptz`,
  `alter table api_tokens add column last_used_at timestamptz`,
  // The groups (names or prefixes) a token may act in; null: the whole tenant.
  `alter table api_tokens add column scope jsonb`,
  // Every token so far came from a data dir (the server makes one at first start); new ones come from the API.
  `alter table api_tokens add column origin text not null default 'data-dir'`,
  `alter table api_tokens alter column origin set default 'api'`,
];

/** Who changed what through the API (src/audit/audit-log.ts). */
const AUDIT_LOG = [
  `create table audit_log (
    id bigint generated always as identity primary key,
    tenant_id text,
    at timestamptz not null,
    token_id text,
    token_name text,
    method text not null,
    route text not null,
    path text not null,
    status integer not null,
    duration_ms real not null,
    ip text
  )`,
  `create index audit_log_tenant_at on audit_log (tenant_id, at desc)`,
  `create index audit_log_at on audit_log (at)`,
];

/** Which token sent a command (null: berth itself, as a claim's init or a warm-up). */
const COMMAND_CREATOR = [`alter table commands add column created_by_token text`, `alter table commands add column created_by text`];

/** Pools sized by the clock (src/pools/schedule.ts): null keeps the pool at its size. */
const POOL_SCHEDULE = [`alter table pools add column schedule jsonb`];

/**
 * Environments that sleep when idle (environments/sleep.ts): after how long without a request
 * (null: never), and which operation put it in its latest state (create, deploy, wake) for metrics.
 */
const ENVIRONMENT_SLEEP = [`alter table environments add column sleep_after_ms integer`, `alter table environments add column operation text`];

/** Private environments (environments/access.ts): only requests with a token that may see them get through. */
const ENVIRONMENT_ACCESS = [`alter table environments add column private boolean not null default false`];

/** Service mode: services with a host count of their own (environments/replicas.ts). */
const SERVICE_REPLICAS = [`alter table environments add column service_replicas jsonb not null default '{}'`];

/**
 * The slug an environment runs, pinned by content digest at its create or deploy: a heal, scale
 * or wake runs that slug again, not whatever its path or URL holds by then (slug-stack.ts).
 */
const ENVIRONMENT_SLUG = [`alter table environments add column slug_digest text`];

const migrations: Record<string, Migration> = {
  '0001_foundation': statements(FOUNDATION),
  '0002_pools': statements(POOLS),
  '0003_images': statements(IMAGES),
  '0004_services': statements(SERVICES),
  '0005_stacks': statements(STACKS),
  '0006_config_hash_keys': statements(CONFIG_HASH_KEYS),
  '0007_environments': statements(ENVIRONMENTS),
  '0008_readiness': statements(READINESS),
  '0009_environment_timings': statements(ENVIRONMENT_TIMINGS),
  '0010_pool_demand': statements(POOL_DEMAND),
  '0011_command_rate_control': statements(COMMAND_RATE_CONTROL),
  '0012_claims_arrival': statements(CLAIMS_ARRIVAL),
  '0013_token_roles': statements(TOKEN_ROLES),
  '0014_audit_log': statements(AUDIT_LOG),
  '0015_command_creator': statements(COMMAND_CREATOR),
  '0016_pool_schedule': statements(POOL_SCHEDULE),
  '0017_environment_sleep': statements(ENVIRONMENT_SLEEP),
  '0018_environment_access': statements(ENVIRONMENT_ACCESS),
  '0019_service_replicas': statements(SERVICE_REPLICAS),
  '0020_environment_slug': statements(ENVIRONMENT_SLUG),
};

export const migrationProvider: MigrationProvider = {
  getMigrations: () => Promise.resolve(migrations),
};
