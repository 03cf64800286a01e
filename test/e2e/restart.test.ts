/**
 * kill -9 of the server while hosts run and commands are in flight, then restart: hosts are adopted,
 * every in-flight command ends in a defined status, hosts the store cannot account for are removed,
 * and removing every host leaves nothing behind.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { LeftoverCounts } from '../../src/drivers/local/index.js';
import type { HostView } from '../../src/hosts/views.js';
import { DEFAULT_TENANT } from '../../src/store/migrations.js';
import { openStore } from '../../src/store/store.js';
import { ServerProcess, type Api } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const NET = { bridge: 'berthrst0', subnet: '10.219.0.0/24', cgroupName: 'berthrst' };
const PORTS = { api: 17370, agent: 17371 };

describe('control-plane restart', () => {
  let proc: ServerProcess;
  let dataDir: string;
  let api: Api;
  let baseline: LeftoverCounts;

  beforeAll(async () => {
    proc = await ServerProcess.start('restart', NET, PORTS);
    ({ dataDir, api } = proc);
    // After the server's start-up recovery, which removes what an earlier, aborted run left behind.
    baseline = proc.leftovers();
  });

  afterAll(async () => {
    await proc?.remove();
  });

  it('adopts running hosts, settles in-flight commands and cleans up what it cannot account for', async () => {
    const launch = async () => (await api.post<HostView>('/v1/hosts', {})).body;
    const [keep, dies, unknown] = [await launch(), await launch(), await launch()];
    const send = async (hostId: string, commands: string[]) =>
      (await api.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands, executionTimeout: 60 } })).body;
    const slow = await send(keep.id, ['sleep 2', 'echo survived']);
    const orphaned = await send(dies.id, ['sleep 60']);
    await waitFor('commands to start', async () => {
      const views = await Promise.all([slow, orphaned].map(async (c) => (await api.get<CommandView>(`/v1/commands/${c.id}`)).body));
      return views.every((v) => v.status === 'InProgress') ? true : undefined;
    });

    await proc.kill();
    // While the control plane is down: one host dies, and one is forgotten by the store.
    // Killing a pid namespace's init kills every process of that host.
    process.kill(initPidOf(dataDir, dies.id), 'SIGKILL');
    const store = await openStore({ dataDir });
    await store.db.deleteFrom('hosts').where('id', '=', unknown.id).where('tenant_id', '=', DEFAULT_TENANT).execute();
    await store.close();

    await proc.restart();
    api = proc.api;

    const adopted = await waitFor('the surviving host to reconnect', async () => {
      const host = (await api.get<HostView>(`/v1/hosts/${keep.id}`)).body;
      return host.state === 'running' && host.agent.connected ? host : undefined;
    }).catch(async (err: unknown) => {
      const host = (await api.get<HostView>(`/v1/hosts/${keep.id}`)).body;
      const consoleLog = readFileSync(join(dataDir, 'hosts', keep.id, 'console.log'), 'utf8').slice(-2000);
      const init = initPidOf(dataDir, keep.id);
      const { execSync } = await import('node:child_process');
      const diag = execSync(`ps -e --forest -o pid,ppid,stat,args | grep -A5 ' ${init} ' ; nsenter -t ${init} -n ss -tnp; true`, { encoding: 'utf8' });
      throw new Error(`${String(err)}; host: ${JSON.stringify(host)}; console:\n${consoleLog}\n${diag}`);
    });
    expect(adopted.ip).toBe(keep.ip);

    const finished = (await api.get<CommandView>(`/v1/commands/${slow.id}?wait=20`)).body;
    expect(finished.status).toBe('Success');
    expect(finished.invocations[0]?.stdout).toBe('survived\n');

    const lost = (await api.get<CommandView>(`/v1/commands/${orphaned.id}?wait=20`)).body;
    expect(lost.status).toBe('Failed');
    expect(lost.invocations[0]?.statusDetail).toMatch(/terminated|lost/);
    expect((await api.get<HostView>(`/v1/hosts/${dies.id}`)).body.state).toBe('terminated');

    // The forgotten host is gone from the machine too: only `keep` is left.
    const leftovers = proc.leftovers();
    expect(leftovers.netns).toBe(baseline.netns + 1);

    // A command run after the restart works as before.
    const after = (await api.post<CommandView>('/v1/commands', { targets: { hostIds: [keep.id] }, parameters: { commands: ['echo again'] }, wait: 20 })).body;
    expect(after.invocations[0]?.stdout).toBe('again\n');

    expect((await api.delete<HostView>(`/v1/hosts/${keep.id}`)).body.state).toBe('terminated');
    expect(proc.leftovers()).toEqual(baseline);
  });
});

/** The machine-side pid of a host's PID 1, from the local driver's state file. */
function initPidOf(dataDir: string, hostId: string): number {
  const state = JSON.parse(readFileSync(join(dataDir, 'hosts', hostId, 'state.json'), 'utf8')) as { initPid?: number };
  if (!state.initPid) throw new Error(`no init pid recorded for ${hostId}`);
  return state.initPid;
}
