/**
 * Which role each API route needs: the one place to read to know what a token of each role can do.
 * A GET needs `read` unless listed here; every other method must be listed, or the server refuses to
 * start (the check runs as each route is registered), so a new route cannot slip in unguarded.
 * HEAD is its GET's twin.
 */
import type { Role } from './roles.js';

const ROUTE_ROLES: Record<string, Role> = {
  // What a developer or a CI job does with what the platform offers.
  'POST /v1/commands': 'use',
  'POST /v1/commands/:id/cancel': 'use',
  'POST /v1/pools/:name/claims': 'use',
  'POST /v1/hosts/:id/release': 'use',
  'POST /v1/hosts/:id/reset': 'use',
  'PATCH /v1/hosts/:id/tags': 'use',
  'PUT /v1/hosts/:id/services': 'use',
  'POST /v1/hosts/:id/services/:name/:action': 'use',
  'POST /v1/environments': 'use',
  'POST /v1/environments/:name/deploy': 'use',
  'DELETE /v1/environments/:name': 'use',
  'PATCH /v1/environments/:name': 'use',
  'PATCH /v1/environments/:name/settings': 'use',
  'POST /v1/environments/:name/restart': 'use',
  'POST /v1/environments/:name/sleep': 'use',
  'PUT /v1/environments/:name': 'use',
  'POST /v1/environments/:name/scale': 'use',
  // A link into a private environment for the caller itself: looking, not changing.
  'POST /v1/environments/:name/access': 'read',
  'POST /v1/environments/:name/wake': 'use',
  // A terminal on a host (a WebSocket upgrade, served beside the routes: src/shells/shell-endpoint.ts).
  'GET /v1/hosts/:id/shell': 'use',

  // What shapes the platform itself.
  'POST /v1/hosts': 'admin',
  'DELETE /v1/hosts/:id': 'admin',
  'POST /v1/pools': 'admin',
  'PUT /v1/pools/:name': 'admin',
  'PATCH /v1/pools/:name': 'admin',
  'DELETE /v1/pools/:name': 'admin',
  'POST /v1/images/builds': 'admin',
  'POST /v1/images/:name/capture': 'admin',
  'DELETE /v1/images/:name': 'admin',
  'POST /v1/images/gc': 'admin',
  'PUT /v1/stacks/:name': 'admin',
  // Other people's terminals: ending them, and what they showed.
  'DELETE /v1/shells/:id': 'admin',
  'GET /v1/shells/recordings': 'admin',
  'GET /v1/shells/:id/recording': 'admin',
  'GET /v1/tokens': 'admin',
  'POST /v1/tokens': 'admin',
  'DELETE /v1/tokens/:id': 'admin',
  'POST /v1/tokens/rotate-data-dir': 'admin',
  'GET /v1/audit': 'admin',
};

/** The role a route needs, or undefined for a non-GET route nobody decided on (a bug). */
export function routeRole(method: string, url: string): Role | undefined {
  const verb = method.toUpperCase() === 'HEAD' ? 'GET' : method.toUpperCase();
  return ROUTE_ROLES[`${verb} ${url}`] ?? (verb === 'GET' ? 'read' : undefined);
}

/** Every route this table names (for the test that checks each exists). */
export function namedRoutes(): string[] {
  return Object.keys(ROUTE_ROLES);
}
