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

const migrations: Record<string, Migration> = {
  '0001_foundation': {
    async up(db: Kysely<unknown>) {
      for (const statement of FOUNDATION) await sql.raw(statement).execute(db);
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: () => Promise.resolve(migrations),
};
