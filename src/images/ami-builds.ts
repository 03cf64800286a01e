/**
 * `berth image build` on the AWS driver: the image is an AMI. The spec's steps (ami-steps.ts) run on
 * a builder instance through berth's own Run Command — the builder boots with a host's identity in
 * its user data, its agent connects like any host's, and each step is one command — then
 * AmiBaker (drivers/aws) strips and checks the builder and makes the AMI, tagged with the spec's
 * digests, so an unchanged spec is never baked twice. After a build, AMI retention keeps the newest
 * `keep` AMIs of the image and every one a live host, pool or image still uses.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { BerthError, errorMessage } from '../core/errors.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import type { AmiBackend } from '../drivers/aws/ami-backend.js';
import type { BuilderRunner } from '../drivers/aws/ami-bake.js';
import { agentBootstrap, type AgentChannel } from '../drivers/types.js';
import type { HostService, RegisteredHost } from '../hosts/host-service.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { ImagesRepo } from '../store/images-repo.js';
import type { ArtifactCache } from './artifacts.js';
import { CloneCheckHosts } from './ami-clone-hosts.js';
import { AMI_PRELUDE, packTree, planAmiSteps, checkAmiSpec, type AmiPlan, type AmiStep } from './ami-steps.js';
import { CommandFailed, type BakeHosts } from './bake-hosts.js';
import type { BakedImage, BakeEvent, ParentImage } from './builder.js';
import type { BuildRequest } from './image-service.js';
import { buildSource } from './provenance.js';
import { ImageSpecError, type ImageSpec } from './spec.js';

const AMI_ID = /^ami-[0-9a-f]{8,17}$/;
const DEFAULT_KEEP = 3;
const DEFAULT_BUILDER_BOOT_MS = 10 * 60_000;

export interface AmiBuildsDeps {
  backend: AmiBackend;
  images: ImagesRepo;
  hosts: HostService;
  hostsRepo: HostsRepo;
  bakeHosts: BakeHosts;
  artifacts: ArtifactCache;
  /** Where file steps' inputs are packed before the slug store serves them. */
  stageDir: string;
  /** Serves a tarball to hosts (the slug store); returns its URL path on the agent port. */
  publishTar: (tarPath: string) => Promise<string>;
  /** The agent port's URL of a path, as builders reach it. */
  fileUrl: (urlPath: string) => string;
  agentChannel: AgentChannel;
  /** AMIs of an image kept besides those in use (default 3). */
  keep?: number;
  pollMs?: number;
  /** How long a builder may take to boot and connect its agent (default 10 min). */
  builderBootTimeoutMs?: number;
  log: (line: string) => void;
}

type Emit = (event: BakeEvent) => void;

export class AmiBuilds {
  constructor(private readonly deps: AmiBuildsDeps) {}

  /** Refuses, before anything runs, what a bake on AWS cannot do (ImageService.plan calls it). */
  async check(tenantId: string, spec: ImageSpec, planned: readonly ImageSpec[]): Promise<void> {
    checkAmiSpec(spec);
    if (spec.parent === '/' || planned.some((s) => s.name === spec.parent)) return;
    const row = await this.deps.images.current(tenantId, spec.parent);
    if (row && !AMI_ID.test(row.base)) {
      throw new ImageSpecError([{ ...spec.at, path: `images.${spec.name}.parent`, message: `parent image ${spec.parent} is made of local layers, not an AMI`, hint: 'Build the parent on this server (the AWS driver) first, or use parent: /.' }]);
    }
  }

  /** Bakes (or finds) the AMI of `spec`; returns what ImageService publishes. */
  async bake(tenantId: string, spec: ImageSpec, parent: ParentImage, req: BuildRequest, emit: Emit, signal?: AbortSignal): Promise<{ baked: BakedImage; manifest: Record<string, unknown> }> {
    const parentAmi = parent.base === '/' ? this.deps.backend.driverImageId : parent.base;
    if (!AMI_ID.test(parentAmi)) throw new BerthError('validation_failed', `image ${spec.name}'s parent ${spec.parent} is not an AMI (${parentAmi})`, 'Use parent: / or an image baked on this driver.', { image: spec.name });
    const plan = await planAmiSteps(spec, parentAmi, parent.env, req.projectDir, this.deps.backend.identityDigest);
    const total = plan.layerDigests.length + 1;
    emit({ type: 'image', image: spec.name, parent: spec.parent, steps: total });
    const last = { index: total, kind: 'ami', title: `strip identity and make the AMI (from ${parentAmi})` };
    const stage = join(this.deps.stageDir, randomUUID());
    let builder: RegisteredHost | undefined;
    const started = performance.now();
    // Its step begins when AmiBaker starts the check: the AMI step is done then.
    const done = (): void => emit({ type: 'step', image: spec.name, ...last, total, state: 'done', elapsedMs: Math.round(performance.now() - started) });
    const clones = new CloneCheckHosts({ ...this.deps, bootTimeoutMs: this.deps.builderBootTimeoutMs ?? DEFAULT_BUILDER_BOOT_MS }, tenantId, spec.name, total + 1, emit, done, plan.tests);
    try {
      const steps = plan.steps(await this.stageInputs(plan, stage, signal));
      const runner = new AgentRunner(this.deps, tenantId, spec.name, total, steps, () => builder, emit);
      const result = await this.deps.backend.bake(
        { name: spec.name, parentImageId: parentAmi, steps: steps.map((s) => s.command), specDigest: plan.specDigest, layerDigests: plan.layerDigests },
        runner,
        {
          ...(signal ? { signal } : {}),
          ...(this.deps.pollMs !== undefined ? { pollMs: this.deps.pollMs } : {}),
          progress: (line) => emit({ type: 'log', image: spec.name, index: clones.started !== undefined ? clones.index : (runner.current ?? total), line }),
          cloneCheck: clones,
          // Only when a builder is launched: the host it will connect as, and its boot script.
          builderBoot: async () => {
            builder = await this.deps.hosts.register(tenantId, { hostname: `bake-${randomUUID().slice(0, 8)}`, tags: { 'berth:role': 'bake', 'berth:image': spec.name } }, undefined, { image: `${spec.name} (bake)`, imageId: null, base: parentAmi, layers: [] });
            return { hostId: builder.id, userData: this.deps.backend.builderUserData(builder.hostname, builder.tags, agentBootstrap(this.deps.agentChannel, builder.id, builder.token)) };
          },
        },
      );
      // A reused AMI was checked when it was made: it is not checked again.
      if (result.reused) for (const step of [...steps.map((s) => ({ ...s, kind: 'run' })), last]) emit({ type: 'step', image: spec.name, index: step.index, total, kind: step.kind, title: step.title, state: 'cached', elapsedMs: 0 });
      else if (clones.started === undefined) done();
      if (clones.started !== undefined) clones.step('done');
      const baked: BakedImage = { name: spec.name, parent: spec.parent, parentId: parent.parentId, base: result.imageId, layers: [], own: [], env: plan.env, testsDigest: '', steps: plan.definitions };
      const check = result.cloneCheck;
      const ami = { imageId: result.imageId, name: result.name, reused: result.reused, specDigest: plan.specDigest, layerDigests: plan.layerDigests, parentImageId: parentAmi, ...(result.builderInstanceId ? { builderInstanceId: result.builderInstanceId } : {}), ...(check ? { checkInstanceIds: check.instanceIds } : {}) };
      return { baked, manifest: { source: buildSource(req.file, req.projectDir, req.builtBy), steps: plan.definitions, ami, ...(check ? { uniqueness: check.uniqueness } : {}), tests: check?.tests ?? [] } };
    } catch (err) {
      if (clones.started !== undefined) clones.step('failed', errorMessage(err));
      else if (!(err instanceof BerthError && err.details?.['phase'] === 'steps')) emit({ type: 'step', image: spec.name, ...last, total, state: 'failed', elapsedMs: Math.round(performance.now() - started), tail: errorMessage(err) });
      throw err;
    } finally {
      await rm(stage, { recursive: true, force: true });
      // The builder's host record: the instance itself is AmiBaker's, terminated by it.
      if (builder) await this.deps.hosts.terminate(tenantId, builder.id, 'its bake ended').catch((err: unknown) => this.deps.log(`bake host ${builder?.id ?? ''}: ${errorMessage(err)}`));
    }
  }

  /**
   * Retention after a successful build: the newest `keep` AMIs of the image stay, and so does every
   * AMI a current image (pools name those), a live host or a fleet host's instance uses.
   */
  async prune(name: string, emit: Emit, index: number): Promise<void> {
    try {
      const rows = await this.deps.images.all();
      const inUse = new Set(rows.filter((r) => r.current && AMI_ID.test(r.base)).map((r) => r.base));
      const bases = new Map(rows.map((r) => [`${r.tenant_id}/${r.id}`, r.base]));
      for (const host of await this.deps.hostsRepo.listInStates(LIVE_HOST_STATES)) {
        const fromImage = host.image_id ? bases.get(`${host.tenant_id}/${host.image_id}`) : undefined;
        const booted = host.driver_data['imageId'];
        for (const id of [fromImage, typeof booted === 'string' ? booted : undefined]) if (id && AMI_ID.test(id)) inUse.add(id);
      }
      const pruned = await this.deps.backend.prune({ name, keep: this.deps.keep ?? DEFAULT_KEEP, inUse });
      for (const r of pruned.removed) emit({ type: 'log', image: name, index, line: `retention: deregistered ${r.imageId} (${r.name ?? '?'}) and ${r.snapshotIds.length} snapshot(s)` });
    } catch (err) {
      // The image is built and published; an AMI left over costs storage, not correctness.
      emit({ type: 'log', image: name, index, line: `retention failed (old AMIs kept): ${errorMessage(err)}` });
      this.deps.log(`image ${name}: AMI retention failed: ${errorMessage(err)}`);
    }
  }

  close(): void {
    this.deps.backend.close();
  }

  /** Packs each file step's inputs and publishes them; returns their URLs by step index. */
  private async stageInputs(plan: AmiPlan, stage: string, signal?: AbortSignal): Promise<Map<number, string>> {
    const urls = new Map<number, string>();
    for (const input of plan.inputs) {
      const dir = join(stage, `s${input.index}`);
      await mkdir(dir, { recursive: true });
      await input.stage(dir, this.deps.artifacts, signal);
      const tar = join(stage, `s${input.index}.tar`);
      await packTree(dir, tar);
      urls.set(input.index, this.deps.fileUrl(await this.deps.publishTar(tar)));
    }
    return urls;
  }
}

/**
 * Runs the bake's commands on the builder through Run Command: waits for the builder's agent, then
 * one invocation per command (a step's output and failure are its own), each after AMI_PRELUDE.
 */
class AgentRunner implements BuilderRunner {
  current: number | undefined;
  private enrolled = false;
  private readonly byCommand: Map<string, AmiStep>;

  constructor(
    private readonly deps: AmiBuildsDeps,
    private readonly tenantId: string,
    private readonly image: string,
    private readonly total: number,
    steps: AmiStep[],
    private readonly builder: () => RegisteredHost | undefined,
    private readonly emit: Emit,
  ) {
    this.byCommand = new Map(steps.map((s) => [s.command, s]));
  }

  async run(instanceId: string, commands: string[], opts: { signal?: AbortSignal; timeoutS: number }): Promise<void> {
    const host = this.builder();
    if (!host) throw new BerthError('internal', `builder ${instanceId} has no berth host`, 'Build again.');
    if (!this.enrolled) {
      this.emit({ type: 'log', image: this.image, index: 1, line: `waiting for the agent of builder ${instanceId} (host ${host.id})` });
      await this.deps.hostsRepo.setDriverData(host.id, { builderInstanceId: instanceId });
      await this.deps.hosts.awaitEnrolled(host.id, this.deps.builderBootTimeoutMs ?? DEFAULT_BUILDER_BOOT_MS, opts.signal);
      this.enrolled = true;
    }
    for (const command of commands) {
      const step = this.byCommand.get(command);
      this.current = step?.index;
      const started = performance.now();
      const say = (state: 'running' | 'done' | 'failed', tail?: string): void => {
        if (step) this.emit({ type: 'step', image: this.image, index: step.index, total: this.total, kind: 'run', title: step.title, state, elapsedMs: Math.round(performance.now() - started), ...(tail !== undefined ? { tail } : {}) });
      };
      say('running');
      const timeoutSeconds = Math.max(1, Math.min(step?.timeoutS ?? opts.timeoutS, opts.timeoutS));
      const sink = step ? (stream: 'stdout' | 'stderr', data: string) => this.emit({ type: 'output', image: this.image, index: step.index, stream, data }) : undefined;
      try {
        await this.deps.bakeHosts.run(this.tenantId, host.id, { commands: [AMI_PRELUDE, command], env: {}, timeoutSeconds }, sink, opts.signal);
      } catch (err) {
        if (!(err instanceof CommandFailed)) throw err;
        say('failed', err.output);
        const what = step ? `step ${step.index} (${step.title})` : 'the command';
        throw new Error(`${what} ended ${err.message}\n${err.output}`, { cause: err });
      }
      say('done');
    }
  }
}
