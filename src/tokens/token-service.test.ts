import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejection } from '../../test/helpers/errors.js';
import { hashSecret } from '../core/ids.js';
import { installAuth } from '../server/http/auth.js';
import { DEFAULT_TENANT } from '../store/migrations.js';
import { openStore, type Store } from '../store/store.js';
import { TokensRepo } from '../store/tokens-repo.js';
import { dataDirTokenRow } from './access.js';
import { roleAllows } from './roles.js';
import { inScope } from './scope.js';
import { routeRole } from './route-roles.js';
import { requireRole, TokenService } from './token-service.js';

describe('API tokens', () => {
  let store: Store;
  let repo: TokensRepo;
  let clock = Date.parse('2026-11-23T12:00:00Z');
  const now = () => clock;

  beforeAll(async () => {
    store = await openStore({ dataDir: 'memory://' });
    repo = new TokensRepo(store.db);
    await repo.add({ id: 't-datadir', tenantId: DEFAULT_TENANT, name: 'data dir token', tokenHash: hashSecret('local-secret'), role: 'admin', origin: 'data-dir' });
  });
  afterAll(async () => {
    await store.close();
  });

  it('makes a token whose secret authenticates as its name and role, and is stored only as a hash', async () => {
    const tokens = new TokenService(repo, { now });
    const { token, view } = await tokens.create(DEFAULT_TENANT, { name: 'ci-deploy', role: 'use' });
    expect(view).toMatchObject({ name: 'ci-deploy', role: 'use', origin: 'api', expiresAt: null, revokedAt: null });
    expect(await tokens.authenticate(token)).toEqual({ tenantId: DEFAULT_TENANT, tokenId: view.id, tokenName: 'ci-deploy', role: 'use' });
    const row = await repo.byHash(hashSecret(token));
    expect(row?.id).toBe(view.id);
    expect(JSON.stringify(row)).not.toContain(token);
    expect((await rejection(tokens.authenticate('not-a-token'))).code).toBe('unauthorized');
  });

  it('refuses a bad name, an unknown role and a name in use, and stores nothing', async () => {
    const tokens = new TokenService(repo, { now });
    const before = (await tokens.list(DEFAULT_TENANT)).length;
    expect((await rejection(tokens.create(DEFAULT_TENANT, { name: 'has space', role: 'read' }))).code).toBe('validation_failed');
    expect((await rejection(tokens.create(DEFAULT_TENANT, { name: 'x', role: 'root' as 'read' }))).code).toBe('validation_failed');
    expect((await rejection(tokens.create(DEFAULT_TENANT, { name: 'ci-deploy', role: 'read' }))).code).toBe('token_exists');
    expect((await tokens.list(DEFAULT_TENANT)).length).toBe(before);
  });

  it('stops an expired token at its second, saying when it expired', async () => {
    const tokens = new TokenService(repo, { now });
    const { token } = await tokens.create(DEFAULT_TENANT, { name: 'one-hour', role: 'read', expiresInSeconds: 3600 });
    expect((await tokens.authenticate(token)).tokenName).toBe('one-hour');
    clock += 3599_000;
    expect((await tokens.authenticate(token)).tokenName).toBe('one-hour');
    clock += 1000;
    const refused = await rejection(tokens.authenticate(token));
    expect(refused.code).toBe('unauthorized');
    expect(refused.message).toContain('"one-hour" expired at');
  });

  it('revokes by name at once here, and within the recheck interval on another server of the same database', async () => {
    const here = new TokenService(repo, { now, recheckMs: 5000 });
    const elsewhere = new TokenService(repo, { now, recheckMs: 5000 });
    const { token } = await here.create(DEFAULT_TENANT, { name: 'alice@example.com', role: 'use' });
    await here.authenticate(token);
    await elsewhere.authenticate(token);
    const revoked = await here.revoke(DEFAULT_TENANT, 'alice@example.com');
    expect(revoked.revokedAt).not.toBeNull();
    expect((await rejection(here.authenticate(token))).message).toContain('"alice@example.com" was revoked');
    // The other server still knows it from its cache, until it asks again.
    expect((await elsewhere.authenticate(token)).tokenName).toBe('alice@example.com');
    clock += 5001;
    expect((await rejection(elsewhere.authenticate(token))).code).toBe('unauthorized');
    expect((await rejection(here.revoke(DEFAULT_TENANT, 'alice@example.com'))).code).toBe('token_not_found');
    expect((await here.list(DEFAULT_TENANT)).map((t) => t.name)).not.toContain('alice@example.com');
    expect((await here.list(DEFAULT_TENANT, { withRevoked: true })).map((t) => t.name)).toContain('alice@example.com');
  });

  it('revokes at once here even for a request whose token was being read meanwhile: it is not cached after the revocation', async () => {
    // On PostgreSQL the read may come back after the revocation commits on another connection; PGlite
    // answers in order, so the read is held back here until the revocation is done.
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    class HeldReads extends TokensRepo {
      override async byHash(hash: string) {
        const row = await super.byHash(hash);
        await held;
        return row;
      }
    }
    const here = new TokenService(new HeldReads(store.db), { now, recheckMs: 5000 });
    const { token } = await here.create(DEFAULT_TENANT, { name: 'bob@example.com', role: 'use' });
    const during = here.authenticate(token);
    await here.revoke(DEFAULT_TENANT, 'bob@example.com');
    release();
    expect((await during).tokenName).toBe('bob@example.com');
    expect((await rejection(here.authenticate(token))).message).toContain('"bob@example.com" was revoked');
  });

  it("refuses to revoke a data dir's own token, which keeps working", async () => {
    const tokens = new TokenService(repo, { now });
    const refused = await rejection(tokens.revoke(DEFAULT_TENANT, 't-datadir'));
    expect(refused.code).toBe('invalid_state');
    expect((await tokens.authenticate('local-secret')).role).toBe('admin');
  });

  it("replaces a data dir's token, the old one working until the new one is written", async () => {
    const tokens = new TokenService(repo, { now });
    await repo.add(dataDirTokenRow('dir-secret-1'));
    expect((await tokens.authenticate('dir-secret-1')).tokenName).toBe('data dir token');
    // Writing the new secret fails: the old one goes on working.
    const failed = tokens.rotateDataDirToken(dataDirTokenRow('dir-secret-1'), dataDirTokenRow('dir-secret-2'), 'dir-secret-2', () => {
      throw new Error('disk full');
    });
    await expect(failed).rejects.toThrow('disk full');
    expect((await tokens.authenticate('dir-secret-1')).role).toBe('admin');
    expect((await tokens.list(DEFAULT_TENANT)).filter((t) => t.origin === 'data-dir').map((t) => t.id)).not.toContain(dataDirTokenRow('dir-secret-2').id);
    let written = '';
    const view = await tokens.rotateDataDirToken(dataDirTokenRow('dir-secret-1'), dataDirTokenRow('dir-secret-3'), 'dir-secret-3', (s) => (written = s));
    expect(written).toBe('dir-secret-3');
    expect(view).toMatchObject({ name: 'data dir token', origin: 'data-dir', role: 'admin', revokedAt: null });
    expect((await rejection(tokens.authenticate('dir-secret-1'))).message).toContain('was revoked');
    expect((await tokens.authenticate('dir-secret-3')).tokenId).toBe(view.id);
  });

  it('records when a token was last used, at most once a minute', async () => {
    const tokens = new TokenService(repo, { now, touchEveryMs: 60_000 });
    const { token, view } = await tokens.create(DEFAULT_TENANT, { name: 'scraper', role: 'read' });
    const lastUsed = async () => (await repo.list(DEFAULT_TENANT)).find((t) => t.id === view.id)?.last_used_at?.getTime();
    await tokens.authenticate(token);
    await expect.poll(lastUsed).toBe(clock);
    const first = clock;
    clock += 30_000;
    await tokens.authenticate(token);
    await new Promise((r) => setTimeout(r, 50));
    expect(await lastUsed()).toBe(first);
    clock += 31_000;
    await tokens.authenticate(token);
    await expect.poll(lastUsed).toBe(clock);
  });

  it('keeps a scope of group names and prefixes, which an admin token cannot have', async () => {
    const tokens = new TokenService(repo, { now });
    const { token, view } = await tokens.create(DEFAULT_TENANT, { name: 'alice', role: 'use', scope: ['alice', 'alice-*'] });
    expect(view.scope).toEqual(['alice', 'alice-*']);
    expect((await tokens.authenticate(token)).scope).toEqual(['alice', 'alice-*']);
    expect(inScope(['alice', 'alice-*'], 'alice')).toBe(true);
    expect(inScope(['alice', 'alice-*'], 'alice-feature-x')).toBe(true);
    expect(inScope(['alice', 'alice-*'], 'alicebob')).toBe(false);
    expect(inScope(['alice', 'alice-*'], 'bob')).toBe(false);
    expect(inScope(['alice'], null)).toBe(false);
    expect((await rejection(tokens.create(DEFAULT_TENANT, { name: 'root', role: 'admin', scope: ['x'] }))).message).toBe('an admin token cannot have a scope');
    expect((await rejection(tokens.create(DEFAULT_TENANT, { name: 'bad', role: 'use', scope: ['a*b'] }))).code).toBe('validation_failed');
    expect((await rejection(tokens.create(DEFAULT_TENANT, { name: 'none', role: 'use', scope: [] }))).code).toBe('validation_failed');
    // An unscoped token has no scope at all, not an empty one.
    expect((await tokens.authenticate('local-secret')).scope).toBeUndefined();
  });

  it('orders roles read < use < admin and says what a refused token lacks', () => {
    expect(roleAllows('admin', 'use')).toBe(true);
    expect(roleAllows('use', 'use')).toBe(true);
    expect(roleAllows('read', 'use')).toBe(false);
    expect(roleAllows('use', 'admin')).toBe(false);
    let message = '';
    try {
      requireRole({ tenantId: DEFAULT_TENANT, tokenId: 'tk-1', tokenName: 'dash', role: 'read' }, 'use', 'POST /v1/commands');
    } catch (err) {
      message = err instanceof Error ? err.message : '';
    }
    expect(message).toBe('token "dash" has role read, and POST /v1/commands needs role use');
  });

  it('needs read for a GET, and a decision for every other method: a route without one stops the server', async () => {
    expect(routeRole('GET', '/v1/hosts')).toBe('read');
    expect(routeRole('HEAD', '/v1/hosts')).toBe('read');
    expect(routeRole('POST', '/v1/commands')).toBe('use');
    expect(routeRole('GET', '/v1/shells/recordings')).toBe('admin');
    expect(routeRole('POST', '/v1/something-new')).toBeUndefined();
    const app = Fastify();
    installAuth(app, () => Promise.reject(new Error('not called')));
    let registered: unknown;
    try {
      app.post('/v1/something-new', () => ({}));
    } catch (err) {
      registered = err;
    }
    expect(String(registered)).toContain('POST /v1/something-new needs a role in src/tokens/route-roles.ts');
    await app.close();
  });
});
