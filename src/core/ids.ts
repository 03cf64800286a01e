import { createHash, randomBytes } from 'node:crypto';

/** Short, URL-safe, sortable-enough ids with a kind prefix: `h-1a2b3c4d5e`, `c-…`. */
export function newId(prefix: 'h' | 'c' | 't' | 'tk' | 'cl' | 'sh'): string {
  return `${prefix}-${randomBytes(5).toString('hex')}`;
}

/** A secret for a bearer token (256 bits). */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Tokens are stored only as hashes: a leaked database does not leak credentials. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
