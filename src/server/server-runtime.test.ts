import { describe, expect, it } from 'vitest';
import { stopStep } from './server-runtime.js';

describe("a server's stop, step by step", () => {
  it('names a step in the log while it has not finished, and says nothing of a quick one', async () => {
    const lines: string[] = [];
    await stopStep('the quick one', () => Promise.resolve(), (l) => lines.push(l), 40);
    await stopStep('the slow one', () => new Promise((r) => setTimeout(r, 150)), (l) => lines.push(l), 40);
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.every((l) => /^stopping: still waiting for the slow one after \d+ s$/.test(l))).toBe(true);
    // Nothing more once it is done.
    const count = lines.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(lines.length).toBe(count);
  });

  it('passes a failing step on, and stops watching it', async () => {
    const lines: string[] = [];
    await expect(stopStep('a failing one', () => Promise.reject(new Error('boom')), (l) => lines.push(l), 20)).rejects.toThrow('boom');
    await new Promise((r) => setTimeout(r, 60));
    expect(lines).toEqual([]);
  });
});
