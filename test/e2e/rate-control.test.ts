/**
 * Run Command's rate control on real hosts: maxConcurrency holds invocations back and sends them as
 * earlier ones finish (their delivery timeout counting from when they are sent), maxErrors stops
 * sending once too many failed, cancel ends the waiting ones at once, bad limits change nothing,
 * and after a kill -9 of the server the restarted one carries on within the limit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandView, InvocationView } from '../../src/commands/views.js';
import type { HostView } from '../../src/hosts/views.js';
import { berth, ServerProcess, type Api } from '../helpers/server.js';

const NET = { bridge: 'berthrate0', subnet: '10.236.0.0/24', cgroupName: 'berthrate' };
const PORTS = { api: 17400, agent: 17401 };
const HOSTS = 4;

/** Each invocation's [start, end] on its host, as the host's own clock printed them (seconds). */
function spans(view: CommandView): { hostId: string; start: number; end: number }[] {
  return view.invocations
    .filter((i) => i.status === 'Success')
    .map((i) => {
      const [start, end] = i.stdout.trim().split('\n').map(Number);
      return { hostId: i.hostId, start: start ?? NaN, end: end ?? NaN };
    });
}

/** The most invocations whose spans overlap at any moment. */
function maxOverlap(list: { start: number; end: number }[]): number {
  const edges = list.flatMap((s) => [{ t: s.start, d: 1 }, { t: s.end, d: -1 }]).sort((a, b) => a.t - b.t || a.d - b.d);
  let now = 0;
  let max = 0;
  for (const e of edges) max = Math.max(max, (now += e.d));
  return max;
}

const TIMED = ['date +%s.%N', 'sleep 0.4', 'date +%s.%N'];

describe('Run Command rate control', () => {
  let proc: ServerProcess;
  let api: Api;
  let hosts: HostView[];
  const send = async (body: Record<string, unknown>) => api.post<CommandView>('/v1/commands', { targets: { tags: { suite: 'rate' } }, ...body });
  const waitDone = async (id: string) => (await api.get<CommandView>(`/v1/commands/${id}?wait=60`)).body;

  beforeAll(async () => {
    proc = await ServerProcess.start('rate', NET, PORTS);
    api = proc.api;
    hosts = [];
    for (let i = 0; i < HOSTS; i++) hosts.push((await api.post<HostView>('/v1/hosts', { tags: { suite: 'rate' } })).body);
    hosts.sort((a, b) => a.id.localeCompare(b.id));
  });
  afterAll(async () => {
    await proc?.remove();
  });

  it('maxConcurrency 1 runs the hosts one at a time, in host id order, and all succeed', async () => {
    const sent = await send({ parameters: { commands: TIMED }, maxConcurrency: 1 });
    expect(sent.status).toBe(201);
    expect(sent.body.maxConcurrency).toBe('1');
    // At first one is sent and the others wait their turn, Pending, saying why.
    expect(sent.body.counts).toMatchObject({ targets: HOSTS, sent: 1 });
    const waiting = sent.body.invocations.filter((i) => i.sentAt === null);
    expect(waiting).toHaveLength(HOSTS - 1);
    for (const inv of waiting) {
      expect(inv.status).toBe('Pending');
      expect(inv.statusDetail).toContain('maxConcurrency 1');
    }
    const done = await waitDone(sent.body.id);
    expect(done.status).toBe('Success');
    expect(done.counts).toEqual({ targets: HOSTS, sent: HOSTS, completed: HOSTS, errors: 0 });
    const list = spans(done);
    expect(list).toHaveLength(HOSTS);
    expect(maxOverlap(list)).toBe(1);
    // Host id order: each started after the one before it ended.
    const byStart = [...list].sort((a, b) => a.start - b.start).map((s) => s.hostId);
    expect(byStart).toEqual(hosts.map((h) => h.id));
    for (const inv of done.invocations) expect(inv.statusDetail).not.toContain('maxConcurrency');
  });

  it('a percentage of the targets: 50% of 4 hosts runs two at a time', async () => {
    const sent = await send({ parameters: { commands: TIMED }, maxConcurrency: '50%' });
    expect(sent.status).toBe(201);
    expect(sent.body.counts.sent).toBe(2);
    const done = await waitDone(sent.body.id);
    expect(done.status).toBe('Success');
    expect(maxOverlap(spans(done))).toBe(2);
  });

  it('a waiting invocation has its whole delivery timeout once it is sent', async () => {
    // Each host takes 1.5 s; the last one is sent ~4.5 s after the command, far past a 1 s delivery timeout.
    const sent = await send({ parameters: { commands: ['sleep 1.5', 'echo ran'] }, maxConcurrency: 1, deliveryTimeout: 1 });
    const done = await waitDone(sent.body.id);
    expect(done.invocations.map((i) => i.status)).toEqual(Array(HOSTS).fill('Success'));
    const last = done.invocations.map((i) => Date.parse(i.sentAt ?? '')).sort((a, b) => a - b);
    expect((last[HOSTS - 1] ?? 0) - Date.parse(done.createdAt)).toBeGreaterThan(3000);
  });

  it('maxErrors 0: after the first failure nothing more is sent; the waiting ones end Cancelled, saying why', async () => {
    const first = hosts[0]?.hostname ?? '';
    // Fails on the first host in id order (sent first), succeeds elsewhere.
    const sent = await send({ parameters: { commands: [`test "$(hostname)" != ${first}`] }, maxConcurrency: 1, maxErrors: 0 });
    const done = await waitDone(sent.body.id);
    expect(done.status).toBe('Failed');
    const [failed, ...rest] = done.invocations;
    expect(failed).toMatchObject({ hostId: hosts[0]?.id, status: 'Failed', exitCodes: [1] });
    for (const inv of rest) {
      expect(inv).toMatchObject({ status: 'Cancelled', sentAt: null, exitCodes: [] } satisfies Partial<InvocationView>);
      expect(inv.statusDetail).toMatch(/not sent: 1 invocation failed, more than maxErrors 0 allows/);
    }
    expect(done.counts).toEqual({ targets: HOSTS, sent: 1, completed: HOSTS, errors: 1 });
    // The CLI says so too, and exits 1.
    const shown = await berth(['cmd', 'show', done.id], { BERTH_URL: `http://127.0.0.1:${PORTS.api}`, BERTH_TOKEN: proc.api.token ?? '' });
    expect(shown.code).toBe(1);
    expect(shown.stderr).toContain('rate control: maxConcurrency 1, maxErrors 0; 1 of 4 sent, 4 completed, 1 error');
  });

  it('errors within maxErrors do not stop the command', async () => {
    const [a, b] = hosts;
    const sent = await send({ parameters: { commands: [`case "$(hostname)" in ${a?.hostname}|${b?.hostname}) exit 3;; esac`] }, maxConcurrency: 1, maxErrors: '50%' });
    const done = await waitDone(sent.body.id);
    expect(done.counts).toEqual({ targets: HOSTS, sent: HOSTS, completed: HOSTS, errors: 2 });
    expect(done.invocations.map((i) => i.status)).toEqual(['Failed', 'Failed', 'Success', 'Success']);
  });

  it('berth run shows how far a long command over several hosts got', async () => {
    const res = await berth(['run', '--tag', 'suite=rate', '--max-concurrency', '1', '--', 'sleep 1.2'], { BERTH_URL: `http://127.0.0.1:${PORTS.api}`, BERTH_TOKEN: proc.api.token ?? '' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/\d\/4 hosts done, 1 running, \d waiting their turn\n/);
    expect(res.stderr).toContain(': Success');
  });

  it('cancel: the running invocation is stopped, the waiting ones end Cancelled at once, never sent', async () => {
    const sent = await send({ parameters: { commands: ['sleep 30'] }, maxConcurrency: 1 });
    await api.post(`/v1/commands/${sent.body.id}/cancel`, {});
    const done = await waitDone(sent.body.id);
    expect(done.status).toBe('Cancelled');
    expect(done.invocations.filter((i) => i.sentAt === null).map((i) => i.statusDetail)).toEqual(Array(HOSTS - 1).fill('cancelled before it was sent'));
    expect(done.counts.sent).toBe(1);
  });

  it('refuses bad limits with a clear 400 and records nothing; the CLI exits 2', async () => {
    const before = (await api.get<{ commands: CommandView[] }>('/v1/commands?limit=1000')).body.commands.length;
    for (const [field, value] of [['maxConcurrency', 0], ['maxConcurrency', '0%'], ['maxConcurrency', '150%'], ['maxConcurrency', 'half'], ['maxErrors', -1], ['maxErrors', '101%'], ['maxConcurrency', 1.5]] as const) {
      const res = await send({ parameters: { commands: ['true'] }, [field]: value });
      expect(res.status, `${field}=${String(value)}`).toBe(400);
      expect((res.body as unknown as { code: string }).code).toBe('validation_failed');
    }
    const cli = await berth(['run', '--tag', 'suite=rate', '--max-concurrency', '0', '--', 'true'], { BERTH_URL: `http://127.0.0.1:${PORTS.api}`, BERTH_TOKEN: proc.api.token ?? '' });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/maxConcurrency "0" is not a positive whole number/);
    expect((await api.get<{ commands: CommandView[] }>('/v1/commands?limit=1000')).body.commands.length).toBe(before);
  });

  it('kill -9 of the server with invocations waiting: the restarted server sends them, still one at a time', async () => {
    const sent = await send({ parameters: { commands: ['date +%s.%N', 'sleep 1', 'date +%s.%N'] }, maxConcurrency: 1 });
    expect(sent.body.counts.sent).toBe(1);
    await proc.kill();
    await proc.restart();
    api = proc.api;
    const done = await waitDone(sent.body.id);
    expect(done.status).toBe('Success');
    expect(done.counts).toEqual({ targets: HOSTS, sent: HOSTS, completed: HOSTS, errors: 0 });
    expect(maxOverlap(spans(done))).toBe(1);
  });
});
