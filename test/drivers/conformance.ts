/**
 * The driver conformance suite: the HostDriver contract as the control plane relies on it (see
 * src/hosts/host-service.ts), run against every driver on a backend of its own (local: a bridge
 * and cgroup parent of the test's; AWS: moto). A driver passes it before anything else is built
 * on it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBerthError } from '../../src/core/errors.js';
import type { HostDriver, HostSpec, LaunchedHost } from '../../src/drivers/types.js';

export interface ConformanceTarget {
  driver: HostDriver;
  /** A valid spec for this driver; `id` is unique per call. */
  spec: (id: string, tags?: Record<string, string>) => HostSpec;
  /** The tags the backend shows for a launched host (instance tags, the host's tags file). */
  readTags?: (host: LaunchedHost) => Promise<Record<string, string>>;
  /** Whether `from` can open a TCP connection to `to` (for the drivers with setNetworkGroups; on an emulator that routes no traffic, whether its rules let it). */
  reaches?: (from: LaunchedHost, to: LaunchedHost) => Promise<boolean>;
  /** A second driver of the same kind on the same backend, under another name. */
  other?: { driver: HostDriver; spec: (id: string) => HostSpec };
  /** Removes what the suite's drivers set up (after their hosts are gone). */
  cleanup: () => Promise<void>;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not so within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function describeDriverConformance(name: string, setup: () => Promise<ConformanceTarget>, opts: { skip?: boolean } = {}): void {
  describe.skipIf(opts.skip === true)(`driver conformance: ${name}`, () => {
    let t: ConformanceTarget;
    const run = randomBytes(3).toString('hex');
    let n = 0;
    const newId = (): string => `h-cnf${run}${n++}`;
    const launched = new Map<string, LaunchedHost>();
    const listedIds = async (driver = t.driver): Promise<string[]> => (await driver.list()).map((h) => h.id);

    const launch = async (tags?: Record<string, string>): Promise<LaunchedHost> => {
      const host = await t.driver.launch(t.spec(newId(), tags));
      launched.set(host.id, host);
      return host;
    };

    beforeAll(async () => {
      t = await setup();
    });

    afterAll(async () => {
      if (!t) return;
      try {
        // Whatever a failed test left; then the backend must be empty of this driver's hosts.
        for (const found of await t.driver.list()) await t.driver.terminate(found.id, found.driverData);
        if (t.other) for (const found of await t.other.driver.list()) await t.other.driver.terminate(found.id, found.driverData);
        expect(await listedIds()).toEqual([]);
      } finally {
        await t.cleanup();
      }
    });

    it('init says which driver it is and where the control plane must listen; again is fine', async () => {
      const info = await t.driver.init();
      expect(info.name).toBe(t.driver.name);
      expect(info.agentListenHost).toMatch(IPV4);
      expect(await t.driver.init()).toEqual(info);
    });

    it('launch returns the host: its id, hostname, an IPv4 address and driverData that survives JSON', async () => {
      const spec = t.spec(newId());
      const host = await t.driver.launch(spec);
      launched.set(host.id, host);
      expect(host.id).toBe(spec.id);
      expect(host.hostname).toBe(spec.hostname);
      expect(host.ip).toMatch(IPV4);
      expect(Object.keys(host.driverData).length).toBeGreaterThan(0);
      // The control plane stores driverData as JSON and hands it back after a restart.
      expect(JSON.parse(JSON.stringify(host.driverData))).toEqual(host.driverData);
    });

    it('describe says a launched host is running, at its address', async () => {
      const host = await launch();
      expect(await t.driver.describe(host.id, host.driverData)).toMatchObject({ id: host.id, state: 'running', ip: host.ip });
    });

    it('list finds every launched host, with driverData that describe accepts', async () => {
      const host = await launch();
      const found = (await t.driver.list()).find((h) => h.id === host.id);
      expect(found).toBeDefined();
      expect(await t.driver.describe(host.id, found?.driverData ?? {})).toMatchObject({ state: 'running' });
      expect((await listedIds()).sort()).toEqual([...launched.keys()].sort());
    });

    it('keeps the tags given at launch where the backend shows them', async (ctx) => {
      if (!t.readTags) ctx.skip();
      const host = await launch({ team: 'blue', 'app.role': 'web-1' });
      expect(await t.readTags?.(host)).toMatchObject({ team: 'blue', 'app.role': 'web-1' });
    });

    it('two concurrent launches give two distinct hosts', async () => {
      const [a, b] = await Promise.all([launch(), launch()]);
      expect(a.id).not.toBe(b.id);
      expect(a.ip).not.toBe(b.ip);
      expect(a.driverData).not.toEqual(b.driverData);
      const ids = await listedIds();
      expect(ids).toContain(a.id);
      expect(ids).toContain(b.id);
    });

    it('list shows only the hosts of this driver, not those of another on the same backend', async (ctx) => {
      const other = t.other;
      if (!other) return ctx.skip();
      await other.driver.init();
      const mine = await launch();
      const theirs = await other.driver.launch(other.spec(`h-oth${run}${n++}`));
      try {
        expect(await listedIds()).not.toContain(theirs.id);
        const otherIds = await listedIds(other.driver);
        expect(otherIds).toContain(theirs.id);
        expect(otherIds).not.toContain(mine.id);
      } finally {
        await other.driver.terminate(theirs.id, theirs.driverData);
      }
    });

    it('setNetworkGroups: hosts of a group reach each other and no other host; a stale member is left out', async (ctx) => {
      const reaches = t.reaches;
      if (!t.driver.setNetworkGroups || !reaches) return ctx.skip();
      const member = (h: LaunchedHost) => ({ id: h.id, driverData: h.driverData });
      const [a, b, c] = await Promise.all([launch(), launch(), launch()]);
      expect(await reaches(a, b)).toBe(false);
      await t.driver.setNetworkGroups([[a, b].map(member)]);
      expect([await reaches(a, b), await reaches(b, a), await reaches(a, c), await reaches(c, b)]).toEqual([true, true, false, false]);
      // Terminate takes b out; a late call that still names it changes nothing for it.
      await t.driver.terminate(b.id, b.driverData);
      launched.delete(b.id);
      await t.driver.setNetworkGroups([[a, b].map(member)]);
      await t.driver.setNetworkGroups([[a, c].map(member)]);
      expect(await reaches(a, c)).toBe(true);
      // The whole truth: no group at all.
      await t.driver.setNetworkGroups([], { all: true });
      expect(await reaches(a, c)).toBe(false);
    }, 60_000);

    it('terminate makes describe say gone and list forget the host; a second terminate is fine', async () => {
      const host = await launch();
      await t.driver.terminate(host.id, host.driverData);
      launched.delete(host.id);
      expect(await t.driver.describe(host.id, host.driverData)).toMatchObject({ id: host.id, state: 'gone' });
      expect(await listedIds()).not.toContain(host.id);
      await t.driver.terminate(host.id, host.driverData);
      await t.driver.terminate(host.id, {});
    });

    it('terminate with the id alone (driverData lost, as after a failed launch) removes the host', async () => {
      const host = await launch();
      await t.driver.terminate(host.id, {});
      launched.delete(host.id);
      expect(await listedIds()).not.toContain(host.id);
      expect(await t.driver.describe(host.id, host.driverData)).toMatchObject({ state: 'gone' });
    });

    it('terminate and describe of a host that never existed: no error, gone', async () => {
      const id = newId();
      await t.driver.terminate(id, {});
      expect(await t.driver.describe(id, {})).toMatchObject({ id, state: 'gone' });
    });

    it('a launch with an aborted signal fails as cancelled and leaves nothing', async () => {
      const spec = t.spec(newId());
      await expect(t.driver.launch(spec, { signal: AbortSignal.abort() })).rejects.toSatisfy((err) => isBerthError(err) && err.code === 'deadline_exceeded');
      expect(await listedIds()).not.toContain(spec.id);
      expect(await t.driver.describe(spec.id, {})).toMatchObject({ state: 'gone' });
    });

    it('a launch aborted while under way fails as cancelled and leaves nothing', async () => {
      const spec = t.spec(newId());
      const controller = new AbortController();
      const launching = t.driver.launch(spec, { signal: controller.signal });
      controller.abort();
      await expect(launching).rejects.toSatisfy((err) => isBerthError(err) && err.code === 'deadline_exceeded');
      await eventually(`host ${spec.id} gone after its aborted launch`, async () => !(await listedIds()).includes(spec.id));
      expect(await t.driver.describe(spec.id, {})).toMatchObject({ state: 'gone' });
    });

    it('teardown, where the driver has one, refuses while a host of its lives and leaves that host running', async (ctx) => {
      if (!t.driver.teardown) return ctx.skip();
      const host = await launch();
      expect(await t.driver.teardown()).toBe(false);
      expect(await t.driver.describe(host.id, host.driverData)).toMatchObject({ id: host.id, state: 'running', ip: host.ip });
    });

    it('terminating every host leaves list empty', async () => {
      for (const host of launched.values()) await t.driver.terminate(host.id, host.driverData);
      launched.clear();
      expect(await listedIds()).toEqual([]);
    });
  });
}
