/** Bad input gets a 4xx with a stable code and a message, and changes nothing. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WsClient } from '../../src/agent/ws-client.js';
import type { HostView } from '../../src/hosts/views.js';
import { Api, startServer, type InProcessServer } from '../helpers/server.js';

const NET = { bridge: 'berthbad0', subnet: '10.218.0.0/24', cgroupName: 'berthbad' };

interface ErrorBody {
  code: string;
  message: string;
  hint: string;
}

describe('bad input', () => {
  let srv: InProcessServer;
  let host: HostView;

  const counts = async () => {
    const hosts = await srv.api.get<{ hosts: unknown[] }>('/v1/hosts?all=true');
    const commands = await srv.api.get<{ commands: unknown[] }>('/v1/commands?limit=1000');
    return { hosts: hosts.body.hosts.length, commands: commands.body.commands.length };
  };

  beforeAll(async () => {
    srv = await startServer(NET);
    host = (await srv.api.post<HostView>('/v1/hosts', {})).body;
  });
  afterAll(async () => {
    await srv?.stop();
  });

  const cases: [string, (api: Api, hostId: string) => Promise<{ status: number; body: unknown }>, number, string][] = [
    ['unknown host', (api) => api.post('/v1/commands', { targets: { hostIds: ['h-nope'] }, parameters: { commands: ['true'] } }), 404, 'host_not_found'],
    ['empty commands', (api, hostId) => api.post('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: [] } }), 400, 'validation_failed'],
    ['negative timeout', (api, hostId) => api.post('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['true'], executionTimeout: -1 } }), 400, 'validation_failed'],
    ['no targets', (api) => api.post('/v1/commands', { targets: {}, parameters: { commands: ['true'] } }), 400, 'no_targets'],
    ['unknown field', (api, hostId) => api.post('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['true'], bogus: 1 } }), 400, 'validation_failed'],
    ['malformed JSON', (api) => api.call('POST', '/v1/commands', '{"targets": {'), 400, 'bad_request'],
    ['unauthenticated', (api, hostId) => new Api(api.url, undefined).post('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: ['true'] } }), 401, 'unauthorized'],
    ['wrong token', (api) => new Api(api.url, 'not-the-token').get('/v1/hosts'), 401, 'unauthorized'],
    ['unknown command', (api) => api.get('/v1/commands/c-nope'), 404, 'command_not_found'],
    ['unknown route', (api) => api.get('/v1/nothing-here'), 404, 'not_found'],
    ['bad hostname', (api) => api.post('/v1/hosts', { hostname: 'Not A Hostname!' }), 400, 'validation_failed'],
    ['a disk too small for a system', (api) => api.post('/v1/hosts', { resources: { diskMiB: 1 } }), 400, 'validation_failed'],
    ['the stats of an unknown host', (api) => api.get('/v1/hosts/h-nosuchhost/stats'), 404, 'host_not_found'],
    ['a machine port out of range', (api) => api.post('/v1/hosts', { resources: { machinePorts: [70000] } }), 400, 'validation_failed'],
    ['egress that is not a yes or no', (api) => api.post('/v1/hosts', { resources: { egress: 'yes' } }), 400, 'validation_failed'],
    ['a machine port given twice', (api) => api.post('/v1/hosts', { resources: { machinePorts: [5432, 5432] } }), 400, 'validation_failed'],
    ['an egress allow list without egress', (api) => api.post('/v1/hosts', { resources: { egressAllow: ['packages.example.com'] } }), 400, 'validation_failed'],
    ['an egress allow entry that is neither range nor name', (api) => api.post('/v1/hosts', { resources: { egress: true, egressAllow: ['300.1.2.3/8'] } }), 400, 'validation_failed'],
    ['a pool narrowed without egress', (api) => api.post('/v1/pools', { name: 'narrow', size: 0, template: { egressAllow: ['*.mirror.example.org'] } }), 400, 'validation_failed'],
    ['terminate unknown host', (api) => api.delete('/v1/hosts/h-nope'), 404, 'host_not_found'],
    // A top-level unknown key once crashed the error handler (a 500 in place of this 400).
    ['unknown top-level key', (api) => api.put('/v1/pools/p', { size: 0, bogus: 1 }), 400, 'validation_failed'],
    ['unknown environment', (api) => api.get('/v1/environments/nope'), 404, 'environment_not_found'],
    ['environment of an unknown stack', (api) => api.post('/v1/environments', { name: 'e', stack: 'nope' }), 404, 'stack_not_found'],
  ];

  for (const [name, call, status, code] of cases) {
    it(`${name}: ${status} ${code}, nothing changes`, async () => {
      const before = await counts();
      const res = await call(srv.api, host.id);
      expect(res.status).toBe(status);
      const body = res.body as ErrorBody;
      expect(body.code).toBe(code);
      expect(body.message.length).toBeGreaterThan(0);
      expect(typeof body.hint).toBe('string');
      expect(await counts()).toEqual(before);
    });
  }

  it('runs a command once on a host named twice in its targets', async () => {
    const res = await srv.api.post<{ id: string; counts: { targets: number } }>('/v1/commands', { targets: { hostIds: [host.id, host.id] }, parameters: { commands: ['true'] } });
    expect(res.status).toBe(201);
    expect(res.body.counts.targets).toBe(1);
  });

  it('does not let one host act as another (its token is bound to its id)', async () => {
    const other = (await srv.api.post<HostView>('/v1/hosts', {})).body;
    const identity = JSON.parse(readFileSync(join(srv.dataDir, 'hosts', host.id, 'upper', 'etc', 'berth', 'agent.json'), 'utf8')) as { token: string; serverUrl: string };
    const attempt = (hostId: string, hello?: string) =>
      new Promise<{ status?: number; closeCode?: number }>((resolve) => {
        const ws = new WsClient(identity.serverUrl, { headers: { authorization: `Bearer ${identity.token}`, 'x-berth-host-id': hostId } });
        const seen: { status?: number; closeCode?: number } = {};
        ws.on('error', () => undefined);
        ws.on('unexpected-response', (status: number) => (seen.status = status));
        ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', protocol: 1, hostId: hello ?? hostId, agentVersion: 'x', bootId: 'x', pid: 1, invocations: [] })));
        ws.on('close', (code: number) => resolve({ ...seen, closeCode: code }));
      });
    // Host A's token presented for host B: refused at the door.
    expect((await attempt(other.id)).status).toBe(401);
    // Host A's own credentials, but a hello that claims to be B: dropped.
    expect((await attempt(host.id, other.id)).closeCode).toBe(1008);
    // Host A's real agent is still connected and working.
    const res = await srv.api.post<{ status: string }>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: ['true'] }, wait: 10 });
    expect(res.body.status).toBe('Success');
    await srv.api.delete(`/v1/hosts/${other.id}`);
  });

  it('serves health without a token, and OpenAPI with one', async () => {
    const anon = new Api(srv.server.url, undefined);
    expect((await anon.get<{ ok: boolean }>('/v1/health')).body.ok).toBe(true);
    expect((await anon.get('/openapi.json')).status).toBe(401);
    const spec = await srv.api.get<{ openapi: string; paths: Record<string, unknown> }>('/openapi.json');
    expect(spec.body.openapi).toMatch(/^3\./);
    expect(Object.keys(spec.body.paths)).toEqual(expect.arrayContaining(['/v1/hosts', '/v1/commands', '/v1/commands/{id}']));
    const docs = await fetch(`${srv.server.url}/docs?token=${srv.server.token}`, { redirect: 'manual' });
    expect(docs.status).toBeLessThan(400);
  });
});
