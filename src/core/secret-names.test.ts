import { describe, expect, it } from 'vitest';
import { MASK, maskedTags } from './secret-names.js';

describe('secret names', () => {
  it("masks every variable override's value (an empty one stays empty), and no other tag", () => {
    const tags = { 'berth.stack': 'shop', 'berth.env': 'prod', 'berth.env.API_KEY': 'k', 'berth.env.DATABASE_URL': 'postgres://u:p@db/x', 'berth.env.GREETING': 'hi', 'berth.env.GITHUB_TOKEN': '', owner: 'secret-santa' };
    expect(maskedTags(tags)).toEqual({ 'berth.stack': 'shop', 'berth.env': 'prod', 'berth.env.API_KEY': MASK, 'berth.env.DATABASE_URL': MASK, 'berth.env.GREETING': MASK, 'berth.env.GITHUB_TOKEN': '', owner: 'secret-santa' });
    // Unchanged tags are the same object: nothing copied on the common path.
    const plain = { 'berth.stack': 'shop' };
    expect(maskedTags(plain)).toBe(plain);
    expect(tags['berth.env.API_KEY']).toBe('k');
  });
});
