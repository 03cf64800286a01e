/**
 * What `berth apply -f berth.yaml` (and `berth up`) does: creates or changes the stacks and pools a
 * file declares. The whole file is checked before anything is sent, so a bad file changes nothing.
 * Pools the file does not name are left alone. Loaded by those two commands only: the YAML parser
 * and the spec schemas cost every other command a tenth of a second at start-up.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { BerthError, isBerthError } from '../core/errors.js';
import { dirname, resolve } from 'node:path';
import { parsePoolSpec } from '../pools/spec.js';
import { emptyConfigLayers, readConfigLayers, type ConfigLayers } from '../stacks/config.js';
import { configProblems } from '../stacks/modes.js';
import { parseStacksFile, type StackSpec } from '../stacks/spec.js';
import type { PoolStatusView } from '../pools/views.js';
import type { Context } from './context.js';
import { UsageError, type Printer } from './output.js';
import { waitForPools } from './pool-wait.js';

type ApplyAction = 'created' | 'updated' | 'rolled' | 'unchanged';

/** A pool as the file gives it: sent as written (the server fills the defaults). */
interface DeclaredPool {
  name: string;
  body: Record<string, unknown>;
}

/**
 * Checks the whole file, then sends its stacks and pools (`berth apply`, `berth up`); with `waitMs`,
 * then waits until its pools are full of their current generation (pool-wait.ts).
 */
export async function applyFile(ctx: Context, file: string, printer: Printer, opts: { waitMs?: number } = {}): Promise<void> {
  const pools = readBerthYaml(file);
  const stacks = readStacks(file);
  if (pools.length === 0 && stacks.length === 0 && !printer.json) printer.err(`${file} declares no pools and no stacks: nothing to do\n`);
  const stackResults: { stack: string; action: string; hosts: number }[] = [];
  for (const { stack, config } of stacks) {
    const result = await ctx.client().put<{ action: string; hosts: number }>(`/v1/stacks/${encodeURIComponent(stack.name)}`, { stack, config });
    stackResults.push({ stack: stack.name, ...result });
    if (!printer.json) printer.out(`${result.action} stack ${stack.name}${result.hosts ? ` (${result.hosts} host(s) converging)` : ''}\n`);
  }
  const results: { action: ApplyAction; pool: PoolStatusView }[] = [];
  for (const pool of pools) {
    const result = await ctx.client().put<{ action: ApplyAction; pool: PoolStatusView }>(`/v1/pools/${encodeURIComponent(pool.name)}`, pool.body);
    results.push(result);
    if (!printer.json) printer.out(`${result.action} ${pool.name}\n`);
  }
  if (opts.waitMs !== undefined && results.length > 0) {
    if (!printer.json) printer.err(`waiting for ${results.length === 1 ? 'the pool to be full of its' : `the ${results.length} pools to be full of their`} current generation…\n`);
    const views = await waitForPools(ctx.client(), results.map((r) => r.pool.name), opts.waitMs, (line) => printer.err(`${line}\n`));
    // What --json prints: each pool as it is now that it is full.
    results.forEach((result, i) => (result.pool = views[i] ?? result.pool));
    if (!printer.json) printer.out(`${results.length === 1 ? 'pool' : 'pools'} full: ${views.map((v) => `${v.name} ${v.status.ready}/${v.status.targetSize}`).join(', ')}\n`);
  }
  if (printer.json) printer.out(`${JSON.stringify(stacks.length ? { pools: results, stacks: stackResults } : results, null, 2)}\n`);
}

/** The stacks of a berth.yaml with their config layers read from the project, every problem located (exit 2). */
function readStacks(file: string): { stack: StackSpec; config: ConfigLayers }[] {
  const text = readFileSync(file, 'utf8');
  const projectDir = dirname(resolve(file));
  return parseStacksFile(text, file, projectDir).map((stack) => {
    const config = stack.configDir ? readConfigLayers(stack.configDir.path, stack.configDir.label) : emptyConfigLayers();
    const problems = configProblems(stack, config);
    if (problems.length > 0) throw new BerthError('validation_failed', `${file}: stack ${stack.name}: ${problems.join('; ')}`, 'Fix the stack or its config; nothing was applied.');
    return { stack, config };
  });
}

/** Reads and checks a berth.yaml: every pool is valid, or this throws (exit 2) naming the file and line. */
export function readBerthYaml(file: string): DeclaredPool[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message}`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const lineOf = (node: Node | null | undefined): string => {
    const offset = node?.range?.[0];
    return offset === undefined ? '' : `:${lines.linePos(offset).line}`;
  };
  const first = doc.errors[0];
  if (first) {
    const pos = lines.linePos(first.pos[0]);
    const more = doc.errors.length > 1 ? ` (and ${doc.errors.length - 1} more error${doc.errors.length > 2 ? 's' : ''})` : '';
    throw new UsageError(`${file}:${pos.line}:${pos.col}: invalid YAML: ${first.message}${more}`);
  }
  const root = doc.contents;
  if (root === null) throw new UsageError(`${file} is empty: expected a \`pools:\` list`);
  if (!isMap(root)) throw new UsageError(`${file}${lineOf(root)}: expected a mapping with a \`pools:\` list at the top`);
  let poolsNode: unknown;
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? pair.key.value : pair.key;
    if (key === 'images' || key === 'stacks') continue; // `berth image build` bakes images; stacks: readStacks
    if (key !== 'pools') throw new UsageError(`${file}${lineOf(pair.key)}: unknown top-level key ${JSON.stringify(key)} (a berth.yaml has \`pools:\`, \`stacks:\` and \`images:\`)`);
    poolsNode = pair.value;
  }
  if (poolsNode === undefined || poolsNode === null || (isScalar(poolsNode) && poolsNode.value === null)) return [];
  if (!isSeq(poolsNode)) throw new UsageError(`${file}${lineOf(poolsNode as Node)}: \`pools:\` must be a list of pools`);

  const values = (doc.toJS() as { pools: unknown[] }).pools;
  const declared: DeclaredPool[] = [];
  const seen = new Map<string, string>();
  poolsNode.items.forEach((item, i) => {
    const where = `${file}${lineOf(item as Node)}`;
    const value = values[i];
    const label = `pools[${i}]${isRecord(value) && typeof value['name'] === 'string' ? ` (${value['name']})` : ''}`;
    if (!isRecord(value)) throw new UsageError(`${where}: ${label}: a pool is a mapping (name, image, size, …)`);
    try {
      parsePoolSpec(value);
    } catch (err) {
      if (isBerthError(err)) throw new BerthError('validation_failed', `${where}: ${label}: ${err.message}`, `${err.hint} Nothing was applied.`);
      throw err;
    }
    const { name, ...body } = value as { name: string } & Record<string, unknown>;
    const before = seen.get(name);
    if (before) throw new UsageError(`${where}: pool ${name} is declared twice (also at ${before})`);
    seen.set(name, where);
    declared.push({ name, body });
  });
  return declared;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
