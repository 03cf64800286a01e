import { appendFileSync, mkdtempSync, renameSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { followLog } from './log-follow.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-follow-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Rotates as the supervisor does: <log>.k-1 -> <log>.k, …, <log> -> <log>.1, then a new <log>. */
function rotate(log: string, keep: number): void {
  for (let k = keep; k >= 1; k--) {
    const from = k === 1 ? log : `${log}.${k - 1}`;
    if (existsSync(from)) renameSync(from, `${log}.${k}`);
  }
  writeFileSync(log, '');
}

describe('followLog', () => {
  it('prints the last lines, then every new line across rotations, even several between two looks', async () => {
    const log = join(dir, 'svc.log');
    writeFileSync(log, 'a\nb\nc\n');
    const out: string[] = [];
    const stop = new AbortController();
    const pollMs = 40;
    const following = followLog(log, { lines: 2, pollMs, signal: stop.signal, write: (chunk) => void out.push(chunk.toString()) });
    const lines = () => out.join('').split('\n').filter(Boolean);
    const until = async (n: number) => {
      for (let i = 0; i < 200 && lines().length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(2);
    expect(lines()).toEqual(['b', 'c']);
    let n = 0;
    // One rotation at a time, then three in a row faster than the follower looks.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 5; i++) appendFileSync(log, `${++n}\n`);
      rotate(log, 5);
      await new Promise((r) => setTimeout(r, pollMs * 3));
    }
    for (let burst = 0; burst < 3; burst++) {
      for (let i = 0; i < 5; i++) appendFileSync(log, `${++n}\n`);
      rotate(log, 5);
    }
    for (let i = 0; i < 5; i++) appendFileSync(log, `${++n}\n`);
    await until(2 + n);
    stop.abort();
    await following;
    expect(lines()).toEqual(['b', 'c', ...Array.from({ length: n }, (_, i) => String(i + 1))]);
  });

  it('waits for a file that does not exist yet', async () => {
    const log = join(dir, 'later.log');
    const out: string[] = [];
    const stop = new AbortController();
    const following = followLog(log, { lines: 10, pollMs: 20, signal: stop.signal, write: (chunk) => void out.push(chunk.toString()) });
    await new Promise((r) => setTimeout(r, 60));
    writeFileSync(log, 'first\n');
    for (let i = 0; i < 100 && out.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    stop.abort();
    await following;
    expect(out.join('')).toBe('first\n');
  });
});
