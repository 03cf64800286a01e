import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { serviceLogPolicy } from '../../protocol/messages.js';
import { RotatingLog } from './log-file.js';
import { readLogLines } from './log-read.js';

const dir = mkdtempSync(join(tmpdir(), 'berth-log-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const clock = () => Date.parse('2025-03-04T05:06:07.089Z');
const noError = (m: string) => {
  throw new Error(m);
};

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const line of it) out.push(line);
  return out;
}

describe('RotatingLog', () => {
  it('timestamps each line once, also when a line arrives in pieces', () => {
    const log = new RotatingLog(join(dir, 'a.log'), serviceLogPolicy.parse({}), clock, noError);
    log.write(Buffer.from('one\ntw'));
    log.write(Buffer.from('o\nthree'));
    log.note('exited');
    log.close();
    expect(readFileSync(join(dir, 'a.log'), 'utf8')).toBe(
      '2025-03-04T05:06:07.089Z one\n2025-03-04T05:06:07.089Z two\n2025-03-04T05:06:07.089Z three\n2025-03-04T05:06:07.089Z berth: exited\n',
    );
  });

  it('rotates at maxBytes keeping `keep` files, and a reader sees every retained line in order', async () => {
    const path = join(dir, 'b.log');
    const log = new RotatingLog(path, serviceLogPolicy.parse({ maxBytes: 100, keep: 2, timestamps: false }), clock, noError);
    for (let i = 1; i <= 100; i++) log.write(Buffer.from(`line ${i}\n`));
    expect(existsSync(`${path}.1`) && existsSync(`${path}.2`)).toBe(true);
    expect(existsSync(`${path}.3`)).toBe(false);
    for (const f of log.files()) expect(statSync(f).size).toBeLessThanOrEqual(100);
    const lines = await collect(readLogLines(log));
    const numbers = lines.map((l) => Number(l.replace('line ', '')));
    expect(numbers.at(-1)).toBe(100);
    expect(numbers).toEqual(numbers.map((_, i) => (numbers[0] ?? 0) + i));
    expect(await collect(readLogLines(log, { tailLines: 3 }))).toEqual(['line 98', 'line 99', 'line 100']);
    log.close();
  });

  it('keep 0 keeps no rotated file; a lowered keep prunes the extra ones', () => {
    const path = join(dir, 'c.log');
    const log = new RotatingLog(path, serviceLogPolicy.parse({ maxBytes: 50, keep: 3, timestamps: false }), clock, noError);
    for (let i = 0; i < 50; i++) log.write(Buffer.from(`${i}: some text\n`));
    expect(existsSync(`${path}.3`)).toBe(true);
    log.setPolicy(serviceLogPolicy.parse({ maxBytes: 50, keep: 0, timestamps: false }));
    expect(existsSync(`${path}.1`)).toBe(false);
    for (let i = 0; i < 50; i++) log.write(Buffer.from(`${i}: some text\n`));
    expect(log.files()).toEqual([path]);
    log.close();
  });

  it('follow: new lines as they are written, across rotations, until aborted', async () => {
    const path = join(dir, 'd.log');
    const log = new RotatingLog(path, serviceLogPolicy.parse({ maxBytes: 64, keep: 1, timestamps: false }), clock, noError);
    log.write(Buffer.from('old\n'));
    const ac = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const line of readLogLines(log, { follow: true, tailLines: 1, signal: ac.signal })) {
        seen.push(line);
        if (line === 'new 50') ac.abort();
      }
    })();
    for (let i = 1; i <= 50; i++) {
      log.write(Buffer.from(`new ${i}\n`));
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    await reading;
    expect(seen).toEqual(['old', ...Array.from({ length: 50 }, (_, i) => `new ${i + 1}`)]);
    log.close();
  });

  it('survives its directory being removed: says so once, then writes to it again', () => {
    const logDir = join(dir, 'removed');
    const path = join(logDir, 'e.log');
    const errors: string[] = [];
    const log = new RotatingLog(path, serviceLogPolicy.parse({ maxBytes: 40, keep: 1, timestamps: false }), clock, (m) => errors.push(m));
    log.write(Buffer.from('before\n'));
    rmSync(logDir, { recursive: true });
    // A full file rotates: the rename fails (no directory), the new file is made where it belongs.
    for (let i = 0; i < 6; i++) log.write(Buffer.from(`line ${i} of the service\n`));
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatch(/cannot rotate .*e\.log/);
    expect(readFileSync(path, 'utf8')).toContain('line 5 of the service\n');
    log.close();
  });
});
