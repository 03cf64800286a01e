/**
 * Environments heal, on real hosts: a host whose machine dies (its init killed, as a crash or an
 * OOM kill of the whole host would) or that someone terminates is replaced from the pool without
 * anyone asking — in place (the others untouched, its settings kept), for review hosts and for a
 * service-mode host whose address no other host is told — and the URL answers again.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { EnvironmentView } from '../../src/environments/views.js';
import { berth } from '../helpers/server.js';
import { routerGet, shopYaml, useStackServer } from '../helpers/stack-server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthhel0', subnet: '10.222.0.0/24', cgroupName: 'berthhel' };

const berthYaml = shopYaml(`'%s from %s\\n' "$GREETING" "$BERTH_ENVIRONMENT"`, 3, '{GREETING: "hello"}');

describe('environments heal', () => {
  const stack = useStackServer(NET, berthYaml, { shop: 3 });
  const show = async (name: string) => (await stack.srv.api.get<EnvironmentView>(`/v1/environments/${name}`)).body;
  const create = async (args: string[]) => {
    const res = await berth(['env', 'create', ...args, '--json'], stack.env, { timeoutMs: 90_000 });
    expect(res.code, res.stderr).toBe(0);
    return JSON.parse(res.stdout) as EnvironmentView;
  };
  /** Waits until `name` is ready on hosts other than `lost`, and returns it. */
  const healed = (name: string, lost: string) =>
    waitFor(`${name} without ${lost}`, async () => {
      const view = await show(name);
      return view.state === 'ready' && view.hosts.length > 0 && !view.hosts.some((h) => h.hostId === lost) ? view : undefined;
    }, { timeoutMs: 60_000 });
  const killHost = (hostId: string) => {
    const state = JSON.parse(readFileSync(join(stack.srv.dataDir, 'hosts', hostId, 'state.json'), 'utf8')) as { initPid?: number };
    if (!state.initPid) throw new Error(`no init pid recorded for ${hostId}`);
    process.kill(state.initPid, 'SIGKILL');
  };

  it('replaces a review host whose machine died, leaving the other untouched; the URL keeps answering', async () => {
    const before = await create(['pair', '--stack', 'shop', '--replicas', '2', '--set', 'GREETING=hi']);
    const [dies, stays] = before.hosts.map((h) => h.hostId);
    if (!dies || !stays) throw new Error('two hosts expected');
    killHost(dies);
    const after = await healed('pair', dies);
    expect(after.hosts.map((h) => h.hostId)).toContain(stays);
    expect(after.hosts).toHaveLength(2);
    expect(after.operation).toBe('heal');
    expect(Object.keys(after.timings).sort()).toEqual(['claimMs', 'initMs', 'readyMs', 'routeMs', 'servicesMs', 'totalMs']);
    expect(after.stateReason).toMatch(new RegExp(`^replaced ${dies} \\(${dies} (terminated|terminating|lost): .*\\) with h-`));
    expect(after.backends?.map((b) => b.id).sort()).toEqual(after.hosts.map((h) => h.hostId).sort());
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const answer = await routerGet(stack.routerPort(), 'pair');
      expect(`${answer.status} ${answer.body}`).toBe('200 hi from pair\n');
      seen.add(String(answer.headers['x-berth-backend']));
    }
    expect(seen.size).toBe(2);
    const events = await berth(['events', '--kind', 'environment', '--json'], stack.env);
    expect(events.stdout).toMatch(/"state":\s*"healing"/);
    expect((await berth(['env', 'rm', 'pair'], stack.env)).code).toBe(0);
  });

  it('replaces a host someone terminated, so a one-host environment answers again with its settings', async () => {
    const before = await create(['solo', '--stack', 'shop', '--set', 'GREETING=hey']);
    const gone = before.hosts[0]?.hostId ?? '';
    expect((await berth(['host', 'rm', gone], stack.env)).code).toBe(0);
    await healed('solo', gone);
    const answer = await waitFor('solo answering', async () => {
      const res = await routerGet(stack.routerPort(), 'solo');
      return res.status === 200 ? res : undefined;
    });
    expect(answer.body).toBe('hey from solo\n');
    expect((await berth(['env', 'rm', 'solo'], stack.env)).code).toBe(0);
  });

  it('in service mode, replaces a lost host in place when no other host is told its address: a new api host, web untouched', async () => {
    const before = await create(['fleet', '--stack', 'shop', '--mode', 'service']);
    const api = before.hosts.find((h) => h.service === 'api')?.hostId ?? '';
    const web = before.hosts.find((h) => h.service === 'web')?.hostId ?? '';
    killHost(api);
    const after = await healed('fleet', api);
    expect(after.hosts.map((h) => h.service).sort()).toEqual(['api', 'web']);
    expect(after.hosts.find((h) => h.service === 'web')?.hostId).toBe(web);
    expect(after.operation).toBe('heal');
    expect(after.stateReason).toMatch(new RegExp(`^replaced ${api} \\(api\\) .* with h-`));
    const newApi = after.hosts.find((h) => h.service === 'api')?.hostId ?? '';
    const services = (await stack.srv.api.get<{ services: { name: string; status: { state: string } | null }[] }>(`/v1/hosts/${newApi}/services`)).body.services;
    expect(services.map((x) => `${x.name}:${x.status?.state ?? '-'}`)).toEqual(['api:ready']);
    expect((await routerGet(stack.routerPort(), 'fleet')).body).toBe('hello from fleet\n');
    expect((await berth(['env', 'rm', 'fleet'], stack.env)).code).toBe(0);
  });
});
