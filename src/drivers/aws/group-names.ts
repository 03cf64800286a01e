import { BerthError } from '../../core/errors.js';

export const TAG_POOL = 'berth:pool';
export const TAG_GROUP = 'berth:group';
/** Pool and group names go into group names, tags and messages: keep them plain. */
const PART_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkPart(what: string, value: string): string {
  if (!PART_RE.test(value)) throw new BerthError('validation_failed', `${what} name ${JSON.stringify(value)} cannot name an Auto Scaling group`, 'Use 1-128 letters, digits, dots, hyphens or underscores, starting with a letter or digit.');
  return value;
}
