/**
 * The stack an environment runs. A slug's services as a stack: its Procfile's processes (or one
 * `web` command), each run in /app where the slug is unpacked, over the config layers of the stack
 * the environment names. `web` gets PORT=8080 (the Procfile convention: the app listens on $PORT)
 * and is what the router reaches.
 */
import { BerthError } from '../core/errors.js';
import { isSlugRef, type Slug } from '../slugs/slug-store.js';
import type { StackSpec } from '../stacks/spec.js';
import type { EnvironmentRow, StackRow } from '../store/schema.js';
import { routeTarget, type RouteTarget } from './placement.js';

export interface EnvironmentStack {
  spec: StackSpec;
  target: RouteTarget;
  /** Run on each host at its claim (a slug's download). */
  init: string[];
  /** The slug's sha256 when the ref is a slug: what the environment records, so it runs that slug again. */
  slugDigest: string | null;
}

export interface EnvironmentStackDeps {
  stacks: {
    get(tenantId: string, name: string): Promise<StackRow | undefined>;
    put(tenantId: string, name: string, spec: Record<string, unknown>, config: Record<string, unknown>): Promise<unknown>;
  };
  /** Slugs given as refs; without it, a ref is only a version string. */
  slugs?: { prepare(ref: string, signal?: AbortSignal, pinned?: string): Promise<Slug>; urlFor(slug: Slug): string };
}

/**
 * The stack an environment runs, and the init its hosts get: for a slug ref, the slug is fetched
 * and checked first (nothing is claimed for a bad one), its Procfile (or command) becomes a stack
 * of its own over the named stack's config, and init downloads it to /app on each host.
 * `slugDigest`: the slug must be this one (the environment's own, for hosts it runs again).
 */
export async function environmentStack(
  deps: EnvironmentStackDeps,
  req: { tenantId: string; stack: string; ref: string | null | undefined; command: string | null | undefined; slugDigest?: string | null | undefined; signal?: AbortSignal | undefined },
): Promise<EnvironmentStack> {
  const { tenantId, stack: name, ref, command } = req;
  let slugDigest: string | null = null;
  const stored = await deps.stacks.get(tenantId, name);
  if (!stored) throw new BerthError('stack_not_found', `stack ${name} does not exist`, 'Apply it first: berth apply -f berth.yaml');
  let spec = stored.spec as unknown as StackSpec;
  let init: string[] = [];
  if (typeof ref === 'string' && isSlugRef(ref)) {
    if (!deps.slugs) throw new BerthError('validation_failed', 'this server takes no slugs', 'Give --ref a version name.');
    const slug = await deps.slugs.prepare(ref, req.signal, req.slugDigest ?? undefined);
    slugDigest = slug.digest;
    spec = slugStack(spec, slug, command ?? undefined);
    await deps.stacks.put(tenantId, spec.name, spec as unknown as Record<string, unknown>, stored.config);
    const url = deps.slugs.urlFor(slug);
    init = [`rm -rf ${SLUG_APP_DIR} && mkdir -p ${SLUG_APP_DIR} && "$BERTH_NODE" "$BERTH_AGENT_BUNDLE" fetch ${url} | tar -x -C ${SLUG_APP_DIR} --no-same-owner && test -n "$(ls -A ${SLUG_APP_DIR})"`];
  }
  const target = routeTarget(spec);
  if (!target) throw new BerthError('validation_failed', `stack ${name} has no service to route to`, 'Give a service (web, or any) ports: [PORT], or a ready http check.');
  return { spec, target, init, slugDigest };
}

/**
 * The stack of an environment as it is recorded: its hosts are replaced, added or woken with the
 * slug it was deployed with, never with what the slug's path or URL holds by then (mixed versions
 * behind one route). Only a create, deploy or `env up` reads the ref anew.
 */
export function recordedStack(deps: EnvironmentStackDeps, row: Pick<EnvironmentRow, 'tenant_id' | 'stack' | 'ref' | 'command' | 'slug_digest'>, signal?: AbortSignal): Promise<EnvironmentStack> {
  return environmentStack(deps, { tenantId: row.tenant_id, stack: row.stack, ref: row.ref, command: row.command, slugDigest: row.slug_digest, signal });
}

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

/** The digest of the slug `ref` names now (fetched and checked), or null when it names none. */
export async function currentSlugDigest(deps: EnvironmentStackDeps, ref: string, signal?: AbortSignal): Promise<string | null> {
  return isSlugRef(ref) && deps.slugs ? (await deps.slugs.prepare(ref, signal)).digest : null;
}
