import { describe, expect, it } from 'vitest';
import { MASK, maskedTags } from './secret-names.js';

describe('secret names', () => {
  it('masks the value of a variable override whose name says it is a secret, and nothing else', () => {
    const tags = { 'berth.stack': 'shop', 'berth.env.API_KEY': 'k', 'berth.env.DB_PASSWORD': 'p', 'berth.env.GREETING': 'hi', 'berth.env.GITHUB_TOKEN': '', owner: 'secret-santa' };
    expect(maskedTags(tags)).toEqual({ 'berth.stack': 'shop', 'berth.env.API_KEY': MASK, 'berth.env.DB_PASSWORD': MASK, 'berth.env.GREETING': 'hi', 'berth.env.GITHUB_TOKEN': '', owner: 'secret-santa' });
    // Unchanged tags are the same object: nothing copied on the common path.
    const plain = { 'berth.stack': 'shop' };
    expect(maskedTags(plain)).toBe(plain);
    expect(tags['berth.env.API_KEY']).toBe('k');
  });
});
