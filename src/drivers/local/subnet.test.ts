import { describe, expect, it } from 'vitest';
import { isBerthError } from '../../core/errors.js';
import { IpAllocator, parseSubnet, subnetContains } from './subnet.js';

describe('parseSubnet', () => {
  it('derives gateway and host range from a CIDR', () => {
    const subnet = parseSubnet('10.213.0.0/16');
    expect(subnet).toMatchObject({ cidr: '10.213.0.0/16', prefixLength: 16, gateway: '10.213.0.1' });
    expect(subnetContains(subnet, '10.213.0.2')).toBe(true);
    expect(subnetContains(subnet, '10.213.255.254')).toBe(true);
    expect(subnetContains(subnet, '10.213.0.1')).toBe(false); // the gateway is not for hosts
    expect(subnetContains(subnet, '10.213.255.255')).toBe(false); // broadcast
    expect(subnetContains(subnet, '10.214.0.2')).toBe(false);
  });

  it('normalises an address inside the network to the network address', () => {
    expect(parseSubnet('192.168.7.77/24')).toMatchObject({ cidr: '192.168.7.0/24', gateway: '192.168.7.1' });
  });

  it.each(['10.213.0.0', '10.213.0.0/33', '10.213.0.0/30', '300.1.1.1/16', 'x/16', '10.0.0.0/16/1'])('rejects %s with a hint', (bad) => {
    try {
      parseSubnet(bad);
      expect.unreachable();
    } catch (err) {
      expect(isBerthError(err) && err.code === 'validation_failed' && err.hint.length > 0).toBe(true);
    }
  });
});

describe('IpAllocator', () => {
  it('hands out unique addresses round-robin and skips reserved ones', () => {
    const allocator = new IpAllocator(parseSubnet('10.9.0.0/29')); // hosts .2-.6
    allocator.reserve('10.9.0.3');
    expect([allocator.allocate(), allocator.allocate()]).toEqual(['10.9.0.2', '10.9.0.4']);
    allocator.release('10.9.0.2');
    // A freed address is not reused right away.
    expect(allocator.allocate()).toBe('10.9.0.5');
    expect(allocator.allocate()).toBe('10.9.0.6');
    expect(allocator.allocate()).toBe('10.9.0.2');
    expect(() => allocator.allocate()).toThrow(/no free address/);
    expect(allocator.inUse).toBe(5);
  });

  it('ignores addresses outside its subnet when seeding', () => {
    const allocator = new IpAllocator(parseSubnet('10.9.0.0/29'));
    allocator.reserve('10.8.0.2');
    allocator.reserve('10.9.0.1');
    expect(allocator.inUse).toBe(0);
  });
});
