/**
 * Asking agents what their machines use: the answer of the host asked (not another's), an agent
 * that is not connected, one that never answers (older than the frame), and one that goes away.
 */
import { describe, expect, it } from 'vitest';
import type { ServerMessage } from '../protocol/messages.js';
import { rejection } from '../../test/helpers/errors.js';
import { AgentStats } from './agent-stats.js';

function harness(connected: string[], timeoutMs = 200) {
  const sent: { hostId: string; msg: ServerMessage }[] = [];
  const stats = new AgentStats({ send: (hostId, msg) => (connected.includes(hostId) ? (sent.push({ hostId, msg }), true) : false), timeoutMs });
  const requestOf = (i: number): string => {
    const msg = sent[i]?.msg;
    if (msg?.type !== 'statsRequest') throw new Error('no stats request sent');
    return msg.requestId;
  };
  return { stats, sent, requestOf };
}

describe('AgentStats', () => {
  it("resolves with the asked host's answer; another host's frame with that id is ignored", async () => {
    const { stats, requestOf } = harness(['h-a', 'h-b']);
    const asked = stats.ask('h-a');
    stats.onReply('h-b', { type: 'stats', requestId: requestOf(0), stats: { pids: 666 } });
    stats.onReply('h-a', { type: 'stats', requestId: requestOf(0), stats: { pids: 12, cpuSeconds: 3.5 } });
    expect(await asked).toEqual({ pids: 12, cpuSeconds: 3.5 });
  });

  it('fails at once for a host with no berth agent connected, after the bound for one that never answers, and when the agent goes', async () => {
    const { stats } = harness(['h-a']);
    expect(await rejection(stats.ask('h-x'))).toMatchObject({ code: 'host_not_connected', message: 'host h-x has no berth agent connected to say what it uses' });
    const started = Date.now();
    expect((await rejection(stats.ask('h-a'))).message).toContain('did not say what the host uses within 0.2 s');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    const gone = stats.ask('h-a');
    stats.onGone('h-a');
    expect((await rejection(gone)).message).toContain('went away');
  });

  it('an agent that could read nothing says why', async () => {
    const { stats, requestOf } = harness(['h-a']);
    const asked = stats.ask('h-a');
    stats.onReply('h-a', { type: 'stats', requestId: requestOf(0), stats: {}, error: 'EACCES: /proc' });
    expect(await rejection(asked)).toMatchObject({ code: 'internal', message: expect.stringContaining('EACCES: /proc') as unknown });
  });
});
