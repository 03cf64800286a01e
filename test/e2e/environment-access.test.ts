/**
 * Private environments on real hosts through the real CLI, router and tokens: nobody without a
 * token that may see it gets through (and a sleeping one is not woken for them); a scoped token in
 * X-Berth-Token does; `berth env open` gives a link a browser exchanges for a cookie, which stops
 * working when its token is revoked; `env access … public` opens it to everyone.
 */
import { describe, expect, it } from 'vitest';
import type { EnvironmentView } from '../../src/environments/views.js';
import { berth } from '../helpers/server.js';
import { routerGet, useStackServer } from '../helpers/stack-server.js';

const NET = { bridge: 'berthacc0', subnet: '10.254.0.0/22', cgroupName: 'berthacc' };

const berthYaml = `stacks:
  app:
    services:
      web:
        cmd: mkdir -p /tmp/www && printf 'page of %s\\n' "$BERTH_ENVIRONMENT" > /tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www
        ports: [8080]
        ready: {http: 8080}
        stopTimeout: 1s
pools:
  - name: app
    size: 2
    template: {tags: {berth.stack: app, berth.mode: review}}
`;

describe('private environments', () => {
  const stack = useStackServer(NET, berthYaml, { app: 2 });
  const routerPort = () => stack.routerPort();
  const get = (port: number, name: string, path = '/', headers: Record<string, string> = {}) => routerGet(port, name, { path, headers });
  const token = async (name: string, scope: string) => {
    const made = await berth(['token', 'create', name, '--role', 'read', '--scope', scope], stack.env);
    expect(made.code, made.stderr).toBe(0);
    return made.stdout.trim();
  };

  it('answers only tokens that may see it, whether sent by a program or left by a link as a cookie', async () => {
    const created = await berth(['env', 'create', 'alice-pr', '--stack', 'app', '--private'], stack.env, { timeoutMs: 60_000 });
    expect(created.code, created.stderr).toBe(0);
    expect(created.stderr).toContain('private: berth env open alice-pr prints a link for a browser');
    const anonymous = await get(routerPort(), 'alice-pr');
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toContain('environment alice-pr is private');
    expect(anonymous.body).not.toContain('page of');

    const alice = await token('alice', 'alice,alice-*');
    const bob = await token('bob', 'bob');
    expect(await get(routerPort(), 'alice-pr', '/', { 'x-berth-token': alice })).toMatchObject({ status: 200, body: 'page of alice-pr\n' });
    expect((await get(routerPort(), 'alice-pr', '/', { 'x-berth-token': bob })).status).toBe(403);

    // Bob may not even ask for a link; alice's link lets a browser in.
    expect((await berth(['env', 'open', 'alice-pr'], { ...stack.env, BERTH_TOKEN: bob })).code).toBe(2);
    const opened = await berth(['env', 'open', 'alice-pr'], { ...stack.env, BERTH_TOKEN: alice });
    expect(opened.code, opened.stderr).toBe(0);
    expect(opened.stderr).toContain('alice-pr is private: open this link within 5 minutes');
    const link = new URL(opened.stdout.trim());
    expect(link.host).toBe(`alice-pr.localhost:${routerPort()}`);
    const exchanged = await get(routerPort(), 'alice-pr', `${link.pathname}${link.search}`);
    expect([exchanged.status, exchanged.headers.location]).toEqual([303, '/']);
    const cookie = (exchanged.headers['set-cookie']?.[0] ?? '').split(';')[0] ?? '';
    expect(cookie).toMatch(/^berth_access=/);
    expect(await get(routerPort(), 'alice-pr', '/', { cookie })).toMatchObject({ status: 200, body: 'page of alice-pr\n' });
    // The cookie is alice's token's: revoked, it lets nobody in.
    expect((await berth(['token', 'revoke', 'alice'], stack.env)).code).toBe(0);
    expect((await get(routerPort(), 'alice-pr', '/', { cookie })).status).toBe(401);
    expect((await get(routerPort(), 'alice-pr', '/', { 'x-berth-token': alice })).status).toBe(401);
  });

  it('does not wake a sleeping private environment for a stranger, and opens to everyone when made public', async () => {
    expect((await berth(['env', 'sleep', 'alice-pr'], stack.env)).code).toBe(0);
    expect((await get(routerPort(), 'alice-pr')).status).toBe(401);
    expect((await stack.srv.api.get<EnvironmentView>('/v1/environments/alice-pr')).body).toMatchObject({ state: 'sleeping', hosts: [], private: true });
    const made = await berth(['env', 'access', 'alice-pr', 'public'], stack.env);
    expect(made.stdout).toBe('alice-pr is public\n');
    expect(await get(routerPort(), 'alice-pr')).toMatchObject({ status: 200, body: 'page of alice-pr\n' });
    expect((await berth(['env', 'open', 'alice-pr'], stack.env)).stdout.trim()).toBe(`http://alice-pr.localhost:${routerPort()}/`);
    // And private again, at once, while it runs.
    expect((await berth(['env', 'access', 'alice-pr', 'private'], stack.env)).code).toBe(0);
    expect((await get(routerPort(), 'alice-pr')).status).toBe(401);
    expect((await berth(['env', 'access', 'alice-pr', 'secret'], stack.env)).code).toBe(2);
    expect((await berth(['env', 'rm', 'alice-pr'], stack.env)).code).toBe(0);
  });
});
