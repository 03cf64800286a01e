import { describe, expect, it } from 'vitest';
import { EGRESS_ALLOW_MAX, nameAllowed, parseEgressAllow } from './egress-allow.js';

describe('egress allow lists', () => {
  it('tells ranges from names, normalises both and drops repeats', () => {
    expect(parseEgressAllow(['203.0.113.7/24', '198.51.100.9', 'Packages.EXAMPLE.com.', '*.mirror.example.org', 'packages.example.com', '10.1.2.3/8'])).toEqual({
      cidrs: ['203.0.113.0/24', '198.51.100.9/32', '10.0.0.0/8'],
      names: ['packages.example.com', '*.mirror.example.org'],
    });
  });

  it('refuses what is neither, naming the entry', () => {
    for (const bad of ['300.1.1.1', '1.2.3.4/33', 'exa mple.org', '-bad.example', '1.2.3', '*.', '', 'a..b', `${'x'.repeat(64)}.org`]) {
      expect(() => parseEgressAllow([bad])).toThrow(`egressAllow entry ${JSON.stringify(bad)} is neither`);
    }
    expect(() => parseEgressAllow(Array.from({ length: EGRESS_ALLOW_MAX + 1 }, (_, i) => `h${i}.example`))).toThrow(/at most 64/);
  });

  it('matches a name exactly, or under a *. suffix but not the suffix itself', () => {
    const names = ['packages.example.com', '*.mirror.example.org'];
    expect(nameAllowed(names, 'PACKAGES.example.com.')).toBe(true);
    expect(nameAllowed(names, 'eu.mirror.example.org')).toBe(true);
    expect(nameAllowed(names, 'a.b.mirror.example.org')).toBe(true);
    expect(nameAllowed(names, 'mirror.example.org')).toBe(false);
    expect(nameAllowed(names, 'evilmirror.example.org')).toBe(false);
    expect(nameAllowed(names, 'example.com')).toBe(false);
    expect(nameAllowed(names, 'packages.example.com.evil.example')).toBe(false);
  });
});
