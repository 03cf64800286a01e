/** The store's conformance suite: the same tests against every backend. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aggregateStatus } from '../../src/core/command-status.js';
import { cancelWaiting } from '../../src/commands/rate-control.js';
import { toCommandView } from '../../src/commands/views.js';
import { CommandsRepo } from '../../src/store/commands-repo.js';
import { HostsRepo, type NewHost } from '../../src/store/hosts-repo.js';
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import { openStore, type Store } from '../../src/store/store.js';
import { TokensRepo } from '../../src/store/tokens-repo.js';
import { TokenService } from '../../src/tokens/token-service.js';
import { hashSecret } from '../../src/core/ids.js';
import { rejection } from '../helpers/errors.js';
import { storeBackends } from '../helpers/stores.js';

const host = (id: string, tags: Record<string, string> = {}, tenantId = DEFAULT_TENANT): NewHost => ({
  id,
  tenantId,
  driver: 'local',
  image: '/',
  hostname: id,
  tags,
  resources: { cpus: 1 },
  agentTokenHash: `hash-${id}`,
});

for (const backend of storeBackends()) {
  describe(`store on ${backend.name}`, () => {
    let store: Store;
    let hosts: HostsRepo;
    let commands: CommandsRepo;

    beforeAll(async () => {
      store = await backend.open();
      hosts = new HostsRepo(store.db);
      commands = new CommandsRepo(store.db);
      await store.db.insertInto('tenants').values({ id: 'other', name: 'other' }).execute();
    });
    afterAll(async () => {
      await store?.close();
    });

    it('reports its kind', () => {
      expect(store.kind).toBe(backend.name);
    });

    it('round-trips a host with its JSON fields and timestamps', async () => {
      await hosts.insert(host('h-rt', { team: 'a', 'berth.mode': 'review' }));
      const row = await hosts.get(DEFAULT_TENANT, 'h-rt');
      expect(row?.tags).toEqual({ team: 'a', 'berth.mode': 'review' });
      expect(row?.resources).toEqual({ cpus: 1 });
      expect(row?.state).toBe('launching');
      expect(row?.created_at).toBeInstanceOf(Date);
      expect(row?.agent_connected).toBe(false);
    });

    it('keeps tenants apart', async () => {
      await hosts.insert(host('h-other', {}, 'other'));
      expect(await hosts.get(DEFAULT_TENANT, 'h-other')).toBeUndefined();
      expect((await hosts.get('other', 'h-other'))?.id).toBe('h-other');
      expect((await hosts.list(DEFAULT_TENANT)).map((h) => h.id)).not.toContain('h-other');
    });

    it('finds hosts by tags (all given tags must match)', async () => {
      await hosts.insert(host('h-t1', { env: 'qa', team: 'x' }));
      await hosts.insert(host('h-t2', { env: 'qa', team: 'y' }));
      expect((await hosts.list(DEFAULT_TENANT, { tags: { env: 'qa' } })).map((h) => h.id).sort()).toEqual(['h-t1', 'h-t2']);
      expect((await hosts.list(DEFAULT_TENANT, { tags: { env: 'qa', team: 'y' } })).map((h) => h.id)).toEqual(['h-t2']);
      expect(await hosts.list(DEFAULT_TENANT, { tags: { env: 'prod' } })).toEqual([]);
    });

    it('lets exactly one of many concurrent transitions win (compare-and-set)', async () => {
      await hosts.insert(host('h-race'));
      const results = await Promise.all(Array.from({ length: 20 }, () => hosts.transition('h-race', ['launching'], 'booting')));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await hosts.get(DEFAULT_TENANT, 'h-race'))?.state).toBe('booting');
      expect(await hosts.transition('h-race', ['launching'], 'failed')).toBeUndefined();
    });

    it('records a command with invocations and aggregates their statuses', async () => {
      await hosts.insert(host('h-c1'));
      await hosts.insert(host('h-c2'));
      await commands.create({
          id: 'c-1',
          tenantId: DEFAULT_TENANT,
          document: 'RunShellScript',
          parameters: { commands: ['true'], executionTimeoutSeconds: 10 },
          targets: { hostIds: ['h-c1', 'h-c2'] },
          deliveryTimeoutS: 30,
          invocations: [
            { hostId: 'h-c1', status: 'Pending', statusDetail: '' },
            { hostId: 'h-c2', status: 'Pending', statusDetail: '' },
          ],
      });
      expect(await commands.updateInvocation('c-1', 'h-c1', ['Pending'], { status: 'InProgress', statusDetail: '', startedAt: new Date() })).toMatchObject({
        status: 'InProgress',
      });
      expect(aggregateStatus(await commands.statusesOf('c-1'))).toBe('InProgress');
      const outcome = { status: 'Success' as const, statusDetail: '', exitCodes: [0, 0], stdout: { text: 'hi\n', truncated: false, bytes: 3 }, finishedAt: new Date() };
      expect(await commands.updateInvocation('c-1', 'h-c1', ['InProgress'], outcome)).toMatchObject({ status: 'Success', exit_codes: [0, 0], stdout: 'hi\n' });
      expect(aggregateStatus(await commands.statusesOf('c-1'))).toBe('InProgress');
      // A stale update (the invocation moved on) changes nothing.
      expect(await commands.updateInvocation('c-1', 'h-c1', ['InProgress'], { status: 'Failed', statusDetail: 'late' })).toBeUndefined();
      expect(await commands.updateInvocation('c-1', 'h-c2', ['Pending'], { status: 'Failed', statusDetail: 'x', exitCodes: [2], finishedAt: new Date() })).toMatchObject({ status: 'Failed' });
      const got = await commands.get(DEFAULT_TENANT, 'c-1');
      if (!got) throw new Error('command not found');
      const view = toCommandView(got.command, got.invocations);
      expect(view.status).toBe('Failed');
      expect(view.completedAt).not.toBeNull();
      const inv1 = got?.invocations.find((i) => i.host_id === 'h-c1');
      expect(inv1?.exit_codes).toEqual([0, 0]);
      expect(inv1?.stdout).toBe('hi\n');
      expect(await commands.get('other', 'c-1')).toBeUndefined();
      expect(await commands.openInvocations()).toEqual([]);
    });

    it('stores a result with both streams, their truncation and the delivery time, from any of several statuses', async () => {
      await hosts.insert(host('h-r1'));
      await commands.create({
        id: 'c-r',
        tenantId: DEFAULT_TENANT,
        document: 'RunShellScript',
        parameters: { commands: ['echo'] },
        targets: { hostIds: ['h-r1'] },
        deliveryTimeoutS: 30,
        invocations: [{ hostId: 'h-r1', status: 'Pending', statusDetail: '' }],
      });
      const startedAt = new Date(Date.now() - 1000);
      const row = await commands.updateInvocation('c-r', 'h-r1', ['Pending', 'InProgress'], {
        status: 'Failed',
        statusDetail: "it's done",
        exitCodes: [3],
        stdout: { text: 'out', truncated: false, bytes: 3 },
        stderr: { text: 'err…', truncated: true, bytes: 3_000_000_000 },
        startedAt,
        finishedAt: new Date(),
      });
      expect(row).toMatchObject({ status: 'Failed', status_detail: "it's done", exit_codes: [3], stdout: 'out', stdout_truncated: false, stdout_bytes: 3, stderr: 'err…', stderr_truncated: true, stderr_bytes: 2_147_483_647 });
      expect(row?.delivered_at?.getTime()).toBe(startedAt.getTime());
      expect(row?.started_at?.getTime()).toBe(startedAt.getTime());
      // From a status it is not in: nothing changes.
      expect(await commands.updateInvocation('c-r', 'h-r1', ['Pending', 'InProgress'], { status: 'Cancelled', statusDetail: '' })).toBeUndefined();
      expect(await commands.updateInvocation('c-r', 'h-r1', [], { status: 'Cancelled', statusDetail: '' })).toBeUndefined();
      expect((await commands.get(DEFAULT_TENANT, 'c-r'))?.invocations[0]?.status).toBe('Failed');
    });

    it('lists open invocations with their deadlines', async () => {
      await hosts.insert(host('h-open'));
      await commands.create({
          id: 'c-open',
          tenantId: DEFAULT_TENANT,
          document: 'RunShellScript',
          parameters: { commands: ['sleep 1'], executionTimeoutSeconds: 5 },
          targets: { hostIds: ['h-open'] },
          deliveryTimeoutS: 7,
          invocations: [{ hostId: 'h-open', status: 'Pending', statusDetail: '' }],
        });
      const open = await commands.openInvocations({ hostId: 'h-open' });
      expect(open).toHaveLength(1);
      expect(open[0]).toMatchObject({ commandId: 'c-open', status: 'Pending', deliveryTimeoutS: 7, parameters: { executionTimeoutSeconds: 5 } });
      expect(open[0]?.createdAt).toBeInstanceOf(Date);
    });

    it('rate control: a step sends waiting invocations or cancels them, each at most once; a cancel step takes the rest', async () => {
      for (const id of ['h-q1', 'h-q2', 'h-q3', 'h-q4']) await hosts.insert(host(id));
      const rateControl = { targets: 4, maxConcurrency: { spec: '1', limit: 1 }, maxErrors: { spec: '0', limit: 0 } };
      const created = await commands.create({
        id: 'c-q',
        tenantId: DEFAULT_TENANT,
        document: 'RunShellScript',
        parameters: { commands: ['true'] },
        targets: { tags: { a: 'b' } },
        deliveryTimeoutS: 30,
        rateControl,
        invocations: [
          { hostId: 'h-q1', status: 'Pending', statusDetail: '', sent: true },
          { hostId: 'h-q2', status: 'Pending', statusDetail: 'waiting', sent: false },
          { hostId: 'h-q3', status: 'Pending', statusDetail: 'waiting', sent: false },
          { hostId: 'h-q4', status: 'Pending', statusDetail: 'waiting', sent: false },
        ],
      });
      expect(created.invocations.map((i) => i.sent_at !== null)).toEqual([true, false, false, false]);
      expect((await commands.get(DEFAULT_TENANT, 'c-q'))?.command.rate_control).toEqual(rateControl);
      const open = await commands.openInvocations();
      const ours = open.filter((o) => o.commandId === 'c-q').sort((a, b) => a.hostId.localeCompare(b.hostId));
      expect(ours.map((o) => [o.hostId, o.sentAt !== null])).toEqual([
        ['h-q1', true],
        ['h-q2', false],
        ['h-q3', false],
        ['h-q4', false],
      ]);
      // The step sees every invocation; what it names is changed only if still waiting.
      let seen: string[] = [];
      const sendTwo = await commands.rateStep('c-q', (_rc, invs) => {
        seen = invs.map((i) => `${i.hostId}:${i.status}:${i.sentAt ? 'sent' : 'waiting'}`).sort();
        return { send: ['h-q1', 'h-q2'], cancel: [], cancelDetail: '' };
      });
      expect(seen).toEqual(['h-q1:Pending:sent', 'h-q2:Pending:waiting', 'h-q3:Pending:waiting', 'h-q4:Pending:waiting']);
      expect(sendTwo?.sent.map((r) => [r.host_id, r.status_detail])).toEqual([['h-q2', '']]);
      expect(sendTwo?.sent[0]?.sent_at).toBeInstanceOf(Date);
      await commands.updateInvocation('c-q', 'h-q1', ['Pending'], { status: 'Failed', statusDetail: 'x', finishedAt: new Date() });
      const stop = await commands.rateStep('c-q', () => ({ send: [], cancel: ['h-q2', 'h-q3'], cancelDetail: 'too many errors' }));
      expect(stop?.cancelled.map((r) => [r.host_id, r.status, r.status_detail])).toEqual([['h-q3', 'Cancelled', 'too many errors']]);
      expect((await commands.rateStep('c-q', cancelWaiting('cancelled before it was sent')))?.cancelled.map((r) => r.host_id)).toEqual(['h-q4']);
      expect((await commands.rateStep('c-q', cancelWaiting('again')))?.cancelled).toEqual([]);
      const statuses = (await commands.get(DEFAULT_TENANT, 'c-q'))?.invocations.map((i) => `${i.host_id}:${i.status}`);
      expect(statuses).toEqual(['h-q1:Failed', 'h-q2:Pending', 'h-q3:Cancelled', 'h-q4:Cancelled']);
      // A command without rate control has no step.
      expect(await commands.rateStep('c-1', () => ({ send: ['h-c1'], cancel: [], cancelDetail: '' }))).toBeUndefined();
    });

    it('rolls back a command whose invocations cannot be stored', async () => {
      await expect(
        commands.create({
            id: 'c-bad',
            tenantId: DEFAULT_TENANT,
            document: 'RunShellScript',
            parameters: {},
            targets: {},
            deliveryTimeoutS: 1,
            invocations: [{ hostId: 'no-such-host', status: 'Pending', statusDetail: '' }],
          }),
      ).rejects.toThrow();
      expect(await commands.get(DEFAULT_TENANT, 'c-bad')).toBeUndefined();
    });

    it('maps tokens to tenants, and refuses revoked and expired ones', async () => {
      const tokens = new TokensRepo(store.db);
      let clock = Date.now();
      // Asked of the store every time (no cache), so that each answer is the store's.
      const service = new TokenService(tokens, { now: () => clock, recheckMs: -1 });
      expect((await tokens.add({ id: 't-1', tenantId: DEFAULT_TENANT, name: 'default', tokenHash: hashSecret('abc'), role: 'admin', origin: 'data-dir' }))?.id).toBe('t-1');
      expect(await tokens.add({ id: 't-1b', tenantId: DEFAULT_TENANT, name: 'default', tokenHash: hashSecret('abc'), role: 'admin', origin: 'data-dir' })).toBeUndefined();
      expect((await service.authenticate('abc')).tenantId).toBe(DEFAULT_TENANT);
      expect((await rejection(service.authenticate('nope'))).code).toBe('unauthorized');
      // Revoked or expired: no tenant; the row stays, and says which.
      await tokens.add({ id: 't-2', tenantId: DEFAULT_TENANT, name: 'ci', tokenHash: hashSecret('def'), role: 'use', origin: 'api', expiresAt: new Date(clock + 60_000) });
      expect((await service.authenticate('def')).tenantId).toBe(DEFAULT_TENANT);
      clock += 120_000;
      expect((await rejection(service.authenticate('def'))).message).toContain('"ci" expired at');
      expect((await tokens.revoke(DEFAULT_TENANT, 't-2'))?.revoked_at).toBeInstanceOf(Date);
      expect(await tokens.revoke(DEFAULT_TENANT, 't-2')).toBeUndefined();
      expect((await rejection(service.authenticate('def'))).message).toContain('"ci" was revoked at');
      const tokenHash = hashSecret('def');
      expect((await tokens.byHash(tokenHash))?.role).toBe('use');
      expect((await tokens.list(DEFAULT_TENANT)).map((t) => t.id)).not.toContain('t-2');
      expect((await tokens.list(DEFAULT_TENANT, { withRevoked: true })).map((t) => t.id)).toContain('t-2');
    });
  });
}

describe('embedded store on disk', () => {
  it('persists across reopen and migrates only once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-store-'));
    try {
      let store = await openStore({ dataDir: dir });
      await new HostsRepo(store.db).insert(host('h-disk'));
      await store?.close();
      store = await openStore({ dataDir: dir });
      expect((await new HostsRepo(store.db).get(DEFAULT_TENANT, 'h-disk'))?.id).toBe('h-disk');
      await store?.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
