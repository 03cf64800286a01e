/**
 * Events end to end: a pool of one filled, claimed, a command and a service run on the host, the
 * host released —
 * every state change seen, in order by seq, by `berth events --json` and by a Server-Sent Events
 * follower of /v1/events (which needs the token like every route); `berth events -f` ends with exit
 * 0 on Ctrl-C.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { BerthEvent } from '../../src/events/types.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { berth, useServer, type InProcessServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthevt0', subnet: '10.240.0.0/22', cgroupName: 'berthevt' };

/** Follows /v1/events?follow=true in the background, collecting each event's id line and data. */
function followEvents(url: string, token: string, signal: AbortSignal): { events: BerthEvent[]; ids: number[]; done: Promise<void> } {
  const events: BerthEvent[] = [];
  const ids: number[] = [];
  const done = (async () => {
    const res = await fetch(`${url}/v1/events?follow=true`, { headers: { authorization: `Bearer ${token}` }, signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffered += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const message = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const id = /^id: (\d+)$/m.exec(message)?.[1];
          const data = /^data: (.*)$/m.exec(message)?.[1];
          if (id !== undefined) ids.push(Number(id));
          if (data !== undefined) events.push(JSON.parse(data) as BerthEvent);
        }
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  })();
  return { events, ids, done };
}

/** The states one subject went through, in order of seq. */
const statesOf = (events: BerthEvent[], kind: BerthEvent['kind'], id: string) => events.filter((e) => e.kind === kind && e.id === id).map((e) => e.state);
const seqOf = (events: BerthEvent[], kind: BerthEvent['kind'], id: string, state: string): number => {
  const found = events.find((e) => e.kind === kind && e.id === id && e.state === state);
  if (!found) throw new Error(`no ${kind} event of ${id} to ${state} in:\n${events.map((e) => `${e.seq} ${e.kind} ${e.id} ${e.state}`).join('\n')}`);
  return found.seq;
};

describe('events', () => {
  let srv: InProcessServer;
  let env: Record<string, string>;
  const server = useServer(NET);
  beforeAll(() => {
    srv = server.srv;
    env = { BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token };
  });

  it('shows a pool filling, a claim, a command and the release, in order, to `berth events --json` and to an SSE follower', async () => {
    const following = new AbortController();
    const sse = followEvents(srv.server.url, srv.server.token, following.signal);

    expect((await srv.api.post('/v1/pools', { name: 'evt', size: 1 })).status).toBe(201);
    await waitFor('pool evt to fill', async () => ((await srv.api.get<PoolStatusView>('/v1/pools/evt')).body.status.ready === 1 ? true : undefined), { timeoutMs: 60_000 });
    const claim = await srv.api.post<ClaimView>('/v1/pools/evt/claims', { group: 'alice' });
    expect(claim.status).toBe(201);
    const hostId = claim.body.host?.id ?? '';
    expect(hostId).toMatch(/^h-/);
    const cmd = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['echo hi'] }, wait: 30 });
    expect(cmd.body.status).toBe('Success');
    // A supervised service on it: its agent reports each change.
    const svc = await srv.api.put<{ services: { status: { state: string } | null }[] }>(`/v1/hosts/${hostId}/services?wait=20`, { services: [{ name: 'web', cmd: 'exec sleep 1000', restart: { policy: 'always' } }] });
    expect(svc.body.services?.[0]?.status?.state, JSON.stringify(svc.body)).toBe('ready');
    expect((await srv.api.post(`/v1/hosts/${hostId}/release`, {})).status).toBe(200);
    await waitFor('the release to reach the follower', () => Promise.resolve(sse.events.some((e) => e.kind === 'pool' && e.id === hostId && e.state === 'released') ? true : undefined));

    const res = await berth(['events', '--json'], env);
    expect(res.code).toBe(0);
    const cli = res.stdout.trim().split('\n').map((line) => JSON.parse(line) as BerthEvent);
    expect(cli.map((e) => e.seq)).toEqual([...cli.map((e) => e.seq)].sort((a, b) => a - b));

    for (const events of [cli, sse.events]) {
      // The claimed host: launched, running, then terminated by the release.
      const host = statesOf(events, 'host', hostId);
      expect(host[0]).toBe('launching');
      expect(host).toContain('running');
      expect(host.slice(-2)).toEqual(['terminating', 'terminated']);
      // Its slot in the pool, every step with the one it left.
      const slots = events.filter((e) => e.kind === 'pool' && e.id === hostId);
      expect(slots.map((e) => [e.from ?? null, e.state])).toEqual([
        [null, 'warming'],
        ['warming', 'ready'],
        ['ready', 'claiming'],
        ['claiming', 'claimed'],
        ['claimed', 'retiring'],
        ['retiring', 'released'],
      ]);
      expect(slots.every((e) => e.pool === 'evt' && e.hostId === hostId)).toBe(true);
      // Who made each change: the pool's own work (filling it) names nobody; the claim and the
      // release name the token whose requests made them, down to the host's termination.
      const ME = 'data dir token';
      expect(slots.map((e) => e.actor ?? null)).toEqual([null, null, ME, ME, ME, ME]);
      expect(events.filter((e) => e.kind === 'host' && e.id === hostId).map((e) => [e.state, e.actor ?? null])).toEqual([
        ['launching', null],
        ['booting', null],
        ['running', null],
        ['terminating', ME],
        ['terminated', ME],
      ]);
      // The claim, ready with its host, then released.
      const claimEvents = events.filter((e) => e.kind === 'claim' && e.id === claim.body.id);
      expect(claimEvents.map((e) => e.state)).toEqual(['pending', 'ready', 'released']);
      expect(claimEvents.every((e) => e.actor === 'data dir token')).toBe(true);
      expect(claimEvents[1]).toMatchObject({ from: 'pending', hostId, pool: 'evt', group: 'alice', claimId: claim.body.id });
      // The command and its one invocation.
      expect(statesOf(events, 'command', cmd.body.id)).toEqual(['Pending', 'Success']);
      // Sent by the token; finished by the host's agent (its report names nobody).
      expect(events.filter((e) => e.kind === 'command' && e.id === cmd.body.id).map((e) => e.actor ?? null)).toEqual(['data dir token', null]);
      const invocation = statesOf(events, 'invocation', `${cmd.body.id}/${hostId}`);
      expect(invocation[0]).toBe('Pending');
      expect(invocation.at(-1)).toBe('Success');
      expect(events.find((e) => e.kind === 'command' && e.id === cmd.body.id)).toMatchObject({ commandId: cmd.body.id, hostId });
      // The service, as its agent reported it, until the host stopped it.
      const service = events.filter((e) => e.kind === 'service' && e.id === `${hostId}/web`);
      expect(service.map((e) => e.state)).toContain('ready');
      expect(service.every((e) => e.hostId === hostId && e.service === 'web')).toBe(true);
      expect(service.map((e) => e.state).filter((state, i, all) => state === all[i - 1])).toEqual([]); // changes only
      // In order of seq.
      const order = [
        seqOf(events, 'host', hostId, 'launching'),
        seqOf(events, 'host', hostId, 'running'),
        seqOf(events, 'pool', hostId, 'ready'),
        seqOf(events, 'claim', claim.body.id, 'pending'),
        seqOf(events, 'claim', claim.body.id, 'ready'),
        seqOf(events, 'command', cmd.body.id, 'Pending'),
        seqOf(events, 'invocation', `${cmd.body.id}/${hostId}`, 'Success'),
        seqOf(events, 'command', cmd.body.id, 'Success'),
        seqOf(events, 'service', `${hostId}/web`, 'ready'),
        seqOf(events, 'claim', claim.body.id, 'released'),
        seqOf(events, 'host', hostId, 'terminated'),
        seqOf(events, 'pool', hostId, 'released'),
      ];
      expect(order).toEqual([...order].sort((a, b) => a - b));
    }
    // The follower saw each event once, with its seq as the SSE id, in order, and what the CLI saw.
    expect(sse.ids).toEqual(sse.events.map((e) => e.seq));
    expect(sse.ids).toEqual([...sse.ids].sort((a, b) => a - b));
    expect(new Set(sse.ids).size).toBe(sse.ids.length);
    const last = Math.max(...cli.map((e) => e.seq));
    expect(sse.events.filter((e) => e.seq <= last)).toEqual(cli);
    following.abort();
    await sse.done;

    // Filters, and lines for people.
    const claims = await berth(['events', '--kind', 'claim', '--pool', 'evt'], env);
    expect(claims.code).toBe(0);
    expect(claims.stdout).toMatch(new RegExp(`^\\d\\d:\\d\\d:\\d\\d claim ${claim.body.id} ready host=${hostId} pool=evt group=alice by="data dir token"$`, 'm'));
    expect(claims.stdout.split('\n').filter(Boolean).every((line) => / claim /.test(line))).toBe(true);
    const since = await berth(['events', '--json', '--since', String(last - 1)], env);
    expect(since.stdout.trim().split('\n').map((l) => (JSON.parse(l) as BerthEvent).seq)[0]).toBe(last);
    expect((await berth(['events', '--kind', 'nope'], env)).code).toBe(2);
    // What one token did: every change it made, none of berth's own.
    const mine = (await berth(['events', '--json', '--by', 'data dir token'], env)).stdout.trim().split('\n').map((l) => JSON.parse(l) as BerthEvent);
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.every((e) => e.actor === 'data dir token')).toBe(true);
    expect(mine.some((e) => e.kind === 'claim' && e.id === claim.body.id)).toBe(true);
    expect(mine.some((e) => e.kind === 'pool' && e.state === 'warming')).toBe(false);
    expect((await berth(['events', '--by', 'nobody'], env)).stdout).toBe('');

    // Behind the token like every route.
    expect((await fetch(`${srv.server.url}/v1/events`)).status).toBe(401);
    expect((await fetch(`${srv.server.url}/v1/events?follow=true`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await berth(['events'], { ...env, BERTH_TOKEN: 'wrong' })).code).toBe(2);
    // Described in the API's OpenAPI document.
    const spec = await srv.api.get<{ paths: Record<string, { get?: { parameters?: { name: string }[] } }> }>('/openapi.json');
    expect(spec.body.paths['/v1/events']?.get?.parameters?.map((p) => p.name)).toEqual(expect.arrayContaining(['since', 'follow', 'kind', 'pool', 'host']));
  }, 120_000);

  it('`berth events -f` streams until Ctrl-C and then exits 0', async () => {
    const stop = new AbortController();
    let seen = '';
    const following = berth(['events', '-f', '--kind', 'host'], env, { interrupt: stop.signal, onStdout: (chunk) => (seen += chunk) });
    // What is buffered comes first; then a new host's events as they happen.
    await waitFor('the buffered events', () => Promise.resolve(seen.includes(' host ') ? true : undefined));
    const launched = await srv.api.post<{ id: string }>('/v1/hosts', {});
    expect(launched.status).toBe(201);
    await waitFor('the new host running', () => Promise.resolve(new RegExp(`host ${launched.body.id} running`).test(seen) ? true : undefined));
    stop.abort();
    const done = await following;
    expect(done.code).toBe(0);
    expect(done.stderr).toBe('');
  }, 60_000);
});
