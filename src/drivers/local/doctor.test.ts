import { describe, expect, it } from 'vitest';
import { doctorReport } from '../../cli/doctor-command.js';
import { overlappingRoutes } from './network.js';
import { parseSubnet } from './subnet.js';

describe('doctor: overlapping routes and the report', () => {
  it("finds the machine's routes that overlap the bridge's subnet, not the bridge's own or the default", () => {
    const routes = [
      { dst: 'default', dev: 'eth0' },
      { dst: '10.213.0.0/16', dev: 'berth0' },
      { dst: '10.213.4.0/24', dev: 'docker0' },
      { dst: '10.0.0.0/8', dev: 'vpn0' },
      { dst: '10.214.0.0/16', dev: 'other0' },
      { dst: '10.213.255.255', dev: 'tun0' },
      { dst: '192.168.1.0/24', dev: 'eth0' },
    ];
    expect(overlappingRoutes(parseSubnet('10.213.0.0/16'), 'berth0', routes).map((r) => r.dev)).toEqual(['docker0', 'vpn0', 'tun0']);
  });

  it('lists the checks, what to do about the ones not ok, and a verdict', () => {
    const report = doctorReport([
      { name: 'cgroups', status: 'ok', detail: 'v2' },
      { name: 'nftables', status: 'warn', detail: 'not installed', hint: 'apt-get install nftables' },
    ]);
    expect(report).toBe('      CHECK     RESULT\nok    cgroups   v2\nWARN  nftables  not installed\n\nwhat to do:\n  nftables: apt-get install nftables\n\nthis machine can run local hosts; 1 optional feature(s) missing\n');
    expect(doctorReport([{ name: 'x', status: 'fail', detail: 'no', hint: 'fix' }])).toContain('1 check(s) failed');
    // Hosts a stopped server left are no missing feature.
    const left = { name: 'hosts', status: 'warn', detail: '2 still running', hint: 'berth down' } as const;
    expect(doctorReport([left])).toMatch(/\nthis machine can run local hosts; hosts of a stopped server still run\n$/);
    expect(doctorReport([left, { name: 'nftables', status: 'warn', detail: 'not installed', hint: 'apt-get install nftables' }])).toMatch(
      /\nthis machine can run local hosts; 1 optional feature\(s\) missing; hosts of a stopped server still run\n$/,
    );
  });
});
