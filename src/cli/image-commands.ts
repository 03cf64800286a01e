/**
 * `berth image`: bake images from berth.yaml (progress streamed live), list, inspect, remove,
 * collect garbage, capture a host. A bake that fails exits 1; a spec the server refuses exits 2.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { BerthError, type ErrorBody } from '../core/errors.js';
import type { BakeEvent } from '../images/builder.js';
import type { BuildResult } from '../images/image-service.js';
import type { ImageView } from '../images/views.js';
import type { Context } from './context.js';
import { age, table, UsageError, type Printer } from './output.js';

type BakeStreamEvent = BakeEvent | { type: 'result'; results: BuildResult[] } | { type: 'error'; error: ErrorBody };
type StepEvent = Extract<BakeEvent, { type: 'step' }>;
type InspectView = ImageView & { builds: { id: string; current: boolean; createdAt: string }[] };

/** Output lines of a step kept (when not shown live) to print if the step fails. */
const KEPT_OUTPUT_LINES = 10;

export function registerImageCommands(program: Command, ctx: Context): void {
  const image = program.command('image').description('bake images from berth.yaml and manage them (hosts and pools boot from image names)');

  image
    .command('build')
    .summary('bake the images a berth.yaml declares')
    .description('Bake the images berth.yaml declares (or NAME and its parents from the file); unchanged steps are cached. Progress goes to stderr, the built images to stdout')
    .argument('[name]', 'image to bake (default: every image of the file)')
    .option('-f, --file <file>', 'the berth.yaml; relative paths in it are taken from its directory', 'berth.yaml')
    .option('--verbose', "print the steps' output as they run (the default on a terminal)")
    .option('--json', 'print the results as JSON')
    .action(async (name: string | undefined, opts: { file: string; verbose?: boolean; json?: boolean }) => {
      const body = { text: readSpecFile(opts.file), file: opts.file, projectDir: dirname(resolve(opts.file)), ...(name ? { name } : {}) };
      await bake(ctx, ctx.printer(opts.json), ctx.client().streamPost('/v1/images/builds', body), opts.verbose);
    });

  image
    .command('capture')
    .description("capture a running host's changes as a new image over the host's own (the host keeps running)")
    .argument('<host>', 'host id')
    .argument('<name>', 'name of the new image')
    .option('--verbose', 'print progress details as they come (the default on a terminal)')
    .option('--json', 'print the result as JSON')
    .action(async (hostId: string, name: string, opts: { verbose?: boolean; json?: boolean }) => {
      await bake(ctx, ctx.printer(opts.json), ctx.client().streamPost(`/v1/images/${encodeURIComponent(name)}/capture`, { hostId }), opts.verbose);
    });

  image
    .command('ls')
    .description('list images (their current builds) and what uses them')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { images } = await ctx.client().get<{ images: ImageView[] }>('/v1/images');
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(images, null, 2)}\n`);
      if (images.length === 0) return printer.out('no images (bake one with `berth image build`)\n');
      printer.out(table(['NAME', 'ID', 'LAYERS', 'SIZE', 'CREATED', 'USED BY'], images.map((i) => [i.name, short(i.id), String(i.layers.length), bytes(i.sizeBytes), `${age(i.createdAt)} ago`, usedBy(i)])));
    });

  image
    .command('inspect')
    .description('show an image: lineage, layers with timings and sizes, env, clone check, tests and builds')
    .argument('<name>')
    .option('--json', 'print JSON (with the whole manifest)')
    .action(async (name: string, opts: { json?: boolean }) => {
      const view = await ctx.client().get<InspectView>(`/v1/images/${encodeURIComponent(name)}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printInspect(printer, view);
    });

  image
    .command('rm')
    .description('remove an image, every build of it (refused while a pool or a live host uses it); `berth image gc` then frees its layers')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const result = await ctx.client().delete<{ removed: number }>(`/v1/images/${encodeURIComponent(name)}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(result, null, 2)}\n`);
      printer.out(`image ${name} removed (${plural(result.removed, 'build')}); \`berth image gc\` frees its layers\n`);
    });

  image
    .command('gc')
    .description('remove old builds no host runs, then every layer no image uses and the cached artifacts of fetch steps')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const result = await ctx.client().post<{ builds: number; layers: number; artifacts: number; bytes: number }>('/v1/images/gc', {});
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(result, null, 2)}\n`);
      printer.out(`removed ${plural(result.builds, 'old build')}, ${plural(result.layers, 'layer')}, ${plural(result.artifacts, 'cached artifact')}, ${bytes(result.bytes)}\n`);
    });
}

export function readSpecFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message}`);
  }
}

/**
 * Follows a bake's event stream: progress to stderr, the results to stdout. A failed bake is
 * reported here with exit code 1; any other error is thrown for main to report and map.
 */
export async function bake(ctx: Context, printer: Printer, events: AsyncGenerator<unknown>, verbose: boolean | undefined): Promise<void> {
  const progress = new BakeProgress(printer, Boolean(verbose) || Boolean(process.stderr.isTTY));
  for await (const raw of lostConnectionSaid(events)) {
    const event = raw as BakeStreamEvent;
    if (event.type === 'result') return printResults(printer, event.results);
    if (event.type === 'error') {
      const { code, message, hint, details } = event.error;
      progress.showUnseenTail(message);
      // The spec was fine but a step, test or the clone check failed: a failure, not bad usage.
      if (code !== 'bake_failed') throw new BerthError(code, message, hint, details);
      // The message's lines after the first are the step's output: not again if it was just shown.
      const [first, ...rest] = message.trimEnd().split('\n');
      printer.err(`berth: ${first ?? ''}\n${progress.failedOutputShown ? '' : rest.map((line) => `  ${line}\n`).join('')}`);
      if (hint) printer.err(`  hint: ${hint}\n`);
      ctx.exitCode = 1;
      return;
    }
    progress.show(event);
  }
  throw new BerthError('internal', 'the server ended the bake without a result', 'See the server log; then build again (finished steps are cached).');
}

/** The stream, with a connection lost mid-bake said as such (the server cancels the bake then). */
async function* lostConnectionSaid(events: AsyncGenerator<unknown>): AsyncGenerator<unknown> {
  try {
    yield* events;
  } catch (err) {
    if (err instanceof BerthError) throw err;
    throw new BerthError('server_unreachable', `lost the connection to the server during the bake: ${err instanceof Error ? err.message : String(err)}`, 'Check the server (`berth server`), then build again: finished steps are cached.');
  }
}

/**
 * Renders bake events on stderr: one line per step state change, and the steps' output, live
 * (`live`) or, otherwise, only the last lines of a step that failed.
 */
class BakeProgress {
  /** Whether the failed step's output was printed (live or after its FAILED line). */
  failedOutputShown = false;
  /** Per step (`image/index`): the unfinished last line of its output, and its last lines. */
  private readonly partial = new Map<string, string>();
  private readonly recent = new Map<string, string[]>();
  private failedTail: string | undefined;

  constructor(
    private readonly printer: Printer,
    private readonly live: boolean,
  ) {}

  show(event: BakeEvent): void {
    const key = `${event.image}/${'index' in event ? event.index : 0}`;
    if (event.type === 'output') {
      const lines = ((this.partial.get(key) ?? '') + event.data).split('\n');
      this.partial.set(key, lines.pop() ?? '');
      for (const line of lines) this.outputLine(key, line);
    } else if (event.type === 'log') {
      if (this.live) this.printer.err(`    ${event.line}\n`);
    } else if (event.type === 'step') {
      if (event.state !== 'running') this.flush(key);
      this.printer.err(`${stepLine(event)}\n`);
      if (event.state === 'failed') this.failed(key, event);
    }
  }

  /** The failed step's tail, when the step printed no output and the error does not say it already. */
  showUnseenTail(errorMessage: string): void {
    const tail = this.failedTail?.trimEnd();
    if (!tail || errorMessage.includes(tail)) return;
    for (const line of tail.split('\n').slice(-KEPT_OUTPUT_LINES)) this.printer.err(`  │ ${line}\n`);
  }

  private outputLine(key: string, line: string): void {
    const kept = this.recent.get(key) ?? [];
    kept.push(line);
    if (kept.length > KEPT_OUTPUT_LINES) kept.shift();
    this.recent.set(key, kept);
    if (this.live) this.printer.err(`  │ ${line}\n`);
  }

  private flush(key: string): void {
    const rest = this.partial.get(key);
    if (rest) this.outputLine(key, rest);
    this.partial.delete(key);
  }

  private failed(key: string, event: StepEvent): void {
    const output = this.recent.get(key) ?? [];
    this.failedOutputShown = output.length > 0;
    if (output.length === 0) this.failedTail = event.tail;
    else if (!this.live) for (const line of output) this.printer.err(`  │ ${line}\n`);
  }
}

function stepLine(e: StepEvent): string {
  // The check and a capture are not layers of the image: they are named, not numbered.
  const label = e.kind === 'check' || e.kind === 'capture' ? `[${e.image} ${e.kind}]` : `[${e.image} ${e.index}/${e.total}]`;
  const state = e.state === 'running' ? '… running' : e.state === 'cached' ? ' cached' : e.state === 'done' ? ` done ${seconds(e.elapsedMs)}` : ` FAILED ${seconds(e.elapsedMs)}`;
  return `${label} ${e.title} ${state}`;
}

function printResults(printer: Printer, results: BuildResult[]): void {
  if (printer.json) return printer.out(`${JSON.stringify(results, null, 2)}\n`);
  const width = Math.max(0, ...results.map((r) => r.image.name.length));
  for (const r of results) {
    const what = r.upToDate ? 'up to date (nothing to do)' : `${plural(r.image.layers.length, 'layer')}  ${bytes(r.image.sizeBytes)}  built in ${seconds(r.buildMs)}`;
    printer.out(`${r.image.name.padEnd(width)}  ${short(r.image.id)}  ${what}\n`);
    if (r.rolledPools.length) printer.out(`${' '.repeat(width)}  pools rolling to it: ${r.rolledPools.join(', ')}\n`);
  }
}

function printInspect(printer: Printer, view: InspectView): void {
  const manifest = view.manifest ?? {};
  const source = record(manifest['source']);
  const field = (key: string): string | undefined => (typeof source[key] === 'string' ? source[key] : undefined);
  const commit = field('commit');
  const from =
    (field('capturedFrom') ? `captured from host ${field('capturedFrom')}` : (field('file') ?? '-')) +
    (commit ? ` at commit ${commit.slice(0, 12)}${field('ref') ? ` (${field('ref')})` : ''}` : '') +
    (field('builtBy') ? `, built by ${field('builtBy')}` : '');
  printer.out(
    [
      `image ${view.name}`,
      `  id:         ${view.id}`,
      `  parent:     ${view.parent}${view.parentId ? ` (${short(view.parentId)})` : ''}`,
      `  base:       ${view.base}`,
      `  source:     ${from}`,
      `  created:    ${view.createdAt} (${age(view.createdAt)} ago)`,
      `  build time: ${view.buildMs === null ? '-' : seconds(view.buildMs)}`,
      `  size:       ${bytes(view.sizeBytes)} in its own layers; ${plural(view.layers.length, 'layer')} in all`,
      `  used by:    ${usedBy(view)}`,
      '',
    ].join('\n'),
  );
  const layers = records(manifest['layers']);
  printer.out(`layers (its own, bottom to top):\n`);
  printer.out(
    table(
      ['ID', 'KIND', 'TITLE', 'CACHED', 'TIME', 'SIZE', 'FILES'],
      layers.map((l) => [short(text(l['id'])), text(l['kind']), text(l['title']), l['cached'] === true ? 'yes' : 'no', seconds(num(l['durationMs'])), bytes(num(l['sizeBytes'])), String(num(l['files']))]),
    ),
  );
  const env = Object.entries(record(manifest['env']));
  printer.out(`env:${env.length ? '' : ' -'}\n${env.map(([k, v]) => `  ${k}=${text(v)}\n`).join('')}`);
  const uniqueness = records(record(manifest['uniqueness'])['items']);
  printer.out(`clone uniqueness:${uniqueness.length ? '\n' : ' -\n'}`);
  if (uniqueness.length) printer.out(table(['  ITEM', 'VERDICT'], uniqueness.map((u) => [`  ${text(u['item'])}`, text(u['verdict'])])));
  const tests = records(manifest['tests']);
  printer.out(`tests:${tests.length ? '' : ' -'}\n${tests.map((t) => `  ${text(t['title'])}  ${seconds(num(t['durationMs']))}\n`).join('')}`);
  printer.out('builds:\n');
  printer.out(table(['  ID', 'CURRENT', 'CREATED'], view.builds.map((b) => [`  ${short(b.id)}`, b.current ? 'yes' : '', `${age(b.createdAt)} ago`])));
}

function usedBy(view: ImageView): string {
  const parts = [...(view.usedBy.pools.length ? [`pools: ${view.usedBy.pools.join(', ')}`] : []), ...(view.usedBy.hosts ? [`hosts: ${view.usedBy.hosts}`] : [])];
  return parts.join('; ') || '-';
}

function short(id: string): string {
  return id.slice(0, 12);
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

function seconds(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit] ?? ''}`;
}

// The manifest is free-form JSON: read it defensively, so an older or newer server's still prints.
function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function records(value: unknown): Record<string, unknown>[] {
  return Array.isArray(value) ? value.map(record) : [];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : value === undefined || value === null ? '-' : JSON.stringify(value);
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}
