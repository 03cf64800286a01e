/**
 * The audit log: who changed what through the API, and when — every call that changes something
 * (and every refused one), every terminal opened and every recording read, with the name of the
 * token that made it. It answers "who removed pool web?" after the fact, as CloudTrail does for
 * AWS; bodies are not kept (they may hold secrets), the route and path are.
 *
 * Entries are written in batches, off the requests' path: one insert per quarter second at most
 * (or per 100 entries), so a busy API pays one statement for many calls. What a crash of the
 * server loses is the last quarter second of entries; a listing writes what is pending first.
 */
import type { Kysely } from 'kysely';
import { errorMessage } from '../core/errors.js';
import type { Database } from '../store/schema.js';
import type { Principal } from '../tokens/token-service.js';

export interface AuditEntry {
  /** The caller's tenant; null when the token was not known (a refused call). */
  tenantId: string | null;
  tokenId: string | null;
  tokenName: string | null;
  method: string;
  /** The route as declared (`/v1/pools/:name`); the path itself when no route matched. */
  route: string;
  /** The path called, without its query. */
  path: string;
  status: number;
  durationMs: number;
  ip: string | null;
}

/** An entry's caller: the principal's tenant and token (nulls when the token was not known). */
export function auditCaller(principal: Principal | undefined): Pick<AuditEntry, 'tenantId' | 'tokenId' | 'tokenName'> {
  return { tenantId: principal?.tenantId ?? null, tokenId: principal?.tokenId ?? null, tokenName: principal?.tokenName ?? null };
}

export interface AuditRecord extends AuditEntry {
  at: string;
}

export interface AuditQuery {
  /** Only calls made with the token of this name. */
  token?: string | undefined;
  /** Only calls at or after this time. */
  since?: Date | undefined;
  /** Only refused or failed calls (status >= 400). */
  failed?: boolean | undefined;
  limit?: number | undefined;
}

export interface AuditLogOptions {
  /** Entries older than this are removed (ms); default 90 days. */
  retentionMs?: number;
  /** Longest an entry waits to be written (ms); default 250. */
  flushMs?: number;
  log?: (line: string) => void;
  now?: () => number;
}

const BATCH = 100;
const PRUNE_EVERY_MS = 3_600_000;

export class AuditLog {
  private pending: (AuditEntry & { at: Date })[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private readonly pruner: NodeJS.Timeout;
  private readonly now: () => number;
  private closed = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly opts: AuditLogOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.pruner = setInterval(() => void this.prune(), PRUNE_EVERY_MS);
    this.pruner.unref();
  }

  record(entry: AuditEntry): void {
    if (this.closed) return;
    this.pending.push({ ...entry, at: new Date(this.now()) });
    if (this.pending.length >= BATCH) this.flushSoon(0);
    else this.flushSoon(this.opts.flushMs ?? 250);
  }

  /** Writes what is pending; resolves once it is stored (or was dropped with a log line). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending.splice(0);
    this.flushing = this.flushing.then(async () => {
      if (batch.length === 0) return;
      try {
        await this.db
          .insertInto('audit_log')
          .values(
            batch.map((e) => ({
              tenant_id: e.tenantId,
              at: e.at,
              token_id: e.tokenId,
              token_name: e.tokenName,
              method: e.method,
              route: e.route.slice(0, 200),
              path: e.path.slice(0, 500),
              status: e.status,
              duration_ms: Math.round(e.durationMs * 100) / 100,
              ip: e.ip,
            })),
          )
          .execute();
      } catch (err) {
        this.opts.log?.(`audit: ${batch.length} entries not stored: ${errorMessage(err)}`);
      }
    });
    return this.flushing;
  }

  /** A tenant's entries (and those of unknown tokens), newest first. */
  async list(tenantId: string, query: AuditQuery = {}): Promise<AuditRecord[]> {
    await this.flush();
    let q = this.db
      .selectFrom('audit_log')
      .selectAll()
      .where((eb) => eb.or([eb('tenant_id', '=', tenantId), eb('tenant_id', 'is', null)]));
    if (query.token !== undefined) q = q.where('token_name', '=', query.token);
    if (query.since !== undefined) q = q.where('at', '>=', query.since);
    if (query.failed) q = q.where('status', '>=', 400);
    const rows = await q.orderBy('at', 'desc').orderBy('id', 'desc').limit(query.limit ?? 100).execute();
    return rows.map((r) => ({
      at: r.at.toISOString(),
      tenantId: r.tenant_id,
      tokenId: r.token_id,
      tokenName: r.token_name,
      method: r.method,
      route: r.route,
      path: r.path,
      status: r.status,
      durationMs: r.duration_ms,
      ip: r.ip,
    }));
  }

  /** Removes entries past the retention; returns how many. */
  async prune(): Promise<number> {
    const before = new Date(this.now() - (this.opts.retentionMs ?? 90 * 86_400_000));
    try {
      const res = await this.db.deleteFrom('audit_log').where('at', '<', before).executeTakeFirst();
      return Number(res.numDeletedRows);
    } catch (err) {
      this.opts.log?.(`audit: old entries not removed: ${errorMessage(err)}`);
      return 0;
    }
  }

  /** Writes what is pending and takes no more (the server stops). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pruner);
    await this.flush();
  }

  private flushSoon(ms: number): void {
    if (this.timer && ms > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush(), ms);
    this.timer.unref();
  }
}

