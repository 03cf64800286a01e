/**
 * Who may call the API, and the record of what they did: the server's start-up half of tokens and
 * the audit log, and the data dir's own token (the local CLI's). That token is registered as an
 * admin of the default tenant; other data dirs sharing one PostgreSQL keep theirs (the id comes
 * from the hash, so each data dir's token is one row).
 */
import type { Kysely } from 'kysely';
import { AuditLog } from '../audit/audit-log.js';
import { hashSecret, newSecret } from '../core/ids.js';
import type { DataDir } from '../server/data-dir.js';
import { DEFAULT_TENANT } from '../store/migrations.js';
import type { Database } from '../store/schema.js';
import { TokensRepo, type NewToken } from '../store/tokens-repo.js';
import { TokenService, type TokenView } from './token-service.js';

export interface Access {
  tokens: TokenService;
  audit: AuditLog;
  /** The data dir's own token as it is now. */
  dataDirToken(): string;
  /** Replaces the data dir's own token (the old one is revoked); calls `onRotated` with the new one. */
  rotateDataDirToken(): Promise<TokenView>;
  onRotated?: (token: string) => void;
}

/** The row of a data dir's token: its id comes from its hash. */
export function dataDirTokenRow(secret: string): NewToken {
  const tokenHash = hashSecret(secret);
  return { id: `t-${tokenHash.slice(0, 16)}`, tenantId: DEFAULT_TENANT, name: 'data dir token', tokenHash, role: 'admin', origin: 'data-dir' };
}

/**
 * Registers the data dir's token. The id the last start registered is kept in the data dir
 * (`token.id`): when it is not the token there now (its file was replaced by hand, say because it
 * leaked), that previous token is revoked.
 */
export async function startAccess(db: Kysely<Database>, opts: { dataDir: DataDir; auditRetentionMs?: number | undefined; log: (line: string) => void }): Promise<Access> {
  const { dataDir, log } = opts;
  const repo = new TokensRepo(db);
  let token = dataDir.token().token;
  const own = dataDirTokenRow(token);
  await repo.add(own);
  const previous = dataDir.ownTokenId();
  if (previous !== undefined && previous !== own.id && (await repo.revoke(DEFAULT_TENANT, previous))) {
    log(`the data dir's token file was replaced: its previous token (${previous}) is revoked`);
  }
  dataDir.setOwnTokenId(own.id);
  const audit = new AuditLog(db, { log, ...(opts.auditRetentionMs !== undefined ? { retentionMs: opts.auditRetentionMs } : {}) });
  await audit.prune();
  const tokens = new TokenService(repo, { log });
  const access: Access = {
    tokens,
    audit,
    dataDirToken: () => token,
    async rotateDataDirToken() {
      const next = newSecret();
      const view = await tokens.rotateDataDirToken(dataDirTokenRow(token), dataDirTokenRow(next), next, (secret) => {
        dataDir.replaceToken(secret);
        dataDir.setOwnTokenId(dataDirTokenRow(secret).id);
      });
      token = next;
      access.onRotated?.(next);
      return view;
    },
  };
  return access;
}
