/**
 * Checks of a set of service specs that need nothing of the host: the server runs them before it
 * stores or sends a set, and the agent's supervisor again before it touches anything (it also
 * resolves users, which only the host can). Shared, as the protocol is, so both sides agree.
 */
import { ENV_NAME_PATTERN, type ServiceSpec } from './messages.js';

/** Every problem of the set, as sentences; empty when the set is fine. */
export function checkServiceSet(specs: readonly ServiceSpec[]): string[] {
  const problems: string[] = [];
  const byName = new Map<string, ServiceSpec>();
  for (const spec of specs) {
    const label = `service ${JSON.stringify(spec.name)}`;
    if (byName.has(spec.name)) {
      problems.push(`${label} is listed twice`);
      continue;
    }
    byName.set(spec.name, spec);
    for (const [key, value] of Object.entries(spec.env)) {
      if (!ENV_NAME_PATTERN.test(key)) problems.push(`${label}: env var name ${JSON.stringify(key)} is not a valid identifier`);
      if (value.includes('\0')) problems.push(`${label}: env var ${key} contains a NUL byte`);
    }
    if (spec.cmd.includes('\0')) problems.push(`${label}: cmd contains a NUL byte`);
    if (spec.cwd !== undefined && !spec.cwd.startsWith('/')) problems.push(`${label}: cwd ${JSON.stringify(spec.cwd)} is not an absolute path`);
  }
  for (const spec of byName.values()) {
    for (const dep of spec.dependsOn) {
      if (!byName.has(dep)) problems.push(`service ${JSON.stringify(spec.name)} depends on unknown service ${JSON.stringify(dep)}`);
    }
  }
  const cycle = findCycle(byName);
  if (cycle) problems.push(`dependency cycle: ${cycle.join(' -> ')}`);
  return problems;
}

/** The first cycle found by depth-first search, as a path that ends where it starts; undefined if none. */
export function findCycle(specs: ReadonlyMap<string, Pick<ServiceSpec, 'dependsOn'>>): string[] | undefined {
  const done = new Set<string>();
  const path: string[] = [];
  const onPath = new Set<string>();
  const visit = (name: string): string[] | undefined => {
    if (onPath.has(name)) return [...path.slice(path.indexOf(name)), name];
    if (done.has(name)) return undefined;
    onPath.add(name);
    path.push(name);
    for (const dep of specs.get(name)?.dependsOn ?? []) {
      if (!specs.has(dep)) continue;
      const found = visit(dep);
      if (found) return found;
    }
    path.pop();
    onPath.delete(name);
    done.add(name);
    return undefined;
  };
  for (const name of specs.keys()) {
    const found = visit(name);
    if (found) return found;
  }
  return undefined;
}
