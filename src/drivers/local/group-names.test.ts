import { describe, expect, it } from 'vitest';
import { GroupNames } from './group-names.js';

const a = { ip: '10.9.0.2', names: ['h-a', 'web'] };
const b = { ip: '10.9.0.3', names: ['h-b', 'api'] };
const b2 = { ip: '10.9.0.4', names: ['h-b2', 'API'] };
const c = { ip: '10.9.0.5', names: ['h-c', 'api'] };

describe('group names', () => {
  it('finds a group mate by any of its names, every replica of a service, and nobody outside the group', () => {
    const names = new GroupNames();
    names.set([[a, b, b2], [c]], false);
    expect(names.lookup(a.ip, 'API.')).toEqual([b.ip, b2.ip]);
    expect(names.lookup(b.ip, 'web')).toEqual([a.ip]);
    expect(names.lookup(a.ip, 'h-b2')).toEqual([b2.ip]);
    expect(names.lookup(c.ip, 'api')).toBeUndefined(); // its own name, but no mate has it
    expect(names.lookup(a.ip, 'nothing')).toBeUndefined();
  });

  it('forgets a host that left, and a group given again is the whole truth for its members', () => {
    const names = new GroupNames();
    names.set([[a, b, b2]], false);
    names.remove(b.ip);
    expect(names.lookup(a.ip, 'api')).toEqual([b2.ip]);
    names.set([[a, c]], false);
    expect(names.lookup(a.ip, 'api')).toEqual([c.ip]);
    expect(names.lookup(b2.ip, 'web')).toBeUndefined();
    names.set([], true);
    expect(names.lookup(a.ip, 'api')).toBeUndefined();
  });
});
