/**
 * Who may call the API, and the record of what they did: the server's start-up half of tokens and
 * the audit log. The data dir's own token (the local CLI's) is registered as an admin of the
 * default tenant; other data dirs sharing one PostgreSQL keep theirs (the id comes from the hash,
 * so each token is one row).
 */
import type { Kysely } from 'kysely';
import { AuditLog } from '../audit/audit-log.js';
import { hashSecret } from '../core/ids.js';
import { DEFAULT_TENANT } from '../store/migrations.js';
import type { Database } from '../store/schema.js';
import { TokensRepo, type NewToken } from '../store/tokens-repo.js';
import { TokenService } from './token-service.js';

export interface Access {
  tokens: TokenService;
  audit: AuditLog;
}

/** The row of a data dir's token: its id comes from its hash, so each data dir's token is one row. */
export function dataDirTokenRow(secret: string): NewToken {
  const tokenHash = hashSecret(secret);
  return { id: `t-${tokenHash.slice(0, 16)}`, tenantId: DEFAULT_TENANT, name: 'data dir token', tokenHash, role: 'admin', origin: 'data-dir' };
}

export async function startAccess(db: Kysely<Database>, opts: { dataDirToken: string; auditRetentionMs?: number | undefined; log: (line: string) => void }): Promise<Access> {
  const repo = new TokensRepo(db);
  await repo.add(dataDirTokenRow(opts.dataDirToken));
  const audit = new AuditLog(db, { log: opts.log, ...(opts.auditRetentionMs !== undefined ? { retentionMs: opts.auditRetentionMs } : {}) });
  await audit.prune();
  return { tokens: new TokenService(repo, { log: opts.log }), audit };
}
