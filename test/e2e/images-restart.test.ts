/**
 * kill -9 of the server in the middle of a bake, then restart: the bake's host is terminated, its
 * workspace and mounts are gone, nothing was published, and the next bake reuses the layers of the
 * steps that had finished.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostView } from '../../src/hosts/views.js';
import { ServerProcess } from '../helpers/server.js';
import { waitFor as poll } from '../helpers/wait.js';

const waitFor = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000) => poll(what, probe, { timeoutMs, intervalMs: 200, ignoreErrors: true });

const NET = { bridge: 'berthirs0', subnet: '10.231.0.0/22', cgroupName: 'berthirs' };
const PORTS = { api: 17390, agent: 17391 };

describe('a bake across a control-plane crash', () => {
  let proc: ServerProcess;
  let project: string;

  beforeAll(async () => {
    proc = await ServerProcess.start('image-restart', NET, PORTS);
    project = await mkdtemp(join(tmpdir(), 'berth-img-restart-'));
    await writeFile(join(project, 'a.txt'), 'a\n');
  });
  afterAll(async () => {
    await proc?.remove();
    await rm(project, { recursive: true, force: true });
  });

  const bake = (text: string) =>
    fetch(`${proc.api.url}/v1/images/builds`, {
      method: 'POST',
      headers: { authorization: `Bearer ${proc.api.token ?? ''}`, 'content-type': 'application/json' },
      body: JSON.stringify({ text, file: 'berth.yaml', projectDir: project }),
    });
  const spec = 'images:\n  slow:\n    steps:\n      - copy: a.txt /a.txt\n      - run: [echo started, sleep 60]\n';

  it('leaves no bake host, workspace or mount behind, and publishes nothing', async () => {
    const res = await bake(spec);
    const reader = res.body?.getReader();
    let seen = '';
    // Until the run step's host has printed: the bake is mid-step, a host of its own running.
    const printed = () => seen.split('\n').some((line) => line.includes('"type":"output"') && line.includes('started'));
    while (reader && !printed()) {
      const chunk = await reader.read();
      if (chunk.done) break;
      seen += new TextDecoder().decode(chunk.value as Uint8Array);
    }
    expect(seen).toContain('"kind":"copy","title":"copy a.txt → /a.txt","state":"done"');
    await proc.kill();
    await reader?.cancel().catch(() => undefined);

    await proc.restart();
    const bakeHosts = await waitFor('the bake host to be terminated', async () => {
      const { hosts } = (await proc.api.get<{ hosts: HostView[] }>('/v1/hosts?all=true')).body;
      const ours = hosts.filter((h) => h.tags['berth:role'] === 'bake');
      return ours.length > 0 && ours.every((h) => h.state === 'terminated') ? ours : undefined;
    });
    expect(bakeHosts).toHaveLength(1);
    // It was running the step's command when the server died: adopted at restart, then removed.
    expect(bakeHosts[0]?.stateReason).toContain('its bake ended with the previous server');
    expect((await proc.api.get('/v1/images/slow')).status).toBe(404);
    expect(existsSync(join(proc.dataDir, 'images', 'tmp'))).toBe(false);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(`${proc.dataDir}/images/tmp`));
    expect(mounts).toEqual([]);

    // The copy step's layer survived the crash: the next bake reuses it.
    const again = await bake(spec.replace('sleep 60', 'echo finished'));
    const events = (await again.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    if (events.at(-1)?.['type'] !== 'result') throw new Error(JSON.stringify(events.at(-1)));
    const states = events.filter((e) => e['type'] === 'step' && e['state'] !== 'running').map((e) => `${String(e['kind'])}:${String(e['state'])}`);
    expect(states).toEqual(['copy:cached', 'run:done', 'agent:done', 'identity:done', 'check:done']);
    expect(events.at(-1)?.['type']).toBe('result');
    expect((await readdir(join(proc.dataDir, 'images', 'layers'))).length).toBe(4);
  });
});
