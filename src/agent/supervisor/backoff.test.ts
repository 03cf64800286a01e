import { describe, expect, it } from 'vitest';
import { serviceRestartPolicy } from '../../protocol/messages.js';
import { backoffDelayMs, decideAfterExit, type ObservedExit } from './backoff.js';

const policy = serviceRestartPolicy.parse({ policy: 'always', initialDelayMs: 100, factor: 2, maxDelayMs: 1000, resetAfterSeconds: 60, crashLoopLimit: 5 });
const at = '2025-01-01T00:00:00.000Z';
const code = (n: number): ObservedExit => ({ code: n, signal: null, at, known: true });

describe('restart policy', () => {
  it('grows the delay by the factor up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelayMs(policy, n))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('fails after crashLoopLimit consecutive quick exits, saying why', () => {
    let quick = 0;
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      const d = decideAfterExit(policy, code(1), 10, quick);
      expect(d.action).toBe('restart');
      if (d.action === 'restart') delays.push(d.delayMs);
      quick = d.quickExits;
    }
    expect(delays).toEqual([100, 200, 400, 800]);
    const last = decideAfterExit(policy, code(1), 10, quick);
    expect(last).toMatchObject({ action: 'settle', state: 'failed', reason: 'crashed 5 times in a row (last: exit code 1)' });
  });

  it('a run that lasted resetAfterSeconds resets the delay and the crash count', () => {
    const d = decideAfterExit(policy, code(1), 60_000, 4);
    expect(d).toMatchObject({ action: 'restart', delayMs: 100, quickExits: 0 });
  });

  it('on-failure: a clean exit stops, a signal or unknown status restarts', () => {
    const onFailure = { ...policy, policy: 'on-failure' as const };
    expect(decideAfterExit(onFailure, code(0), 10, 0)).toMatchObject({ action: 'settle', state: 'stopped' });
    expect(decideAfterExit(onFailure, { code: null, signal: 'SIGKILL', at, known: true }, 10, 0)).toMatchObject({ action: 'restart' });
    const unknown = decideAfterExit(onFailure, { code: null, signal: null, at, known: false }, 10, 0);
    expect(unknown.reason).toContain('exit status unknown');
  });

  it('never: settles, failed on a failure', () => {
    const never = { ...policy, policy: 'never' as const };
    expect(decideAfterExit(never, code(0), 10, 0)).toMatchObject({ action: 'settle', state: 'stopped' });
    expect(decideAfterExit(never, code(2), 10, 0)).toMatchObject({ action: 'settle', state: 'failed', reason: 'exited (exit code 2); restart policy never' });
  });
});
