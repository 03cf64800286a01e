import { BerthError } from '../../core/errors.js';

/** `k=v` strings (a query parameter given once or many times) into a tag map. */
export function parseTagList(value: string | string[] | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  const tags: Record<string, string> = {};
  for (const item of Array.isArray(value) ? value : [value]) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new BerthError('validation_failed', `tag "${item}" is not of the form key=value`, 'Write tags as key=value.');
    tags[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return tags;
}
