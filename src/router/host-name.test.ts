import { describe, expect, it } from 'vitest';
import { environmentFromHost, isDnsLabel, isDomain, normaliseDomain, portOfHost } from './host-name.js';

describe('environmentFromHost', () => {
  it('reads NAME from NAME.<domain>, any case, with or without a port or trailing dot', () => {
    expect(environmentFromHost('web.localhost:8080', 'localhost')).toEqual({ kind: 'environment', name: 'web' });
    expect(environmentFromHost('Review-42.LOCALHOST', 'localhost')).toEqual({ kind: 'environment', name: 'review-42' });
    expect(environmentFromHost('web.localhost.:80', 'localhost')).toEqual({ kind: 'environment', name: 'web' });
    expect(environmentFromHost('api.envs.example.com:443', 'envs.example.com')).toEqual({ kind: 'environment', name: 'api' });
  });

  it('finds no environment in the bare domain, an IP, another domain, deeper names or no host', () => {
    for (const host of ['localhost', 'localhost:8080', '127.0.0.1:8080', '[::1]:8080', 'web.example.com', 'a.b.localhost', '-x.localhost', 'weblocalhost', '.localhost', undefined]) {
      expect(environmentFromHost(host, 'localhost'), String(host)).toEqual({ kind: 'none' });
    }
  });
});

describe('host name helpers', () => {
  it('checks DNS labels and domains', () => {
    expect(isDnsLabel('a')).toBe(true);
    expect(isDnsLabel('a-1')).toBe(true);
    expect(isDnsLabel('a'.repeat(63))).toBe(true);
    expect(isDnsLabel('a'.repeat(64))).toBe(false);
    expect(isDnsLabel('A')).toBe(false);
    expect(isDnsLabel('a_b')).toBe(false);
    expect(isDnsLabel('a-')).toBe(false);
    expect(isDomain('localhost')).toBe(true);
    expect(isDomain('envs.example.com')).toBe(true);
    expect(isDomain('bad..com')).toBe(false);
    expect(isDomain('')).toBe(false);
  });

  it('normalises domains and reads ports', () => {
    expect(normaliseDomain(' .Envs.Example.COM. ')).toBe('envs.example.com');
    expect(portOfHost('web.localhost:8080')).toBe('8080');
    expect(portOfHost('web.localhost')).toBe('');
    expect(portOfHost(undefined)).toBe('');
  });
});
