/**
 * A slug's services as a stack: its Procfile's processes (or one `web` command), each run in /app
 * where the slug is unpacked, over the config layers of the stack the environment names. `web` gets
 * PORT=8080 (the Procfile convention: the app listens on $PORT) and is what the router reaches.
 */
import { BerthError } from '../core/errors.js';
import type { Slug } from '../slugs/slug-store.js';
import type { StackSpec } from '../stacks/spec.js';

export const SLUG_APP_DIR = '/app';
const WEB_PORT = 8080;

export function slugStack(base: StackSpec, slug: Slug, command?: string): StackSpec {
  const processes = slug.procfile ?? (command !== undefined ? [{ name: 'web', cmd: command }] : undefined);
  if (!processes || processes.length === 0) {
    throw new BerthError('validation_failed', `slug ${slug.digest.slice(0, 12)} has no Procfile`, 'Put a Procfile (web: COMMAND) at the top of the slug, or give --command.');
  }
  if (!processes.some((p) => p.name === 'web')) {
    throw new BerthError('validation_failed', `the slug's Procfile has no web process (it has: ${processes.map((p) => p.name).join(', ')})`, 'Add "web: COMMAND" (listening on $PORT) to the Procfile.');
  }
  const services: StackSpec['services'] = {};
  for (const p of processes) {
    const web = p.name === 'web';
    services[p.name] = {
      name: p.name,
      cmd: p.cmd,
      cwd: SLUG_APP_DIR,
      env: web ? { PORT: String(WEB_PORT) } : {},
      ports: web ? [WEB_PORT] : [],
      dependsOn: [],
      ...(web ? { ready: { http: { port: WEB_PORT, path: '/' }, timeoutSeconds: 60 } } : {}),
      restart: { policy: 'always' },
      at: base.at,
      from: 'procfile',
      envAt: {},
    };
  }
  return { ...base, name: `${base.name}-slug-${slug.digest.slice(0, 12)}`, services };
}
