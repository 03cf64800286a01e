/**
 * Checks a whole set of services before the supervisor touches anything: every spec well-formed,
 * names unique, env names valid, users known (only the host can tell), every dependency known and no
 * dependency cycle. All problems are reported at once.
 */
import { serviceSpec, type ServiceSpec } from '../../protocol/messages.js';
import { checkServiceSet } from '../../protocol/services.js';
import { InvalidServiceSetError } from './errors.js';
import { resolveUser, type ResolvedUser } from './user.js';

export interface ValidServiceSet {
  specs: Map<string, ServiceSpec>;
  /** Names in dependency order: every service after all of its dependencies. */
  order: string[];
  users: Map<string, ResolvedUser>;
}

export type UserResolver = (user: string) => ResolvedUser;

/** Throws InvalidServiceSetError listing every problem found. */
export function validateServiceSet(input: readonly ServiceSpec[], lookupUser: UserResolver = resolveUser): ValidServiceSet {
  const problems: string[] = [];
  const specs: ServiceSpec[] = [];
  input.forEach((raw, index) => {
    // Re-parse: the caller's objects may not have come through the wire schema.
    const parsed = serviceSpec.safeParse(raw);
    const label = `service ${typeof raw?.name === 'string' ? JSON.stringify(raw.name) : `#${index + 1}`}`;
    if (!parsed.success) {
      for (const issue of parsed.error.issues) problems.push(`${label}: ${issue.path.join('.') || 'spec'}: ${issue.message}`);
      return;
    }
    specs.push(parsed.data);
  });
  // Names, env names, dependencies, cycles: the same checks the server makes before sending a set.
  problems.push(...checkServiceSet(specs));
  const users = new Map<string, ResolvedUser>();
  for (const spec of specs) {
    if (spec.user === undefined) continue;
    try {
      users.set(spec.name, lookupUser(spec.user));
    } catch (e) {
      problems.push(`service ${JSON.stringify(spec.name)}: ${(e as Error).message}`);
    }
  }
  if (problems.length > 0) throw new InvalidServiceSetError(problems);
  const byName = new Map(specs.map((spec) => [spec.name, spec]));
  return { specs: byName, order: dependencyOrder(byName), users };
}

/**
 * Dependencies first, otherwise in the given order. Tolerates unknown names and cycles (a set loaded
 * from state files is not re-validated): what cannot be ordered goes last.
 */
export function dependencyOrder(specs: ReadonlyMap<string, Pick<ServiceSpec, 'dependsOn'>>): string[] {
  const order: string[] = [];
  const placed = new Set<string>();
  let progress = true;
  while (progress && placed.size < specs.size) {
    progress = false;
    for (const [name, spec] of specs) {
      if (placed.has(name)) continue;
      if (spec.dependsOn.every((dep) => placed.has(dep) || !specs.has(dep))) {
        order.push(name);
        placed.add(name);
        progress = true;
      }
    }
  }
  for (const name of specs.keys()) if (!placed.has(name)) order.push(name);
  return order;
}

/** Services in `specs` that depend directly on `name`. */
export function dependentsOf(name: string, specs: ReadonlyMap<string, Pick<ServiceSpec, 'dependsOn'>>): string[] {
  return [...specs].filter(([, spec]) => spec.dependsOn.includes(name)).map(([dependent]) => dependent);
}
