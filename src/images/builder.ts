/**
 * Baking one image: each step becomes a layer whose id is the hash of its parent's id, the step's
 * definition and its inputs' digests (digests.ts), so an unchanged step is never run again and a
 * change re-runs the image from that step on. After the steps come two layers every image has: the
 * agent, and identity stripping (identity.ts). The candidate is then checked on two hosts
 * (bake-hosts.ts) and only then published; a failed bake registers nothing and keeps the layers
 * of the steps that succeeded for the next try.
 */
import { performance } from 'node:perf_hooks';
import { posix } from 'node:path';
import { BerthError, errorMessage, isBerthError } from '../core/errors.js';
import type { BootImage } from '../hosts/host-service.js';
import { ArtifactCache } from './artifacts.js';
import { BakeHosts, CommandFailed, type CommandRun } from './bake-hosts.js';
import type { BakeMounts } from './bake-mounts.js';
import { baseChainId, canonicalJson, fileDigest, layerId, sha256, treeDigest } from './digests.js';
import { applyFileStep, describeSource, sourceOf, writeAgent } from './file-steps.js';
import { BUILTIN_IDENTITY_ITEMS } from './identity.js';
import { stripIntoLayer } from './strip-layer.js';
import type { CommandRunner } from '../drivers/local/proc.js';
import type { LayerStore, Workspace } from './layer-store.js';
import { ImageSpecError, stepDefinition, type ImageSpec, type ImageStep, type SourceLocation } from './spec.js';
import type { UniquenessReport } from './uniqueness.js';

export type BakeEvent =
  | { type: 'image'; image: string; parent: string; steps: number }
  | { type: 'step'; image: string; index: number; total: number; kind: string; title: string; state: 'running' | 'cached' | 'done' | 'failed'; elapsedMs: number; layerId?: string; tail?: string }
  | { type: 'output'; image: string; index: number; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'log'; image: string; index: number; line: string };

export interface LayerSummary {
  id: string;
  kind: string;
  title: string;
  cached: boolean;
  durationMs: number;
  sizeBytes: number;
  files: number;
}

/** Everything a bake made, for publishing (the service decides whether it is new). */
export interface BakedImage {
  name: string;
  parent: string;
  parentId: string | null;
  base: string;
  /** All layer ids, bottom to top, the parent's included. */
  layers: string[];
  /** This image's own layers (its steps, agent, identity). */
  own: LayerSummary[];
  env: Record<string, string>;
  testsDigest: string;
  /** The step definitions, for the manifest. */
  steps: Record<string, unknown>[];
}

export interface ParentImage {
  base: string;
  layers: string[];
  parentId: string | null;
  env: Record<string, string>;
}

export interface BuilderDeps {
  layers: LayerStore;
  artifacts: ArtifactCache;
  mounts: BakeMounts;
  bakeHosts: BakeHosts;
  agentDir: string;
  agentDigest: () => Promise<string>;
  run: CommandRunner;
}

type Emit = (event: BakeEvent) => void;
type RunStep = Extract<ImageStep, { kind: 'run' }>;
type TestStep = Extract<ImageStep, { kind: 'test' }>;

/** Built-in identity items, hashed into the identity layer's id: a new list re-strips every image. */
const IDENTITY_LIST_DIGEST = sha256(canonicalJson({ items: BUILTIN_IDENTITY_ITEMS, method: 'whiteouts, first-boot plan' }));
const DEFAULT_RUN_TIMEOUT_S = 3600;
export const DEFAULT_TEST_TIMEOUT_S = 600;

export class ImageBuilder {
  constructor(private readonly deps: BuilderDeps) {}

  /** Makes (or finds) every layer of `spec`; runs nothing that is cached. */
  async bakeLayers(tenantId: string, spec: ImageSpec, parent: ParentImage, projectDir: string, emit: Emit, signal?: AbortSignal): Promise<BakedImage> {
    const steps = spec.steps.filter((s): s is Exclude<ImageStep, TestStep> => s.kind !== 'test');
    const total = steps.length + 2;
    emit({ type: 'image', image: spec.name, parent: spec.parent, steps: total });
    const layers = [...parent.layers];
    let chain = layers.at(-1) ?? baseChainId(parent.base);
    let env = { ...parent.env };
    const own: LayerSummary[] = [];
    const definitions: Record<string, unknown>[] = [];
    const make = async (index: number, kind: string, title: string, definition: Record<string, unknown>, work: (id: string) => Promise<void>): Promise<void> => {
      signal?.throwIfAborted();
      const id = layerId(chain, definition);
      const started = performance.now();
      if (this.deps.layers.has(id)) {
        emit({ type: 'step', image: spec.name, index, total, kind, title, state: 'cached', elapsedMs: 0, layerId: id });
        const meta = this.deps.layers.meta(id);
        own.push({ id, kind, title, cached: true, durationMs: meta?.durationMs ?? 0, sizeBytes: meta?.sizeBytes ?? 0, files: meta?.files ?? 0 });
      } else {
        emit({ type: 'step', image: spec.name, index, total, kind, title, state: 'running', elapsedMs: 0, layerId: id });
        try {
          await work(id);
        } catch (err) {
          emit({ type: 'step', image: spec.name, index, total, kind, title, state: 'failed', elapsedMs: Math.round(performance.now() - started), tail: err instanceof CommandFailed ? err.output : errorMessage(err) });
          throw err;
        }
        const meta = this.deps.layers.meta(id);
        const durationMs = Math.round(performance.now() - started);
        emit({ type: 'step', image: spec.name, index, total, kind, title, state: 'done', elapsedMs: durationMs, layerId: id });
        own.push({ id, kind, title, cached: false, durationMs, sizeBytes: meta?.sizeBytes ?? 0, files: meta?.files ?? 0 });
      }
      chain = id;
      layers.push(id);
    };
    const commit = async (id: string, diff: string, kind: string, title: string, definition: Record<string, unknown>, started: number): Promise<void> => {
      await this.deps.layers.commit(diff, { id, parent: layers.at(-1) ?? null, base: parent.base, kind, title, definition, createdAt: new Date().toISOString(), durationMs: Math.round(performance.now() - started) });
    };

    for (const [i, step] of steps.entries()) {
      const index = i + 1;
      if (step.kind === 'env') env = { ...env, ...step.env };
      // A run step with the network beyond the machine may well make something else than one without.
      const egress = step.kind === 'run' && spec.egress ? { egress: true, ...(spec.egressAllow ? { egressAllow: spec.egressAllow } : {}) } : {};
      const definition = { ...stepDefinition(step), ...(await this.inputDigests(step, projectDir)), ...(step.kind === 'env' ? { imageEnv: env } : {}), ...egress };
      definitions.push(definition);
      const title = stepTitle(step);
      const stepEnv = env;
      await make(index, step.kind, title, definition, async (id) => {
        const started = performance.now();
        const log = (line: string) => emit({ type: 'log', image: spec.name, index, line });
        try {
          if (step.kind === 'run') {
            const diff = await this.runStep(tenantId, spec, parent.base, layers, step, stepEnv, index, emit, signal);
            await commit(id, diff.path, step.kind, title, definition, started).finally(() => this.deps.layers.dispose(diff.ws));
          } else {
            await this.inView(
              parent.base,
              layers,
              (root) => applyFileStep(step, { root, projectDir, artifacts: this.deps.artifacts, env: stepEnv, progress: log, ...(signal ? { signal } : {}) }),
              (ws) => commit(id, ws.upper, step.kind, title, definition, started),
            );
          }
        } catch (err) {
          throw located(spec, index, step, err);
        }
      });
    }

    const agentDefinition = { kind: 'agent', digest: await this.deps.agentDigest() };
    await make(steps.length + 1, 'agent', 'berth agent', agentDefinition, async (id) => {
      const started = performance.now();
      await this.inView(parent.base, layers, (root) => writeAgent(root, this.deps.agentDir), (ws) => commit(id, ws.upper, 'agent', 'berth agent', agentDefinition, started));
    });

    const identityDefinition = { kind: 'identity', builtin: IDENTITY_LIST_DIGEST, strip: spec.identity.strip, keep: spec.identity.keep };
    await make(steps.length + 2, 'identity', 'strip per-host identity', identityDefinition, async (id) => {
      const started = performance.now();
      const ws = await this.deps.layers.workspace();
      try {
        const stack = { base: parent.base, layers: layers.map((l) => this.deps.layers.diffDir(l)).reverse() };
        const report = await stripIntoLayer(this.deps.mounts, ws, stack, spec.identity, this.deps.run);
        emit({ type: 'log', image: spec.name, index: steps.length + 2, line: `removed ${report.removed.length}, emptied ${report.emptied.length}, truncated ${report.truncated.length} path(s)` });
        await commit(id, ws.upper, 'identity', 'strip per-host identity', identityDefinition, started);
      } finally {
        await this.deps.layers.dispose(ws);
      }
    });

    const tests = spec.steps.filter((s): s is TestStep => s.kind === 'test').map(stepDefinition);
    return { name: spec.name, parent: spec.parent, parentId: parent.parentId, base: parent.base, layers, own, env, testsDigest: sha256(canonicalJson(tests)), steps: definitions };
  }

  /** The clone-uniqueness check and the spec's tests, on hosts of the candidate. */
  async check(tenantId: string, spec: ImageSpec, boot: BootImage, env: Record<string, string>, emit: Emit, signal?: AbortSignal): Promise<{ uniqueness: UniquenessReport; tests: { title: string; durationMs: number }[] }> {
    const tests = spec.steps.flatMap((step, i) => (step.kind === 'test' ? [{ step, i }] : []));
    const index = spec.steps.filter((s) => s.kind !== 'test').length + 3;
    const title = checkTitle(tests.length);
    const started = performance.now();
    emit({ type: 'step', image: spec.name, index, total: index, kind: 'check', title, state: 'running', elapsedMs: 0 });
    try {
      const result = await this.deps.bakeHosts.check(
        tenantId,
        boot,
        tests.map(({ step, i }) => ({
          title: stepTitle(step),
          where: `${where(step.at)} images.${spec.name}.steps[${i}]`,
          run: { commands: step.commands, env, timeoutSeconds: step.timeoutSeconds ?? DEFAULT_TEST_TIMEOUT_S },
        })),
        (line) => emit({ type: 'log', image: spec.name, index, line }),
        signal,
      );
      emit({ type: 'step', image: spec.name, index, total: index, kind: 'check', title, state: 'done', elapsedMs: Math.round(performance.now() - started) });
      return result;
    } catch (err) {
      emit({ type: 'step', image: spec.name, index, total: index, kind: 'check', title, state: 'failed', elapsedMs: Math.round(performance.now() - started), tail: errorMessage(err) });
      throw err;
    }
  }

  /** Unmounts what bakes keep mounted between them (base views). */
  async close(): Promise<void> {
    await this.deps.mounts.close();
  }

  /** Mounts a writable view of the layers, lets `work` change it, then `done` takes the workspace. */
  async inView(base: string, layers: readonly string[], work: (root: string) => Promise<void>, done: (ws: Workspace) => Promise<void>): Promise<void> {
    const ws = await this.deps.layers.workspace();
    try {
      await this.deps.mounts.mount({ base, layers: layers.map((id) => this.deps.layers.diffDir(id)).reverse() }, ws);
      try {
        await work(ws.mnt);
      } finally {
        await this.deps.mounts.unmount(ws);
      }
      await done(ws);
    } finally {
      await this.deps.layers.dispose(ws);
    }
  }

  /** A `run` step: a build host from the layers so far, the commands, its writable layer kept. */
  private async runStep(tenantId: string, spec: Pick<ImageSpec, 'name' | 'egress' | 'egressAllow'>, base: string, layers: string[], step: RunStep, env: Record<string, string>, index: number, emit: Emit, signal?: AbortSignal): Promise<{ path: string; ws: Workspace }> {
    const image = spec.name;
    const boot: BootImage = { image: `${image} (bake)`, imageId: null, base, layers: layers.map((id) => this.deps.layers.diffDir(id)).reverse() };
    const hostId = await this.deps.bakeHosts.launch(tenantId, boot, 'bake', signal, { egress: spec.egress, ...(spec.egressAllow ? { egressAllow: spec.egressAllow } : {}) });
    const ws = await this.deps.layers.workspace();
    try {
      const run: CommandRun = { commands: step.commands, env: { ...env, ...step.env }, cwd: step.cwd, timeoutSeconds: step.timeoutSeconds ?? DEFAULT_RUN_TIMEOUT_S };
      await this.deps.bakeHosts.run(tenantId, hostId, run, (stream, data) => emit({ type: 'output', image, index, stream, data }), signal);
      const path = posix.join(ws.dir, 'diff');
      await this.deps.bakeHosts.captureAndTerminate(tenantId, hostId, path);
      return { path, ws };
    } catch (err) {
      await this.deps.bakeHosts.terminate(tenantId, hostId, 'bake step failed');
      await this.deps.layers.dispose(ws);
      throw err;
    }
  }

  /** Digests of what a step reads, so a changed input changes the step's layer id. */
  private async inputDigests(step: ImageStep, projectDir: string): Promise<Record<string, unknown>> {
    if (step.kind === 'copy') return { srcDigest: await treeDigest(posix.resolve(projectDir, step.src)) };
    if (step.kind === 'fetch' || step.kind === 'slug') {
      const source = sourceOf(step.source, projectDir);
      // A URL is identified by its declared checksum; a local file by its content.
      return { sha256: step.sha256 ?? ('path' in source ? await fileDigest(source.path) : undefined) };
    }
    return {};
  }
}

/** The check's step title, for a local bake and an AMI bake alike: with the number of test steps it runs. */
export function checkTitle(tests: number): string {
  return `check clones differ${tests ? ` and run ${tests} test step(s)` : ''}`;
}

export function stepTitle(step: ImageStep): string {
  const short = (text: string) => (text.length > 70 ? `${text.slice(0, 69)}…` : text);
  switch (step.kind) {
    case 'copy':
      return `copy ${step.src} → ${step.dest}`;
    case 'run':
    case 'test':
      return `${step.kind} ${short(step.commands.join(' && '))}`;
    case 'fetch':
      return `fetch ${short(describeSource(step.source))} → ${step.dest}${step.extract ? ' (unpacked)' : ''}`;
    case 'slug':
      return `slug ${short(describeSource(step.source))} → ${step.dest}`;
    case 'env':
      return `env ${Object.keys(step.env).join(', ')}`;
  }
}

function where(at: SourceLocation): string {
  return `${at.file}:${at.line}:${at.column}:`;
}

/**
 * A step's failure, said where the step is. A rejected input (bad checksum, an artifact escaping
 * its target) is the spec's fault and located at the option; anything else fails the bake.
 */
function located(spec: ImageSpec, index: number, step: Exclude<ImageStep, TestStep>, err: unknown): Error {
  if (err instanceof ImageSpecError || (isBerthError(err) && err.code === 'deadline_exceeded')) return err;
  const path = `images.${spec.name}.steps[${spec.steps.indexOf(step)}].${step.kind}`;
  if (isBerthError(err) && err.code === 'validation_failed' && (step.kind === 'fetch' || step.kind === 'slug')) {
    const at = /checksum/.test(err.message) && step.sha256At ? step.sha256At : step.sourceAt;
    return new ImageSpecError([{ ...at, path, message: err.message, hint: err.hint }]);
  }
  if (err instanceof CommandFailed) {
    return new BerthError('bake_failed', `${where(step.at)} ${path}: step ${index} failed: ${err.message}\n${err.output}`, 'Fix the step and build again: the steps before it are cached, so only this one and those after it run.', { step: index, exitCode: err.exitCode, output: err.output, status: err.status });
  }
  const message = errorMessage(err);
  return new BerthError('bake_failed', `${where(step.at)} ${path}: step ${index} failed: ${message}`, isBerthError(err) ? err.hint : 'Fix the step and build again.', { step: index }, { cause: err });
}
