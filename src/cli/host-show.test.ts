/** `berth host show`'s text: every aspect a person asks about a host, labelled, the empty ones left out. */
import { describe, expect, it } from 'vitest';
import type { HostView } from '../hosts/views.js';
import { describeHost } from './host-commands.js';

const base: HostView = {
  id: 'h-1',
  state: 'running',
  stateReason: '',
  hostname: 'web-1',
  ip: '10.0.0.5',
  image: 'demo',
  imageId: 'img-7',
  driver: 'local',
  tags: { team: 'a' },
  resources: { cpus: 1, memoryMiB: 512, pids: 256, egress: true, egressAllow: ['packages.example.com', '192.0.2.0/24'], machinePorts: [5432] },
  pool: 'web',
  group: 'alice',
  agent: { connected: true, lastSeen: '2030-01-01T00:00:00.000Z', version: '0.1.0' },
  createdAt: '2030-01-01T00:00:00.000Z',
  readyAt: '2030-01-01T00:00:00.080Z',
  terminatedAt: null,
};

describe('describeHost', () => {
  it('says where a host belongs, what it may reach and who has a terminal on it', () => {
    const text = describeHost(base, 2);
    expect(text.split('\n')[0]).toBe('h-1');
    expect(text).toMatch(/^ {2}pool +web$/m);
    expect(text).toMatch(/^ {2}group +alice$/m);
    expect(text).toMatch(/^ {2}image +demo \(img-7\)$/m);
    expect(text).toMatch(/^ {2}limits +1 CPU, 512 MiB memory, 256 processes$/m);
    expect(text).toMatch(/^ {2}egress +only to packages\.example\.com, 192\.0\.2\.0\/24$/m);
    expect(text).toMatch(/^ {2}machine ports +5432$/m);
    expect(text).toMatch(/^ {2}agent +connected \(agent 0\.1\.0\)$/m);
    expect(text).toMatch(/^ {2}shells +2 open \(berth shell ls --host h-1\)$/m);
  });

  it('leaves out what a plain host has not, and says when egress is closed', () => {
    const text = describeHost({ ...base, resources: {}, pool: null, group: null, imageId: null, image: '/' }, 0);
    expect(text).not.toMatch(/^ {2}(pool|group|limits|machine ports|shells) /m);
    expect(text).toMatch(/^ {2}egress +none \(the machine and its group only\)$/m);
    expect(text).toMatch(/^ {2}image +\/$/m);
  });
});
