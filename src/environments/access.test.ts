/**
 * Who gets into a private environment: a token in X-Berth-Token that may see it, or the cookie an
 * access link leaves; never a token of another scope or tenant, a revoked one, an expired or altered
 * link or cookie, or one made for another environment. (The router keeps them from the app: router-guard.test.ts.)
 */
import type { IncomingMessage } from 'node:http';
import { beforeEach, describe, expect, it } from 'vitest';
import { BerthError } from '../core/errors.js';
import type { Principal } from '../tokens/token-service.js';
import { ACCESS_COOKIE, ACCESS_HEADER, ACCESS_PATH, EnvironmentAccess } from './access.js';

const T = 'default';
const people: Record<string, Principal> = {
  'secret-admin': { tenantId: T, tokenId: 't-admin', tokenName: 'admin', role: 'admin' },
  'secret-alice': { tenantId: T, tokenId: 't-alice', tokenName: 'alice', role: 'read', scope: ['alice', 'alice-*'] },
  'secret-bob': { tenantId: T, tokenId: 't-bob', tokenName: 'bob', role: 'use', scope: ['bob'] },
  'secret-other': { tenantId: 'other', tokenId: 't-other', tokenName: 'other', role: 'admin' },
};

function request(url: string, headers: Record<string, string> = {}): IncomingMessage {
  return { url, headers: { ...headers }, socket: {} /* plain HTTP */ } as unknown as IncomingMessage;
}

describe('private environments', () => {
  let now: number;
  let revoked: Set<string>;
  let access: EnvironmentAccess;

  beforeEach(() => {
    now = Date.parse('2026-11-24T10:00:00Z');
    revoked = new Set();
    access = new EnvironmentAccess({
      tokens: {
        authenticate: (secret) => {
          const p = people[secret];
          return p && !revoked.has(p.tokenId) ? Promise.resolve(p) : Promise.reject(new BerthError('unauthorized', 'invalid API token', 'Use another.'));
        },
        live: (tenantId, tokenId) => Promise.resolve(Object.values(people).find((p) => p.tenantId === tenantId && p.tokenId === tokenId && !revoked.has(tokenId))),
      },
      tenantKey: (tenantId) => Promise.resolve(`key-of-${tenantId}`),
      now: () => now,
    });
  });

  /** Opens the link as a browser would: the cookie the router sets. */
  const exchange = async (env: string, link: string) => {
    const answer = await access.guard(T, env).login(request(link.slice(link.indexOf(ACCESS_PATH))));
    if ('status' in answer) return answer;
    expect(answer.location).toBe('/');
    expect(answer.setCookie).toMatch(new RegExp(`^${ACCESS_COOKIE}=[^;]+; HttpOnly; SameSite=Lax; Path=/; Max-Age=43200$`));
    return answer.setCookie.split(';')[0] ?? '';
  };

  it('lets in a token that may see it, sent in X-Berth-Token', async () => {
    for (const [secret, env] of [['secret-admin', 'alice'], ['secret-alice', 'alice'], ['secret-alice', 'alice-feature'], ['secret-bob', 'bob']] as const) {
      expect(await access.guard(T, env).check(request('/', { [ACCESS_HEADER]: secret, accept: 'text/html' }))).toBeUndefined();
    }
  });

  it('refuses no token (401), an unknown or revoked one (401), and one of another scope or tenant (403)', async () => {
    const guard = access.guard(T, 'alice');
    expect(await guard.check(request('/'))).toMatchObject({ status: 401, code: 'environment_private', message: 'environment alice is private: this request carries no berth token' });
    expect(await guard.check(request('/', { [ACCESS_HEADER]: 'nope' }))).toMatchObject({ status: 401, message: 'environment alice is private: invalid API token' });
    expect(await guard.check(request('/', { [ACCESS_HEADER]: 'secret-bob' }))).toMatchObject({ status: 403, code: 'access_denied', message: 'environment alice is private: token "bob" may not look at it' });
    expect(await guard.check(request('/', { [ACCESS_HEADER]: 'secret-other' }))).toMatchObject({ status: 403 });
    revoked.add('t-alice');
    expect(await guard.check(request('/', { [ACCESS_HEADER]: 'secret-alice' }))).toMatchObject({ status: 401 });
  });

  it("exchanges a link for a cookie that lets its token's holder in", async () => {
    const { url, expiresAt } = await access.link(people['secret-alice'] as Principal, 'alice', 'http://alice.localhost:7080/');
    expect(url).toMatch(/^http:\/\/alice\.localhost:7080\/\.berth\/access\?grant=[\w-]+\.[\w-]+$/);
    expect(expiresAt).toBe('2026-11-24T10:05:00.000Z');
    const cookie = await exchange('alice', url);
    expect(await access.guard(T, 'alice').check(request('/page', { cookie: `theme=dark; ${cookie as string}; lang=en` }))).toBeUndefined();
    expect(await access.guard(T, 'alice').check(request('/', { cookie: cookie as string }))).toBeUndefined();
    // 11 hours later still; 13 hours later no more.
    now += 11 * 3600_000;
    expect(await access.guard(T, 'alice').check(request('/', { cookie: cookie as string }))).toBeUndefined();
    now += 2 * 3600_000;
    expect(await access.guard(T, 'alice').check(request('/', { cookie: cookie as string }))).toMatchObject({ status: 401, message: expect.stringContaining('access cookie is no longer good') as string });
  });

  it('refuses a link or cookie that expired, was altered, is for another environment or tenant, or whose token was revoked', async () => {
    await expect(access.link(people['secret-bob'] as Principal, 'alice', 'http://alice.localhost/')).rejects.toMatchObject({ code: 'forbidden' });
    const { url } = await access.link(people['secret-alice'] as Principal, 'alice', 'http://alice.localhost/');
    expect(await exchange('alice-two', url)).toMatchObject({ status: 401 });
    expect(await access.guard('other', 'alice').login(request(url.slice(url.indexOf(ACCESS_PATH))))).toMatchObject({ status: 401 });
    const grant = new URL(url).searchParams.get('grant') ?? '';
    const [body, mac] = grant.split('.');
    const forged = Buffer.from(JSON.stringify({ ...(JSON.parse(Buffer.from(body ?? '', 'base64url').toString()) as object), env: 'alice-two' })).toString('base64url');
    expect(await exchange('alice-two', `${ACCESS_PATH}?grant=${forged}.${mac ?? ''}`)).toMatchObject({ status: 401 });
    expect(await exchange('alice', `${ACCESS_PATH}?grant=garbage`)).toMatchObject({ status: 401 });
    // A link is not a cookie, nor a cookie a link.
    expect(await access.guard(T, 'alice').check(request('/', { cookie: `${ACCESS_COOKIE}=${grant}` }))).toMatchObject({ status: 401 });
    const cookie = (await exchange('alice', url)) as string;
    expect(await exchange('alice', `${ACCESS_PATH}?grant=${cookie.slice(ACCESS_COOKIE.length + 1)}`)).toMatchObject({ status: 401 });
    expect(await access.guard(T, 'alice-two').check(request('/', { cookie }))).toMatchObject({ status: 401 });
    revoked.add('t-alice');
    expect(await access.guard(T, 'alice').check(request('/', { cookie }))).toMatchObject({ status: 401 });
    revoked.clear();
    now += 6 * 60_000;
    expect(await exchange('alice', url)).toMatchObject({ status: 401 });
  });
});
