/**
 * Hosts reach each other only within their group: a user's hosts talk to each other, never to
 * another user's hosts or to a pool's spares; a host that leaves its group (released, reset for
 * reuse) is cut off before its address can serve anyone else; and a restarted server keeps it so.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { ClaimView, PoolHostView } from '../../src/pools/views.js';
import { freePort } from '../helpers/ports.js';
import { startServer, tempDataDir, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthnet0', subnet: '10.237.0.0/24', cgroupName: 'berthnet' };
const PORT = 9100;

describe('which hosts reach each other', () => {
  let srv: InProcessServer;
  let dataDir: string;
  /** Fixed, so the agents find the restarted server where they left it. */
  let agentPort: number;
  let before: ReturnType<InProcessServer['leftovers']>;

  const run = async (host: { id: string }, command: string) => {
    const res = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: [command], executionTimeout: 20 }, wait: 30 });
    expect(res.status).toBe(201);
    return res.body.invocations[0]?.stdout ?? '';
  };
  /** Every host answers on PORT with its hostname (IPv4 and IPv6), as a user's service would. */
  const listen = (host: { id: string }) =>
    run(host, `nohup node -e "require('net').createServer((c) => c.end(require('os').hostname() + '\\n')).listen(${PORT}, () => console.log('listening'))" > /tmp/listen.log 2>&1 & sleep 0.5; cat /tmp/listen.log`);
  /** What `from` gets when it dials `to`: the hostname that answered, or `blocked`. */
  const dial = async (from: { id: string }, to: { ip: string | null }) =>
    (await run(from, `timeout 2 bash -c 'exec 3<>/dev/tcp/${to.ip ?? '?'}/${PORT} && head -1 <&3' 2>/dev/null || echo blocked`)).trim();
  /** Where `from` finds `name` through the gateway's DNS: the address, or `none`. */
  const resolve = async (from: { id: string }, name: string) => (await run(from, `getent ahostsv4 ${name} | head -1 | cut -d' ' -f1 | grep . || echo none`)).trim();
  const claim = async (group: string) => {
    const res = await srv.api.post<ClaimView>('/v1/pools/net/claims', { group });
    expect(res.status).toBe(201);
    if (!res.body.host) throw new Error('no host');
    return res.body.host;
  };
  const spares = async () => (await srv.api.get<{ hosts: PoolHostView[] }>('/v1/pools/net/hosts')).body.hosts.filter((h) => h.slot === 'ready');
  const fullPool = () => waitFor('3 ready hosts', async () => ((await spares()).length === 3 ? await spares() : undefined), { timeoutMs: 30_000 });
  const peerRules = () => execFileSync('ip', ['-4', 'rule', 'show', 'pref', '31000'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`iif ${NET.bridge}`));

  beforeAll(async () => {
    dataDir = await tempDataDir('netgroups');
    agentPort = await freePort();
    srv = await startServer(NET, { dataDir, agentPort });
    before = srv.leftovers();
    expect((await srv.api.post('/v1/pools', { name: 'net', size: 3 })).status).toBe(201);
    await fullPool();
  }, 60_000);

  afterAll(async () => {
    await srv?.stop();
  });

  it('keeps a pool\'s spares apart: a spare reaches only the machine', async () => {
    const [a, b] = await fullPool();
    if (!a || !b) throw new Error('no spares');
    for (const host of [a, b]) expect(await listen(host)).toContain('listening');
    expect(await dial(a, b)).toBe('blocked');
    expect(await dial(b, a)).toBe('blocked');
    // The machine (its router, its health checks) still reaches every host.
    const answer = execFileSync('bash', ['-c', `timeout 2 bash -c 'exec 3<>/dev/tcp/${a.ip ?? '?'}/${PORT} && head -1 <&3'`], { encoding: 'utf8' });
    expect(answer.trim()).toBe(a.hostname);
  }, 60_000);

  it('lets a group\'s hosts reach each other, and no one else', async () => {
    const alice1 = await claim('alice');
    const alice2 = await claim('alice');
    const bob = await claim('bob');
    for (const host of [alice1, alice2, bob]) await listen(host);
    expect(await dial(alice1, alice2)).toBe(alice2.hostname);
    expect(await dial(alice2, alice1)).toBe(alice1.hostname);
    // They find each other by name too; bob finds neither of them.
    expect(await resolve(alice1, alice2.hostname)).toBe(alice2.ip);
    expect(await resolve(alice2, alice1.hostname.toUpperCase())).toBe(alice1.ip);
    expect(await resolve(bob, alice1.hostname)).toBe('none');
    // The name service counts how it answered: group mates' names here, bob's lookup refused.
    const metrics = await fetch(`${srv.server.url}/metrics`, { headers: { authorization: `Bearer ${srv.server.token}` } }).then((r) => r.text());
    const answers = (how: string) => Number(new RegExp(`^berth_name_service_answers_total\\{answer="${how}"\\} (\\d+)$`, 'm').exec(metrics)?.[1]);
    expect(answers('local')).toBeGreaterThanOrEqual(2);
    expect(answers('refused')).toBeGreaterThanOrEqual(1);
    expect(await dial(bob, alice1)).toBe('blocked');
    expect(await dial(alice2, bob)).toBe('blocked');
    const [spare] = await fullPool();
    if (!spare) throw new Error('no spare');
    await listen(spare);
    expect(await dial(spare, alice1)).toBe('blocked');
    expect(await dial(alice1, spare)).toBe('blocked');
    expect(peerRules()).toHaveLength(2);
    // The rules trust a packet's source: bob's host cannot send as alice's (IP_FREEBIND binds any
    // address, but only IP_TRANSPARENT or a raw socket would send from it: NET_ADMIN / NET_RAW).
    const forged = await run(bob, `python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
s.bind(('${alice1.ip ?? '?'}', 0))
try:
    s.sendto(b'hi', ('${alice2.ip ?? '?'}', ${PORT}))
    print('sent')
except OSError as e:
    print('refused', e.errno)
try:
    s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT
    print('transparent')
except OSError as e:
    print('no-transparent', e.errno)
"`);
    expect(forged).toMatch(/^refused \d+\nno-transparent 1\n$/);
  }, 120_000);

  it('cuts off a host that leaves its group, terminated or reset for reuse', async () => {
    const hosts = (await srv.api.get<{ hosts: PoolHostView[] }>('/v1/pools/net/hosts')).body.hosts;
    const alice = hosts.filter((h) => h.group === 'alice');
    const [stay, leave] = alice;
    if (!stay || !leave || alice.length !== 2) throw new Error(`alice has ${alice.length} hosts`);
    expect((await srv.api.post(`/v1/hosts/${leave.id}/release`, { reuse: true })).status).toBe(200);
    // Back in the pool (reset, so no listener): alice's remaining host no longer reaches its address.
    await waitFor('the reused host to be ready', async () => ((await spares()).some((h) => h.id === leave.id) ? true : undefined), { timeoutMs: 30_000 });
    await listen(leave);
    expect(await dial(stay, leave)).toBe('blocked');
    expect(await dial(leave, stay)).toBe('blocked');
    expect(peerRules()).toHaveLength(0);

    const carol1 = await claim('carol');
    const carol2 = await claim('carol');
    await listen(carol2);
    expect(await dial(carol1, carol2)).toBe(carol2.hostname);
    expect(await resolve(carol1, carol2.hostname)).toBe(carol2.ip);
    expect((await srv.api.post(`/v1/hosts/${carol2.id}/release`, {})).status).toBe(200);
    expect(peerRules()).toHaveLength(0);
    expect(await dial(carol1, carol2)).toBe('blocked');
    expect(await resolve(carol1, carol2.hostname)).toBe('none');
  }, 120_000);

  it('keeps groups as they were across a server restart and a user\'s reset', async () => {
    const dave1 = await claim('dave');
    const dave2 = await claim('dave');
    await listen(dave2);
    expect(await dial(dave1, dave2)).toBe(dave2.hostname);
    await srv.stop({ removeHosts: false });
    srv = await startServer(NET, { dataDir, agentPort });
    expect(peerRules()).toHaveLength(2);
    await waitFor('both agents back', async () => {
      const hosts = (await srv.api.get<{ hosts: PoolHostView[] }>('/v1/pools/net/hosts')).body.hosts.filter((h) => h.group === 'dave');
      return hosts.length === 2 && hosts.every((h) => h.agent.connected) ? true : undefined;
    });
    expect(await dial(dave1, dave2)).toBe(dave2.hostname);
    expect(await resolve(dave1, dave2.hostname)).toBe(dave2.ip);
    // A user's reset of a claimed host keeps it in its group, and so within reach of it.
    expect((await srv.api.post(`/v1/hosts/${dave2.id}/reset`, {})).status).toBe(200);
    await listen(dave2);
    expect(await dial(dave1, dave2)).toBe(dave2.hostname);
    expect(await resolve(dave1, dave2.hostname)).toBe(dave2.ip);
    expect((await srv.api.post(`/v1/hosts/${dave1.id}/release`, {})).status).toBe(200);
    expect(peerRules()).toHaveLength(0);
  }, 120_000);

  it('leaves no rule behind once every host is gone', async () => {
    const pools = await srv.api.get<{ pools: { name: string }[] }>('/v1/pools');
    for (const pool of pools.body.pools) await srv.api.delete(`/v1/pools/${pool.name}`);
    await srv.server.pools.reconciler.settled();
    const { body } = await srv.api.get<{ hosts: { id: string }[] }>('/v1/hosts');
    for (const host of body.hosts) await srv.api.delete(`/v1/hosts/${host.id}`);
    expect(srv.leftovers()).toEqual(before);
    expect(peerRules()).toEqual([]);
  }, 60_000);
});
