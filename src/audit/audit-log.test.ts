import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/store.js';
import { AuditLog, type AuditEntry } from './audit-log.js';
import { isAudited } from './http-audit.js';

const entry = (over: Partial<AuditEntry> = {}): AuditEntry => ({
  tenantId: 'default',
  tokenId: 'tk-1',
  tokenName: 'ci',
  method: 'POST',
  route: '/v1/pools/:name/claims',
  path: '/v1/pools/web/claims',
  status: 201,
  durationMs: 12.345,
  ip: '127.0.0.1',
  ...over,
});

describe('audit log', () => {
  let store: Store;
  let clock = Date.parse('2026-11-23T12:00:00Z');
  const now = () => clock;
  const stored = async () => (await store.db.selectFrom('audit_log').selectAll().execute()).length;

  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
  });
  afterAll(async () => {
    await store.close();
  });

  it('writes entries in a batch after a short wait, not one statement per call', async () => {
    const audit = new AuditLog(store.db, { now, flushMs: 100 });
    for (let i = 0; i < 5; i++) audit.record(entry({ path: `/v1/pools/web/claims#${i}` }));
    expect(await stored()).toBe(0);
    await expect.poll(stored, { timeout: 2000 }).toBe(5);
    await audit.close();
  });

  it('lists newest first, filtered by token, time and failure, within the tenant', async () => {
    await store.db.deleteFrom('audit_log').execute();
    const audit = new AuditLog(store.db, { now });
    audit.record(entry({ tokenName: 'ci' }));
    clock += 1000;
    audit.record(entry({ tokenName: 'dash', method: 'DELETE', route: '/v1/pools/:name', path: '/v1/pools/web', status: 403 }));
    clock += 1000;
    audit.record(entry({ tenantId: null, tokenId: null, tokenName: null, status: 401 }));
    audit.record(entry({ tenantId: 'other', tokenName: 'theirs' }));
    // A listing writes what is pending first: no wait for the batch.
    const all = await audit.list('default');
    expect(all.map((e) => [e.tokenName, e.status])).toEqual([
      [null, 401],
      ['dash', 403],
      ['ci', 201],
    ]);
    expect(all[2]).toMatchObject({ method: 'POST', route: '/v1/pools/:name/claims', path: '/v1/pools/web/claims', durationMs: 12.35, ip: '127.0.0.1', at: '2026-11-23T12:00:00.000Z' });
    expect((await audit.list('default', { token: 'dash' })).map((e) => e.path)).toEqual(['/v1/pools/web']);
    expect((await audit.list('default', { failed: true })).map((e) => e.status)).toEqual([401, 403]);
    expect((await audit.list('default', { since: new Date(clock - 1000) })).length).toBe(2);
    expect((await audit.list('default', { limit: 1 })).length).toBe(1);
    expect((await audit.list('other')).map((e) => e.tokenName)).toEqual(['theirs', null]);
    await audit.close();
  });

  it('removes entries past their retention, and takes none after it is closed', async () => {
    await store.db.deleteFrom('audit_log').execute();
    const audit = new AuditLog(store.db, { now, retentionMs: 86_400_000 });
    audit.record(entry({ path: '/old' }));
    await audit.flush();
    clock += 86_400_000 + 1;
    audit.record(entry({ path: '/new' }));
    await audit.flush();
    expect(await audit.prune()).toBe(1);
    expect((await audit.list('default')).map((e) => e.path)).toEqual(['/new']);
    await audit.close();
    audit.record(entry({ path: '/after-close' }));
    await audit.flush();
    expect(await stored()).toBe(1);
  });

  it('records what changes something, and the reads of recordings', () => {
    expect(isAudited('POST', '/v1/commands')).toBe(true);
    expect(isAudited('DELETE', undefined)).toBe(true);
    expect(isAudited('GET', '/v1/hosts')).toBe(false);
    expect(isAudited('HEAD', '/v1/hosts')).toBe(false);
    expect(isAudited('GET', '/v1/shells/:id/recording')).toBe(true);
  });
});
