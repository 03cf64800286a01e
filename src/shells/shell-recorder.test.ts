/** Recordings on disk: valid asciicast a player reads, bounded in size and number, and private to their tenant. */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ShellRecorder } from './shell-recorder.js';

const dirs: string[] = [];
const recorder = (opts: { maxBytesPerSession?: number; keep?: number } = {}) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-rec-'));
  dirs.push(dir);
  return { dir, rec: new ShellRecorder({ dir, ...opts }) };
};
const start = (rec: ShellRecorder, session: string, tenantId = 't1') => rec.start({ session, tenantId, hostId: 'h-1', term: 'xterm', cols: 100, rows: 30 });
/** Written by streams: wait for them to reach the disk. */
const flushed = () => new Promise((r) => setTimeout(r, 50));

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('ShellRecorder', () => {
  it('writes asciicast v2: a header, timed output (a character split across chunks kept whole), resizes, how it ended', async () => {
    const { rec } = recorder();
    start(rec, 'sh-01');
    const e = Buffer.from('é');
    rec.output('sh-01', Buffer.concat([Buffer.from('caf'), e.subarray(0, 1)]));
    rec.output('sh-01', Buffer.concat([e.subarray(1), Buffer.from('\r\n')]));
    rec.resize('sh-01', 120, 40);
    rec.end('sh-01', 'exit code 0');
    await flushed();
    const [header, ...events] = rec.read('t1', 'sh-01').trim().split('\n').map((l) => JSON.parse(l) as unknown);
    expect(header).toMatchObject({ version: 2, width: 100, height: 30, env: { TERM: 'xterm' }, berth: { session: 'sh-01', tenantId: 't1', hostId: 'h-1' } });
    expect(events.map((ev) => (ev as unknown[]).slice(1))).toEqual([
      ['o', 'caf'],
      ['o', 'é\r\n'],
      ['r', '120x40'],
      ['m', 'ended: exit code 0'],
    ]);
    expect(rec.list('t1')).toMatchObject([{ session: 'sh-01', hostId: 'h-1', ended: { how: 'exit code 0' } }]);
  });

  it('stops recording a session past its limit, saying so', async () => {
    const { rec } = recorder({ maxBytesPerSession: 10 });
    start(rec, 'sh-02');
    rec.output('sh-02', Buffer.from('12345678'));
    rec.output('sh-02', Buffer.from('abcdefgh'));
    rec.output('sh-02', Buffer.from('never'));
    rec.end('sh-02', 'exit code 0');
    await flushed();
    const lines = rec.read('t1', 'sh-02').trim().split('\n').slice(1).map((l) => (JSON.parse(l) as unknown[]).slice(1));
    expect(lines).toEqual([
      ['o', '12345678'],
      ['m', "recording stopped: the session's output passed 10 bytes"],
      ['m', 'ended: exit code 0'],
    ]);
  });

  it('keeps the newest recordings only, and shows a tenant only its own', async () => {
    const { dir, rec } = recorder({ keep: 3 });
    for (const id of ['sh-a1', 'sh-a2', 'sh-a3', 'sh-a4']) {
      start(rec, id, id === 'sh-a4' ? 't2' : 't1');
      rec.end(id, 'exit code 0');
      await flushed();
    }
    expect(readdirSync(dir).sort()).toEqual(['sh-a2.cast', 'sh-a3.cast', 'sh-a4.cast']);
    expect(rec.list('t1').map((r) => r.session)).toEqual(expect.arrayContaining(['sh-a2', 'sh-a3']));
    expect(rec.list('t1')).toHaveLength(2);
    expect(() => rec.read('t1', 'sh-a4')).toThrow('no recording of shell session sh-a4');
    expect(() => rec.read('t1', '../etc/passwd')).toThrow('no recording');
  });
});
