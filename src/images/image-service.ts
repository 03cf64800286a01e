/**
 * Images as users see them: bake from berth.yaml, list, inspect, remove, collect garbage, capture a
 * host; and, for hosts, what an image name boots from (ImageResolver). Bad input is refused before
 * anything runs; a bake publishes only after every step, the clone check and the tests passed.
 */
import { statSync } from 'node:fs';
import { posix } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BerthError, errorMessage } from '../core/errors.js';
import type { BootImage, HostService, ImageResolver } from '../hosts/host-service.js';
import type { ImagesRepo } from '../store/images-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import type { HostRow, ImageRow } from '../store/schema.js';
import { baseChainId, imageId, layerId } from './digests.js';
import type { AmiBuilds } from './ami-builds.js';
import type { BakedImage, BakeEvent, ImageBuilder, ParentImage } from './builder.js';
import { isInside } from './root-path.js';
import { validateIdentityOptions } from './identity.js';
import type { LayerStore } from './layer-store.js';
import type { ArtifactCache } from './artifacts.js';
import { collectGarbage, type GcResult } from './image-gc.js';
import { buildSource } from './provenance.js';
import { checkStepInputs, IMAGE_NAME, ImageSpecError, parseImagesFile, type ImageSpec } from './spec.js';
import { toImageView, type ImageView } from './views.js';

/** Tags of the hosts bakes launch (bake-hosts.ts). */
const BAKE_ROLES = new Set(['bake', 'bake-check']);

export interface BuildRequest {
  /** berth.yaml's text, and its path as it should appear in messages. */
  text: string;
  file: string;
  /** Directory relative paths of the spec are taken from (on the server's machine). */
  projectDir: string;
  /** Image to build (its parents declared in the same file first); default: every image of the file. */
  name?: string | undefined;
  /** The token that asked (the manifest's `source.builtBy`). */
  builtBy?: string | undefined;
}

export interface BuildResult {
  image: ImageView;
  /** Nothing changed: the current build already is this spec's. */
  upToDate: boolean;
  buildMs: number;
  rolledPools: string[];
}

export interface ImageServiceDeps {
  images: ImagesRepo;
  pools: PoolsRepo;
  layers: LayerStore;
  builder: ImageBuilder;
  hosts: HostService;
  log: (line: string) => void;
  /** On the AWS driver: images are AMIs, baked on a builder instance (ami-builds.ts). */
  ami?: AmiBuilds;
  /** The cache of fetch steps' artifacts, collected with the rest (image-gc.ts). */
  artifacts?: ArtifactCache;
  /** Collect the local store's garbage every `everyMs` on its own, layers once `layerAgeMs` old (image-gc.ts). */
  autoGc?: { everyMs: number; layerAgeMs: number };
}

export class ImageService implements ImageResolver {
  private readonly building = new Map<string, Promise<unknown>>();
  private gcRunning: Promise<void> | undefined;
  private gcTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: ImageServiceDeps) {
    const auto = deps.autoGc;
    if (auto && !deps.ami) {
      this.gcTimer = setInterval(() => void this.collectNow(auto.layerAgeMs), auto.everyMs);
      this.gcTimer.unref();
    }
  }

  private async collectNow(layerAgeMs: number): Promise<void> {
    try {
      const done = await this.collect(layerAgeMs);
      if (done && done.builds + done.layers + done.artifacts > 0) this.deps.log(`image gc: removed ${done.builds} old build(s), ${done.layers} unused layer(s) and ${done.artifacts} cached artifact(s), ${done.bytes} bytes`);
    } catch (err) {
      this.deps.log(`image gc failed: ${errorMessage(err)}`);
    }
  }

  async resolve(tenantId: string, ref: string): Promise<BootImage> {
    if (ref.startsWith('/')) {
      if (!isDirectory(ref)) throw new BerthError('image_not_found', `image ${ref} is not a directory on the server's machine`, "Give an image name (`berth image ls`) or a root filesystem directory; '/' is this machine's own.", { image: ref });
      return { image: ref, imageId: null, base: ref, layers: [] };
    }
    const row = await this.deps.images.current(tenantId, ref);
    if (!row) throw imageNotFound(ref);
    return this.bootOf(row);
  }

  private bootOf(row: ImageRow): BootImage {
    const missing = row.layers.find((id) => !this.deps.layers.has(id));
    if (missing) throw new BerthError('image_not_found', `image ${row.name} is missing its layer ${missing.slice(0, 12)} on this machine`, `Build it again with \`berth image build ${row.name}\`.`, { image: row.name });
    return { image: row.name, imageId: row.id, base: row.base, layers: row.layers.map((id) => this.deps.layers.diffDir(id)).reverse() };
  }

  /** Parses and checks a build request: the images to bake, in dependency order. Runs nothing. */
  async plan(tenantId: string, req: BuildRequest): Promise<ImageSpec[]> {
    const specs = parseImagesFile(req.text, req.file);
    const ordered = buildOrder(specs, req.name, req.file);
    // Everything is checked before anything runs: a bad spec changes nothing.
    for (const spec of ordered) {
      checkStepInputs(spec, req.projectDir);
      await this.deps.ami?.check(tenantId, spec, ordered);
      const problem = validateIdentityOptions(spec.identity);
      if (problem) throw new ImageSpecError([{ ...spec.at, path: `images.${spec.name}.identity`, message: problem, hint: 'See docs/images-identity.md for the built-in paths.' }]);
      for (const step of spec.steps) {
        if (step.kind === 'copy' && !isInside(req.projectDir, posix.resolve(req.projectDir, step.src))) {
          throw new ImageSpecError([{ ...step.srcAt, path: `images.${spec.name}.steps`, message: `copy src ${JSON.stringify(step.src)} is outside the project directory`, hint: `Copy files from inside ${req.projectDir}.` }]);
        }
      }
      if (spec.parent.startsWith('/') ? !isDirectory(spec.parent) : !ordered.some((s) => s.name === spec.parent) && !(await this.deps.images.current(tenantId, spec.parent))) {
        throw new ImageSpecError([{ ...spec.at, path: `images.${spec.name}.parent`, message: `parent ${JSON.stringify(spec.parent)} is neither a directory on the server's machine nor a built image`, hint: 'Name a root filesystem directory (/ is this machine\'s) or an image from `berth image ls`.' }]);
      }
    }
    return ordered;
  }

  /** Bakes planned images in order; emits progress as it goes. */
  async build(tenantId: string, req: BuildRequest, ordered: ImageSpec[], emit: (event: BakeEvent) => void, signal?: AbortSignal): Promise<BuildResult[]> {
    const results: BuildResult[] = [];
    for (const spec of ordered) results.push(await this.exclusively(tenantId, spec.name, () => this.buildOne(tenantId, spec, req, emit, signal)));
    return results;
  }

  private async buildOne(tenantId: string, spec: ImageSpec, req: BuildRequest, emit: (event: BakeEvent) => void, signal?: AbortSignal): Promise<BuildResult> {
    const started = performance.now();
    const parent = await this.parentOf(tenantId, spec);
    if (this.deps.ami) return this.buildAmi(this.deps.ami, tenantId, spec, parent, req, emit, started, signal);
    const baked = await this.deps.builder.bakeLayers(tenantId, spec, parent, req.projectDir, emit, signal);
    const id = imageId(baked.base, baked.layers);
    const current = await this.deps.images.current(tenantId, spec.name);
    if (current?.id === id && current.manifest['testsDigest'] === baked.testsDigest) {
      emit({ type: 'log', image: spec.name, index: 0, line: `image ${spec.name} is up to date (${id.slice(0, 12)}): nothing to do` });
      return { image: toImageView(current, await this.deps.images.usage(tenantId, spec.name)), upToDate: true, buildMs: Math.round(performance.now() - started), rolledPools: [] };
    }
    const boot = this.candidate(spec.name, baked);
    const checked = await this.deps.builder.check(tenantId, spec, boot, baked.env, emit, signal);
    const buildMs = Math.round(performance.now() - started);
    return this.publish(tenantId, baked, id, buildMs, { source: buildSource(req.file, req.projectDir, req.builtBy), steps: baked.steps, uniqueness: checked.uniqueness, tests: checked.tests, testsDigest: baked.testsDigest });
  }

  /** An AMI: the row's base is its id and it has no layers; a new AMI rolls the pools as a new build does. */
  private async buildAmi(ami: AmiBuilds, tenantId: string, spec: ImageSpec, parent: ParentImage, req: BuildRequest, emit: (event: BakeEvent) => void, started: number, signal?: AbortSignal): Promise<BuildResult> {
    const { baked, manifest } = await ami.bake(tenantId, spec, parent, req, emit, signal);
    const id = imageId(baked.base, []);
    const current = await this.deps.images.current(tenantId, spec.name);
    let result: BuildResult;
    if (current?.id === id) {
      emit({ type: 'log', image: spec.name, index: 0, line: `image ${spec.name} is up to date (${baked.base}): nothing to do` });
      result = { image: toImageView(current, await this.deps.images.usage(tenantId, spec.name)), upToDate: true, buildMs: Math.round(performance.now() - started), rolledPools: [] };
    } else {
      result = await this.publish(tenantId, baked, id, Math.round(performance.now() - started), manifest);
    }
    await ami.prune(spec.name, emit, baked.steps.length + 1);
    return result;
  }

  /** Checks a capture request before anything runs (the API answers 4xx for these). */
  async hostForCapture(tenantId: string, hostId: string, name: string): Promise<void> {
    if (!IMAGE_NAME.test(name)) throw new BerthError('validation_failed', `image name ${JSON.stringify(name)} is not valid`, 'Use 1-63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit.');
    const host = await this.deps.hosts.get(tenantId, hostId);
    if (host.state !== 'running') throw new BerthError('invalid_state', `host ${hostId} is ${host.state}; only a running host can be captured`, 'Capture a running host (`berth host ls`).', { hostId });
  }

  /**
   * Turns a running host's changes into a new image over the host's own image: its writable layer
   * (copied; the host keeps running), then the agent and identity layers, the clone check, publish.
   */
  async capture(tenantId: string, hostId: string, name: string, emit: (event: BakeEvent) => void, signal?: AbortSignal): Promise<BuildResult> {
    const row = await this.deps.hosts.get(tenantId, hostId);
    return this.exclusively(tenantId, name, async () => {
      const started = performance.now();
      const parentRow = row.imageId ? await this.deps.images.byId(tenantId, row.imageId) : undefined;
      const parent: ParentImage = parentRow
        ? { base: parentRow.base, layers: parentRow.layers, parentId: parentRow.id, env: envOf(parentRow) }
        : { base: row.image, layers: [], parentId: null, env: {} };
      const spec: ImageSpec = { name, parent: parentRow?.name ?? row.image, identity: { strip: [], keep: [] }, egress: false, steps: [], at: { file: `host ${hostId}`, line: 1, column: 1 } };
      const capturedAt = new Date().toISOString();
      const definition = { kind: 'capture', host: hostId, capturedAt };
      const id = layerId(parent.layers.at(-1) ?? baseChainId(parent.base), definition);
      emit({ type: 'step', image: name, index: 0, total: 3, kind: 'capture', title: `capture host ${hostId}`, state: 'running', elapsedMs: 0, layerId: id });
      const ws = await this.deps.layers.workspace();
      try {
        const diff = posix.join(ws.dir, 'diff');
        await this.deps.hosts.captureLayer(tenantId, hostId, diff, { stop: false, ...(signal ? { signal } : {}) });
        await this.deps.layers.commit(diff, { id, parent: parent.layers.at(-1) ?? null, base: parent.base, kind: 'capture', title: `capture host ${hostId}`, definition, createdAt: capturedAt, durationMs: Math.round(performance.now() - started) });
      } finally {
        await this.deps.layers.dispose(ws);
      }
      emit({ type: 'step', image: name, index: 0, total: 3, kind: 'capture', title: `capture host ${hostId}`, state: 'done', elapsedMs: Math.round(performance.now() - started), layerId: id });
      const baked = await this.deps.builder.bakeLayers(tenantId, spec, { ...parent, layers: [...parent.layers, id] }, '/', emit, signal);
      const meta = this.deps.layers.meta(id);
      baked.own.unshift({ id, kind: 'capture', title: `capture host ${hostId}`, cached: false, durationMs: meta?.durationMs ?? 0, sizeBytes: meta?.sizeBytes ?? 0, files: meta?.files ?? 0 });
      baked.parent = spec.parent;
      const imgId = imageId(baked.base, baked.layers);
      const checked = await this.deps.builder.check(tenantId, spec, this.candidate(name, baked), baked.env, emit, signal);
      return this.publish(tenantId, baked, imgId, Math.round(performance.now() - started), { source: { capturedFrom: hostId, capturedAt }, uniqueness: checked.uniqueness, tests: [], testsDigest: baked.testsDigest });
    });
  }

  private candidate(name: string, baked: BakedImage): BootImage {
    return { image: `${name} (candidate)`, imageId: null, base: baked.base, layers: baked.layers.map((id) => this.deps.layers.diffDir(id)).reverse() };
  }

  private async publish(tenantId: string, baked: BakedImage, id: string, buildMs: number, extra: Record<string, unknown>): Promise<BuildResult> {
    const sizeBytes = baked.own.reduce((sum, l) => sum + l.sizeBytes, 0);
    const manifest = { ...extra, layers: baked.own, env: baked.env, buildMs, createdAt: new Date().toISOString() };
    const { rolledPools } = await this.deps.images.publish({ tenantId, name: baked.name, id, parent: baked.parent, parentId: baked.parentId, base: baked.base, layers: baked.layers, manifest, sizeBytes });
    for (const pool of rolledPools) this.deps.pools.forget(tenantId, pool);
    if (rolledPools.length) this.deps.log(`image ${baked.name}: new build ${id.slice(0, 12)}; rolling pool(s) ${rolledPools.join(', ')}`);
    const row = await this.deps.images.current(tenantId, baked.name);
    if (!row) throw new BerthError('internal', `image ${baked.name} vanished right after publishing`, 'Build it again.');
    return { image: toImageView(row, await this.deps.images.usage(tenantId, baked.name)), upToDate: false, buildMs, rolledPools };
  }

  private async parentOf(tenantId: string, spec: ImageSpec): Promise<ParentImage> {
    if (spec.parent.startsWith('/')) return { base: spec.parent, layers: [], parentId: null, env: {} };
    const row = await this.deps.images.current(tenantId, spec.parent);
    if (!row) throw imageNotFound(spec.parent);
    return { base: row.base, layers: row.layers, parentId: row.id, env: envOf(row) };
  }

  /** One bake of a name at a time (a second waits): two would race to publish. */
  private async exclusively<T>(tenantId: string, name: string, work: () => Promise<T>): Promise<T> {
    const key = `${tenantId}/${name}`;
    while (this.building.has(key) || this.gcRunning) await (this.gcRunning ?? this.building.get(key)?.catch(() => undefined));
    const running = work();
    this.building.set(key, running);
    try {
      return await running;
    } finally {
      this.building.delete(key);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.gcTimer);
    await this.gcRunning;
    this.deps.ami?.close();
    await this.deps.builder.close();
  }

  /**
   * After a restart: the hosts of bakes the previous server was running are terminated (their bakes
   * died with it and nothing else uses them); returns how many.
   */
  async recover(live: readonly HostRow[]): Promise<number> {
    const orphans = live.filter((row) => BAKE_ROLES.has(row.tags['berth:role'] ?? ''));
    for (const row of orphans) {
      await this.deps.hosts.terminate(row.tenant_id, row.id, 'its bake ended with the previous server').catch((err: unknown) => this.deps.log(`bake host ${row.id}: ${errorMessage(err)}`));
    }
    return orphans.length;
  }

  async list(tenantId: string): Promise<ImageView[]> {
    const rows = await this.deps.images.listCurrent(tenantId);
    return Promise.all(rows.map(async (row) => toImageView(row, await this.deps.images.usage(tenantId, row.name))));
  }

  async inspect(tenantId: string, name: string): Promise<ImageView & { builds: { id: string; current: boolean; createdAt: string }[] }> {
    const row = await this.deps.images.current(tenantId, name);
    if (!row) throw imageNotFound(name);
    const builds = await this.deps.images.builds(tenantId, name);
    return { ...toImageView(row, await this.deps.images.usage(tenantId, name), true), builds: builds.map((b) => ({ id: b.id, current: b.current, createdAt: new Date(b.created_at).toISOString() })) };
  }

  /** Removes every build of a name, unless a pool or a live host uses it. Layers go at the next gc. */
  async remove(tenantId: string, name: string): Promise<{ removed: number }> {
    if (!(await this.deps.images.current(tenantId, name))) throw imageNotFound(name);
    const usage = await this.deps.images.usage(tenantId, name);
    if (usage.pools.length > 0 || usage.hosts > 0) {
      const users = [...(usage.pools.length ? [`pool(s) ${usage.pools.join(', ')}`] : []), ...(usage.hosts ? [`${usage.hosts} live host(s)`] : [])].join(' and ');
      throw new BerthError('image_in_use', `image ${name} is used by ${users}`, 'Point the pools at another image (or remove them) and terminate its hosts first.', { pools: usage.pools, hosts: usage.hosts });
    }
    return { removed: await this.deps.images.remove(tenantId, name) };
  }

  /**
   * Removes old builds no live host runs, then every layer no remaining build uses (layers of failed
   * bakes among them). Refused while a bake runs: its fresh layers belong to no image yet.
   */
  async gc(tenantId: string): Promise<GcResult> {
    // The server's own collection may be under way: one at a time.
    while (this.gcRunning) await this.gcRunning;
    if (this.building.size > 0) throw new BerthError('conflict', 'a bake is running', 'Run `berth image gc` when it has finished.');
    // No bake runs: no cached artifact is about to be used.
    return this.collecting(() => collectGarbage(this.deps, [tenantId], { artifactsUnusedBefore: Date.now() }));
  }

  /**
   * The server's own collection (image-gc.ts), for every tenant: a layer no build uses goes once
   * older than `layerAgeMs` (at `now`). Skipped (undefined) while a bake runs.
   */
  async collect(layerAgeMs: number, now = Date.now()): Promise<GcResult | undefined> {
    if (this.building.size > 0 || this.gcRunning) return undefined;
    return this.collecting(async () => {
      const tenants = [...new Set((await this.deps.images.all()).map((row) => row.tenant_id))];
      return collectGarbage(this.deps, tenants, { layersCreatedBefore: now - layerAgeMs, artifactsUnusedBefore: now - layerAgeMs });
    });
  }

  /** A bake waits for a collection under way: it could take a layer the bake is about to reuse. */
  private async collecting(work: () => Promise<GcResult>): Promise<GcResult> {
    const running = work();
    this.gcRunning = running.then(() => undefined, () => undefined);
    try {
      return await running;
    } finally {
      this.gcRunning = undefined;
    }
  }
}

/** The images to build for `name` (its in-file parents first), or all, in dependency order. */
function buildOrder(specs: ImageSpec[], name: string | undefined, file: string): ImageSpec[] {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const ordered: ImageSpec[] = [];
  const visit = (spec: ImageSpec, seen: Set<string>): void => {
    if (ordered.includes(spec)) return;
    if (seen.has(spec.name)) throw new ImageSpecError([{ ...spec.at, path: `images.${spec.name}.parent`, message: `images ${[...seen, spec.name].join(' → ')} are each other's parents`, hint: 'Break the cycle: an image cannot be built on itself.' }]);
    const parent = byName.get(spec.parent);
    if (parent) visit(parent, new Set([...seen, spec.name]));
    ordered.push(spec);
  };
  if (name !== undefined) {
    const spec = byName.get(name);
    if (!spec) throw new BerthError('image_not_found', `${file} declares no image ${JSON.stringify(name)}`, `It declares: ${specs.map((s) => s.name).join(', ') || 'none'}.`);
    visit(spec, new Set());
  } else {
    for (const spec of specs) visit(spec, new Set());
  }
  return ordered;
}

function envOf(row: ImageRow): Record<string, string> {
  const env = row.manifest['env'];
  return env && typeof env === 'object' ? (env as Record<string, string>) : {};
}

function imageNotFound(name: string): BerthError {
  return new BerthError('image_not_found', `image ${name} does not exist`, 'List images with `berth image ls`, or build it with `berth image build NAME`.', { image: name });
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
