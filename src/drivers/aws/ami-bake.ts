/**
 * AMI baking: a builder instance from the parent AMI runs the image's steps (through an injected
 * runner: berth's agent or SSM), then the identity strip and check below, and becomes an AMI
 * tagged with the spec digest. The tag is the cache key: a spec baked once is never baked again.
 * The builder is always terminated; a failed bake leaves no AMI. AMI side and retention:
 * ami-retention.ts.
 */
import { AMI_IDENTITY_CHECK_SCRIPT, AMI_IDENTITY_STRIP_SCRIPT } from './ami-identity.js';
import { runCloneCheck, type CloneCheckHooks, type CloneCheckResult } from './ami-clone-check.js';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateTagsCommand, DescribeInstancesCommand, RunInstancesCommand, TerminateInstancesCommand, type EC2Client, type Instance, type Tag, type _InstanceType } from '@aws-sdk/client-ec2';
import { BerthError, errorMessage } from '../../core/errors.js';
import { sha256 } from '../../images/digests.js';
import { TAG_HOST_ID, TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { bakedImageTags, createBakedImage, findBakedImage, findImages, removeImage, snapshotIdsOf, TAG_IMAGE, TAG_SPEC_DIGEST, tagOf, waitForImage } from './ami-retention.js';
import { checkSpec, digestHex, type AmiBakeSpec } from './ami-bake-spec.js';
import { awsCall, CallCounter, createEc2Client, type CallInfo, type RequestHandler } from './sdk.js';

export const TAG_ROLE = 'berth:role';
/** Put on the builder once a bake has taken it: the instance a replayed ClientToken returns may be another bake's. */
export const TAG_BAKE_ID = 'berth:bake-id';
export const TAG_BAKE_DEADLINE = 'berth:bake-deadline';

/** Runs commands on the builder as root; resolves when all exited 0, rejects otherwise (their output in the message). */
export interface BuilderRunner {
  run(instanceId: string, commands: string[], opts: { signal?: AbortSignal; timeoutS: number }): Promise<void>;
}

export interface AmiBakeOptions {
  signal?: AbortSignal;
  /** A line per phase and, while EC2 works, every ~30 s: a person watches this for minutes. */
  progress?: (step: string) => void;
  /** First poll interval; back-off ×1.5 up to 8×. Default 3000 ms. */
  pollMs?: number;
  /** Bound on the whole bake. Default 60 min. */
  timeoutMs?: number;
  /**
   * The host the builder boots as and its boot script (one that starts the runner's agent), asked
   * for only when a builder is launched. The script's digest seeds the ClientToken; the instance
   * carries the host's id (`berth:host-id`), so a server that died mid-bake terminates it at its
   * restart, as any host it finds no use for.
   */
  builderBoot?: () => Promise<{ hostId: string; userData: string }>;
  /** The clone-uniqueness check on two instances of a newly made AMI (ami-clone-check.ts); its failure removes the AMI. Not run on a reused AMI. */
  cloneCheck?: CloneCheckHooks;
}

export interface AmiBakeResult {
  imageId: string;
  reused: boolean;
  /** `<driver name>-<image name>-<12 digest characters>`. */
  name: string;
  builderInstanceId?: string;
  cloneCheck?: CloneCheckResult;
}

export interface AmiBakerOptions {
  requestHandler?: RequestHandler;
  /** Default true: CreateImage tags the snapshots; false: CreateTags once available (moto 5 lacks the former). */
  tagSnapshotsAtCreate?: boolean;
}

const DEFAULT_TIMEOUT_MS = 60 * 60_000;
const DEFAULT_POLL_MS = 3_000;
/** Each failed bake of a spec spends one ClientToken (EC2 keeps a token ≥ 24 h after its instance ended). */
const MAX_TOKEN_GENERATIONS = 16;
const ENDED = ['shutting-down', 'terminated'];

export { AMI_IDENTITY_CHECK_SCRIPT, AMI_IDENTITY_STRIP_SCRIPT } from './ami-identity.js';
export type { AmiBakeSpec } from './ami-bake-spec.js';

export class AmiBaker {
  private readonly ec2: EC2Client;
  private readonly counter = new CallCounter();
  /** Bakes under way in this process by spec digest: a second bake of a spec waits, then reuses the AMI. */
  private readonly inflight = new Map<string, Promise<unknown>>();

  constructor(
    private readonly cfg: ResolvedAwsConfig,
    private readonly options: AmiBakerOptions = {},
  ) {
    this.ec2 = createEc2Client(cfg, options.requestHandler);
    this.counter.attach(this.ec2);
  }

  /** AWS calls so far per operation (retries not counted). */
  callCounts(): Record<string, number> {
    return this.counter.callCounts();
  }

  imageName(spec: Pick<AmiBakeSpec, 'name' | 'specDigest'>): string {
    return `${this.cfg.name}-${spec.name}-${digestHex(spec.specDigest).slice(0, 12)}`;
  }

  async bake(spec: AmiBakeSpec, runner: BuilderRunner, opts: AmiBakeOptions = {}): Promise<AmiBakeResult> {
    const name = this.imageName(spec);
    checkSpec(spec, name);
    const prior = this.inflight.get(spec.specDigest);
    const mine = (async () => {
      if (prior) {
        opts.progress?.(`another bake of ${spec.name} with the same spec is under way in this server; waiting for it`);
        await settled(prior, opts.signal, spec.name);
      }
      return new Bake(this.ec2, this.cfg, this.options.tagSnapshotsAtCreate ?? true, spec, name, runner, opts).run();
    })();
    this.inflight.set(spec.specDigest, mine);
    try {
      return await mine;
    } finally {
      if (this.inflight.get(spec.specDigest) === mine) this.inflight.delete(spec.specDigest);
    }
  }

  close(): void {
    this.ec2.destroy();
  }
}

/** One bake, and what it launched and made, so failure and cancellation undo exactly that. */
class Bake {
  private readonly timeout: AbortSignal;
  /** The caller's signal or the bake's deadline, whichever fires first: bounds every call and wait. */
  readonly signal: AbortSignal;
  private readonly deadline: number;
  private readonly bakeId = randomUUID();
  private phase = 'looking for an AMI baked from the same spec';
  private builder: string | undefined;
  /** The ClientToken of a launch whose answer may be lost: its instance is found by it. */
  private launchToken: string | undefined;
  private image: string | undefined;
  private createSent = false;

  constructor(
    private readonly ec2: EC2Client,
    private readonly cfg: ResolvedAwsConfig,
    private readonly tagSnapshotsAtCreate: boolean,
    private readonly spec: AmiBakeSpec,
    private readonly name: string,
    private readonly runner: BuilderRunner,
    private readonly opts: AmiBakeOptions,
  ) {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.deadline = Date.now() + timeoutMs;
    this.timeout = AbortSignal.timeout(timeoutMs);
    this.signal = opts.signal ? AbortSignal.any([opts.signal, this.timeout]) : this.timeout;
  }

  async run(): Promise<AmiBakeResult> {
    let result: AmiBakeResult;
    try {
      if (this.signal.aborted) throw new Error('aborted before it started');
      result = (await this.reusable()) ?? (await this.make());
    } catch (err) {
      const failure = this.explain(err);
      // Neither cleanup takes the caller's signal: a cancelled bake must still leave nothing behind.
      await this.removeHalfMadeImage().catch((e: unknown) => this.cfg.logger.warn({ image: this.name, imageId: this.image, err: errorMessage(e) }, 'could not remove the AMI of a failed bake'));
      await this.terminateBuilder().catch((e: unknown) => this.cfg.logger.warn({ instanceId: this.builder, err: errorMessage(e) }, 'could not terminate the builder of a failed bake'));
      throw failure;
    }
    const builder = this.builder ?? '?';
    await this.terminateBuilder().catch((err: unknown) => {
      const e = this.explain(err);
      throw new BerthError(e.code, `image ${result.imageId} is baked, but its builder ${builder} could not be terminated: ${e.message}`, `${e.hint} Then: aws ec2 terminate-instances --instance-ids ${builder}.`, { ...e.details, imageId: result.imageId }, { cause: err });
    });
    this.say(result.reused ? `done: reusing ${result.imageId}` : `done: ${result.imageId} (${this.name}) is available`);
    return result;
  }

  /** Never bake twice: an AMI of this driver with the same spec digest is the result. */
  private async reusable(): Promise<AmiBakeResult | undefined> {
    this.say(`looking for an AMI baked from spec ${this.spec.specDigest}`);
    const found = await findImages(this.ec2, this.cfg, { [TAG_SPEC_DIGEST]: this.spec.specDigest }, [{ Name: 'state', Values: ['available', 'pending'] }], { signal: this.signal });
    const ready = found.find((i) => i.State === 'available') ?? found.find((i) => i.State === 'pending');
    if (!ready?.ImageId) return undefined;
    if (ready.State === 'pending') {
      // Another server's bake, or one whose process died after CreateImage, is making it.
      this.phase = `waiting for ${ready.ImageId}, which another bake of the same spec is making`;
      this.say(this.phase);
      await waitForImage(this.ec2, this.cfg, ready.ImageId, this);
    } else {
      this.say(`reusing ${ready.ImageId} (${ready.Name ?? '?'}, made ${ready.CreationDate ?? '?'}): same spec digest, nothing launched`);
    }
    return { imageId: ready.ImageId, reused: true, name: ready.Name ?? this.name };
  }

  private async make(): Promise<AmiBakeResult> {
    const id = await this.acquireBuilder();
    await this.runOnBuilder('steps', this.spec.steps);
    await this.runOnBuilder('strip', [AMI_IDENTITY_STRIP_SCRIPT]);
    await this.runOnBuilder('check', [AMI_IDENTITY_CHECK_SCRIPT]);
    this.phase = `creating ${this.name} from builder ${id}`;
    this.say(`${this.phase} (EC2 stops the builder to snapshot a consistent disk)`);
    this.createSent = true;
    const imageId = (this.image = await createBakedImage(this.ec2, this.cfg, { instanceId: id, name: this.name, spec: this.spec, tagSnapshots: this.tagSnapshotsAtCreate }, { signal: this.signal }));
    this.phase = `waiting for ${imageId} to become available`;
    const snapshots = snapshotIdsOf(await waitForImage(this.ec2, this.cfg, imageId, this));
    if (!this.tagSnapshotsAtCreate && snapshots.length > 0) {
      await this.call({ operation: 'CreateTags' }, (abortSignal) => this.ec2.send(new CreateTagsCommand({ Resources: snapshots, Tags: bakedImageTags(this.cfg.name, this.spec) }), { abortSignal }));
    }
    this.phase = `checking that two instances of ${imageId} can be told apart`;
    const cloneCheck = this.opts.cloneCheck && (await runCloneCheck(this.ec2, this.cfg, { imageId, image: this.spec.name, amiName: this.name, instanceType: this.spec.instanceType ?? this.cfg.instanceType }, this.opts.cloneCheck, this));
    return { imageId, reused: false, name: this.name, builderInstanceId: id, ...(cloneCheck ? { cloneCheck } : {}) };
  }

  /**
   * One builder, launched with a ClientToken derived from the spec: an SDK retry, or a bake retried
   * after its process died mid-launch, gets the same instance back instead of a second one. A token
   * whose builder has ended (an earlier bake that failed) or that was used with other parameters is
   * spent, and the next generation is tried.
   */
  private async acquireBuilder(): Promise<string> {
    const type = this.spec.instanceType ?? this.cfg.instanceType;
    const boot = this.opts.builderBoot ? await this.opts.builderBoot() : undefined;
    const userData = boot?.userData;
    const seed = sha256([this.cfg.name, this.spec.specDigest, this.spec.parentImageId, type, ...(userData === undefined ? [] : [sha256(userData)])].join('\n')).slice(0, 32);
    for (let generation = 0; generation < MAX_TOKEN_GENERATIONS; generation++) {
      this.phase = `launching a builder from ${this.spec.parentImageId}`;
      this.say(`${this.phase} (${type})`);
      this.launchToken = `berth-bake-${seed}-${generation}`;
      const launched = await this.launch(this.launchToken, type, userData, boot?.hostId);
      const id = launched?.InstanceId;
      if (!id || ENDED.includes(launched.State?.Name ?? '')) continue;
      this.builder = id;
      const instance = await this.waitRunning(id);
      const claim = tagOf(instance, TAG_BAKE_ID);
      if (claim && claim !== this.bakeId) {
        const until = tagOf(instance, TAG_BAKE_DEADLINE) ?? '';
        if (!(Date.parse(until) < Date.now())) {
          this.builder = this.launchToken = undefined; // another bake's, which may be alive: not ours to terminate
          throw new BerthError('conflict', `another bake of image ${this.spec.name} (same spec) is using builder ${id} until ${until || '?'}`, `Wait for it: the next bake reuses its AMI. If its server died, terminate ${id} and bake again.`, { instanceId: id });
        }
        this.say(`builder ${id} was left by a bake whose deadline passed at ${until}; terminating it`);
        await this.terminateBuilder();
        continue;
      }
      const claimTags = [{ Key: TAG_BAKE_ID, Value: this.bakeId }, { Key: TAG_BAKE_DEADLINE, Value: new Date(this.deadline).toISOString() }];
      await this.call({ operation: 'CreateTags', instanceId: id }, (abortSignal) => this.ec2.send(new CreateTagsCommand({ Resources: [id], Tags: claimTags }), { abortSignal }));
      return id;
    }
    throw new BerthError('launch_failed', `image ${this.spec.name} failed to bake ${MAX_TOKEN_GENERATIONS} times: EC2 still holds the launch tokens of their builders`, 'EC2 forgets a launch token 24 h or more after its instance ended: fix what makes the bake fail, then bake again later.');
  }

  private async launch(token: string, type: string, userData: string | undefined, hostId: string | undefined): Promise<Instance | undefined> {
    const profile = this.cfg.instanceProfile;
    // A replay must send the same parameters as the first one: the token is derived from all of
    // them, the host (in the boot script) included.
    const tags: Tag[] = [
      { Key: 'Name', Value: `${this.name}-builder` }, { Key: TAG_ROLE, Value: 'builder' }, { Key: TAG_MANAGED_BY, Value: this.cfg.name }, { Key: TAG_IMAGE, Value: this.spec.name }, { Key: TAG_SPEC_DIGEST, Value: this.spec.specDigest },
      ...(hostId ? [{ Key: TAG_HOST_ID, Value: hostId }] : []),
    ];
    const info: CallInfo = { operation: 'RunInstances', imageId: this.spec.parentImageId, ...(profile ? { instanceProfile: profile } : {}) };
    const request = new RunInstancesCommand({
      ImageId: this.spec.parentImageId,
      InstanceType: type as _InstanceType, // EC2 validates it
      MinCount: 1,
      MaxCount: 1,
      ClientToken: token,
      ...(this.cfg.subnetIds[0] ? { SubnetId: this.cfg.subnetIds[0] } : {}),
      ...(this.cfg.securityGroupIds.length ? { SecurityGroupIds: this.cfg.securityGroupIds } : {}),
      // An SSM runner needs the instance role; IMDSv2 only, as for hosts (launch-template.ts).
      ...(profile ? { IamInstanceProfile: profile.startsWith('arn:') ? { Arn: profile } : { Name: profile } } : {}),
      MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 },
      ...(userData === undefined ? {} : { UserData: Buffer.from(userData).toString('base64') }),
      TagSpecifications: [{ ResourceType: 'instance', Tags: tags }, { ResourceType: 'volume', Tags: tags }],
    });
    try {
      return (await this.call(info, (abortSignal) => this.ec2.send(request, { abortSignal }))).Instances?.[0];
    } catch (err) {
      // EC2 refused the request (a client fault): it made nothing, so there is nothing to look for.
      if ((err as { cause?: { $fault?: unknown } }).cause?.$fault === 'client') this.launchToken = undefined;
      if (hasAwsCode(err, 'IdempotentParameterMismatch')) return undefined;
      throw err;
    }
  }

  private async waitRunning(instanceId: string): Promise<Instance> {
    this.phase = `waiting for builder ${instanceId} to run`;
    const since = Date.now();
    let last = '';
    for (let n = 0; ; n++) {
      const out = await this.call({ operation: 'DescribeInstances', instanceId }, (abortSignal) => this.ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), { abortSignal })).catch((err: unknown) => {
        if (hasAwsCode(err, 'InvalidInstanceID.NotFound')) return undefined; // EC2 is eventually consistent
        throw err;
      });
      const instance = out?.Reservations?.[0]?.Instances?.[0];
      const state = instance?.State?.Name ?? 'not visible yet';
      if (instance && state === 'running') return instance;
      if (instance && state !== 'pending') {
        const reason = instance.StateReason?.Message ? ` (${instance.StateReason.Message})` : '';
        throw new BerthError('launch_failed', `builder ${instanceId} of image ${this.spec.name} is ${state}${reason}`, 'Check the parent AMI, instance type and subnet; the reason is EC2\'s.', { instanceId });
      }
      if (!instance && Date.now() - since > this.cfg.visibilityGraceMs) throw new BerthError('launch_failed', `EC2 accepted builder ${instanceId} but never showed it`, 'Bake again.', { instanceId });
      if (state !== last) this.say(`builder ${instanceId}: ${state}`);
      last = state;
      await this.pause(n);
    }
  }

  private async runOnBuilder(what: 'steps' | 'strip' | 'check', commands: string[]): Promise<void> {
    const id = this.builder ?? '';
    this.phase = `${{ steps: `running ${commands.length} step${commands.length === 1 ? '' : 's'}`, strip: 'stripping per-host identity', check: 'checking that no per-host identity is left' }[what]} on builder ${id}`;
    this.say(this.phase);
    try {
      await this.runner.run(id, commands, { signal: this.signal, timeoutS: Math.max(1, Math.floor((this.deadline - Date.now()) / 1000)) });
    } catch (err) {
      if (this.signal.aborted) throw err;
      const [message, hint] = ({
        steps: [`a step of image ${this.spec.name} failed on builder ${id}`, 'Fix the step: it runs as root on a fresh instance of the parent AMI. The builder was terminated; no AMI was made.'],
        strip: [`stripping per-host identity failed on builder ${id}`, 'The strip needs a POSIX sh, find and root; see the output.'],
        check: [`the identity check failed on builder ${id}: hosts cloned from this image could not be told apart`, 'A step wrote identity the strip does not remove, or a service rewrote it after the strip (see the "remains" lines): remove it in a step, or stop that service.'],
      } as const)[what];
      throw new BerthError('bake_failed', `${message}: ${errorMessage(err)}`, hint, { phase: what, instanceId: id }, { cause: err });
    }
  }

  /** Whatever this bake's CreateImage made, in any state (found by name when its answer was lost). */
  private async removeHalfMadeImage(): Promise<void> {
    if (!this.createSent) return;
    const found = await findBakedImage(this.ec2, this.cfg, this.name, this.spec.specDigest).catch(() => undefined);
    const image = found && (!this.image || found.ImageId === this.image) ? found : this.image ? { ImageId: this.image } : undefined;
    if (!image?.ImageId) return;
    await removeImage(this.ec2, this.cfg, image);
    this.say(`removed the unfinished AMI ${image.ImageId}`);
  }

  private async terminateBuilder(): Promise<void> {
    let ids = this.builder ? [this.builder] : [];
    if (ids.length === 0 && this.launchToken) {
      // A launch whose answer never came: the instance, if EC2 made one, carries the token.
      const filter = { Name: 'client-token', Values: [this.launchToken] };
      const out = await awsCall(this.ec2, this.cfg, { operation: 'DescribeInstances' }, undefined, (abortSignal) => this.ec2.send(new DescribeInstancesCommand({ Filters: [filter] }), { abortSignal }));
      ids = (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => !ENDED.includes(i.State?.Name ?? '')).flatMap((i) => (i.InstanceId ? [i.InstanceId] : []));
    }
    this.builder = this.launchToken = undefined;
    if (ids.length === 0) return;
    this.say(`terminating builder ${ids.join(', ')}`);
    await awsCall(this.ec2, this.cfg, { operation: 'TerminateInstances', instanceId: ids.join(',') }, undefined, (abortSignal) => this.ec2.send(new TerminateInstancesCommand({ InstanceIds: ids }), { abortSignal })).catch((err: unknown) => {
      if (!hasAwsCode(err, 'InvalidInstanceID.NotFound')) throw err;
    });
  }

  private call<T>(info: CallInfo, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return awsCall(this.ec2, this.cfg, info, { signal: this.signal }, run);
  }

  /** Back-off between polls, cut short by the caller's signal or the bake's deadline. */
  async pause(n: number): Promise<void> {
    const pollMs = this.opts.pollMs ?? DEFAULT_POLL_MS;
    await sleep(Math.min(pollMs * 1.5 ** n, pollMs * 8), undefined, { signal: this.signal });
  }

  say(message: string): void {
    this.cfg.logger.debug({ image: this.spec.name, instanceId: this.builder, imageId: this.image }, message);
    try {
      this.opts.progress?.(message);
    } catch (err) {
      this.cfg.logger.warn({ err: errorMessage(err) }, 'the bake\'s progress callback threw');
    }
  }

  private explain(err: unknown): BerthError {
    const details = { image: this.spec.name, specDigest: this.spec.specDigest, phase: this.phase, ...(this.builder ? { instanceId: this.builder } : {}), ...(this.image ? { imageId: this.image } : {}) };
    const undone = 'The builder was terminated; no AMI was kept.';
    if (this.opts.signal?.aborted) return new BerthError('deadline_exceeded', `bake of image ${this.spec.name} was cancelled while ${this.phase}`, `Bake again if the image is still wanted. ${undone}`, details, { cause: err });
    if (this.timeout.aborted) {
      const ms = this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const limit = ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${ms / 1000} s`;
      return new BerthError('deadline_exceeded', `bake of image ${this.spec.name} did not finish within ${limit} (while ${this.phase})`, `Raise timeoutMs if the steps or the snapshot need longer. ${undone}`, details, { cause: err });
    }
    if (err instanceof BerthError) return new BerthError(err.code, err.message, err.hint, { ...details, ...err.details }, { cause: err });
    return new BerthError('internal', `bake of image ${this.spec.name} failed while ${this.phase}: ${errorMessage(err)}`, 'Bake again; report it if it persists.', details, { cause: err });
  }
}

/** Waits for a bake of the same spec to end (success or not); the caller's signal ends the wait. */
function settled(prior: Promise<unknown>, signal: AbortSignal | undefined, image: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(new BerthError('deadline_exceeded', `bake of image ${image} was cancelled while it waited for another bake of the same spec`, 'Bake again if the image is still wanted.'));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    };
    prior.then(done, done);
  });
}
