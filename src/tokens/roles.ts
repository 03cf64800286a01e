/**
 * What a token may do. Three roles, each holding the one before it:
 *   - `read`: look at everything but recordings and tokens: hosts, commands and their output,
 *     pools, environments, events, metrics, the dashboard (a status page, a monitoring scraper);
 *   - `use`: what a developer or a CI job does with what the platform offers: claim and release
 *     hosts, create and remove environments, run commands, open terminals, restart services;
 *   - `admin`: what shapes the platform itself: pools, images, stacks, raw hosts, tokens, ending
 *     other people's terminals and reading their recordings.
 * Which route needs which role is decided in one place, route-roles.ts.
 */
export const ROLES = ['read', 'use', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

/** Whether a token of role `held` may do what needs `needed`. */
export function roleAllows(held: Role, needed: Role): boolean {
  return ROLES.indexOf(held) >= ROLES.indexOf(needed);
}

export const ROLE_SUMMARIES: Record<Role, string> = {
  read: 'look at hosts, commands, pools, environments, events and metrics',
  use: 'read, and claim/release hosts, create/remove environments, run commands, open terminals',
  admin: 'everything: pools, images, stacks, raw hosts, tokens, recordings',
};
