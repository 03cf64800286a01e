/**
 * Every CLI command but `server` and `up` is a small HTTP client: what main.ts loads up front (its
 * static imports, followed through the tree) must not reach the server, its drivers or its store,
 * nor the schema and YAML libraries. Loading them all cost each `berth host ls` half a second (0.6 s
 * in all; 0.11 s without).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const srcDir = dirname(dirname(fileURLToPath(import.meta.url)));

/** The modules `entry` loads before running anything: static value imports, transitively. */
function staticGraph(entry: string): { modules: string[]; packages: string[] } {
  const modules = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (modules.has(file)) return;
    modules.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^import\s+(?!type\b)[^'"]*?from\s+['"]([^'"]+)['"]/gm)) {
      const spec = m[1] ?? '';
      if (spec.startsWith('.')) {
        const ts = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
        if (existsSync(ts)) visit(ts);
      } else if (!spec.startsWith('node:')) {
        packages.add(spec);
      }
    }
  };
  visit(entry);
  return { modules: [...modules].map((f) => relative(srcDir, f)), packages: [...packages] };
}

describe('CLI start-up', () => {
  it('loads neither the server, nor a driver, nor the store, nor their packages', () => {
    const { modules, packages } = staticGraph(join(srcDir, 'cli', 'main.ts'));
    expect(modules).toContain('cli/client.ts'); // the walk does follow the tree
    // server/data-dir.ts only says where the data dir is (and makes its token); commands/views.ts
    // is the shape of a command as the API shows it.
    const heavy = modules.filter((m) => m !== 'server/data-dir.ts' && /^(server|drivers|store|pools|commands\/(?!views)|agents)\//.test(m));
    expect(heavy).toEqual([]);
    expect(packages.filter((p) => /pglite|fastify|@aws-sdk|kysely|pg$|ws$/.test(p))).toEqual([]);
    // Nor the schema library or the YAML parser (~80 ms together): the commands that parse load them.
    expect(packages.filter((p) => /^(zod|yaml)\b/.test(p))).toEqual([]);
  });
});
