/**
 * The AMI side of baking (ami-bake.ts runs the builder): the tags a baked AMI carries, finding AMIs
 * by them, waiting for one to become available, and removing one with its snapshots. Retention
 * (prune): an AMI costs its EBS snapshots' storage for as long as it exists, and deregistering it
 * does not delete them, so berth removes both. AMIs are found by berth's tags, never by name
 * patterns, so nothing berth did not make (or another installation made) is ever touched.
 */
import { CreateImageCommand, DeleteSnapshotCommand, DeregisterImageCommand, DescribeImagesCommand, paginateDescribeImages, paginateDescribeSnapshots, type EC2Client, type Filter, type Image, type Snapshot, type Tag } from '@aws-sdk/client-ec2';
import { BerthError, errorMessage } from '../../core/errors.js';
import type { OperationOptions } from '../types.js';
import { TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { awsCall, CallCounter, createEc2Client, type RequestHandler } from './sdk.js';

/** Tags of every baked AMI (and its snapshots); `berth:managed-by` is the driver's own. */
export const TAG_IMAGE = 'berth:image';
export const TAG_SPEC_DIGEST = 'berth:spec-digest';
export const TAG_LAYER_DIGESTS = 'berth:layer-digests';
export const TAG_PARENT = 'berth:parent';

const TAG_VALUE_MAX = 256;
/** States from which an AMI never becomes available. */
export const IMAGE_FAILED = ['failed', 'error', 'invalid', 'deregistered', 'disabled'];
/** While EC2 works on an image, a progress line this often (a person watches for minutes). */
const REPORT_EVERY_MS = 30_000;

/** A deregistered AMI is NotFound or Unavailable; a deleted snapshot is NotFound. Both are done. */
const IMAGE_GONE = ['InvalidAMIID.NotFound', 'InvalidAMIID.Unavailable'];
const SNAPSHOT_GONE = ['InvalidSnapshot.NotFound'];
/** Right after DeregisterImage, EC2 can still see the snapshot as used by it for a moment. */
const SNAPSHOT_IN_USE_DELAYS_MS = [1_000, 3_000];
/** AWS (and moto) describe a CreateImage snapshot as "Created by CreateImage(i-…) for ami-… ". */
const SNAPSHOT_OF_AMI_RE = /\bfor (ami-[0-9a-f]+)/;

export interface PruneOptions {
  /** The image name (spec.name of the bakes), i.e. the `berth:image` tag. */
  name: string;
  /** How many of the newest available AMIs stay. */
  keep: number;
  /** AMIs that hosts or pools still use: never removed, whatever their age. */
  inUse: Set<string>;
  signal?: AbortSignal;
}

export interface RemovedImage {
  imageId: string;
  name: string | undefined;
  createdAt: string | undefined;
  snapshotIds: string[];
}

export interface PruneResult {
  removed: RemovedImage[];
  kept: string[];
  /** Snapshots of AMIs removed earlier whose deletion had not happened (a prune that stopped half-way). */
  orphanSnapshots: string[];
}

export function snapshotIdsOf(image: Image): string[] {
  return (image.BlockDeviceMappings ?? []).map((m) => m.Ebs?.SnapshotId).filter((id): id is string => id !== undefined);
}

export interface BakedImageSpec {
  name: string;
  specDigest: string;
  parentImageId: string;
  layerDigests?: string[];
}

/** What a baked AMI and its snapshots are tagged with: the spec digest is the bake cache's key. */
export function bakedImageTags(managedBy: string, spec: BakedImageSpec): Tag[] {
  const layers = layerDigestsTag(spec.layerDigests ?? []);
  return [
    { Key: TAG_MANAGED_BY, Value: managedBy },
    { Key: TAG_IMAGE, Value: spec.name },
    { Key: TAG_SPEC_DIGEST, Value: spec.specDigest },
    ...(layers ? [{ Key: TAG_LAYER_DIGESTS, Value: layers }] : []),
    { Key: TAG_PARENT, Value: spec.parentImageId },
  ];
}

/** Comma-joined; over EC2's 256-character tag value, whole digests only, then `,...` so a reader sees the list is cut. */
export function layerDigestsTag(digests: readonly string[]): string {
  const all = digests.join(',');
  if (all.length <= TAG_VALUE_MAX) return all;
  let out = '';
  for (const d of digests) {
    const next = out ? `${out},${d}` : d;
    if (next.length > TAG_VALUE_MAX - 4) break;
    out = next;
  }
  return `${out},...`;
}

export function tagOf(resource: { Tags?: Tag[] | undefined }, key: string): string | undefined {
  return resource.Tags?.find((t) => t.Key === key)?.Value;
}

/** How a wait polls: the bake's signal (caller + deadline), its back-off and its progress lines. */
export interface Poller {
  signal: AbortSignal;
  pause(attempt: number): Promise<void>;
  say(message: string): void;
}

/**
 * Polls until the AMI is available. An id EC2 does not show yet is eventual consistency (for
 * visibilityGraceMs); failed and the like end the wait with EC2's reason.
 */
export async function waitForImage(ec2: EC2Client, cfg: ResolvedAwsConfig, imageId: string, poll: Poller): Promise<Image> {
  const since = Date.now();
  let reported = 0;
  let last = '';
  for (let n = 0; ; n++) {
    const out = await awsCall(ec2, cfg, { operation: 'DescribeImages', imageId }, { signal: poll.signal }, (abortSignal) => ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] }), { abortSignal })).catch((err: unknown) => {
      if (hasAwsCode(err, 'InvalidAMIID.NotFound')) return undefined;
      throw err;
    });
    const image = out?.Images?.[0];
    const state = image?.State ?? 'not visible yet';
    if (image && state === 'available') return image;
    if (image && IMAGE_FAILED.includes(state)) {
      const reason = image.StateReason?.Message ?? 'EC2 gave no reason';
      throw new BerthError('bake_failed', `image ${imageId} (${image.Name ?? '?'}) ended ${state}: ${reason}`, 'See the reason (often a volume or snapshot problem) and bake again; a failed AMI of this bake is deregistered.', { imageId, stateReason: image.StateReason?.Code });
    }
    if (!image && Date.now() - since > cfg.visibilityGraceMs) throw new BerthError('bake_failed', `EC2 accepted image ${imageId} but never showed it`, 'Bake again.', { imageId });
    if (state !== last || Date.now() - reported >= REPORT_EVERY_MS) {
      poll.say(`image ${imageId}: ${state} (${Math.round((Date.now() - since) / 1000)} s)`);
      reported = Date.now();
    }
    last = state;
    await poll.pause(n);
  }
}

/** This driver's AMI of this name made from this spec, any state. */
export async function findBakedImage(ec2: EC2Client, cfg: ResolvedAwsConfig, name: string, specDigest: string, opts?: OperationOptions): Promise<Image | undefined> {
  return (await findImages(ec2, cfg, { [TAG_SPEC_DIGEST]: specDigest }, [{ Name: 'name', Values: [name] }], opts))[0];
}

export interface BakedImageRequest {
  instanceId: string;
  name: string;
  spec: BakedImageSpec;
  /** Tag the snapshots in CreateImage (AWS) or leave them to the caller (emulators without it). */
  tagSnapshots: boolean;
}

/**
 * CreateImage from the builder, rebooting it (NoReboot false) so the disk is consistent. CreateImage
 * has no ClientToken: the name, which holds the digest, makes a repeat detectable. A duplicate
 * name is an SDK retry whose first answer was lost (that AMI is the result) or a failed AMI an
 * earlier bake could not remove (removed, then created again once).
 */
export async function createBakedImage(ec2: EC2Client, cfg: ResolvedAwsConfig, req: BakedImageRequest, opts: OperationOptions, retried = false): Promise<string> {
  const tags = bakedImageTags(cfg.name, req.spec);
  const tagSpecs = [{ ResourceType: 'image' as const, Tags: tags }, ...(req.tagSnapshots ? [{ ResourceType: 'snapshot' as const, Tags: tags }] : [])];
  const input = { InstanceId: req.instanceId, Name: req.name, Description: `berth image ${req.spec.name}, spec ${req.spec.specDigest}`.slice(0, 255), NoReboot: false, TagSpecifications: tagSpecs };
  try {
    const out = await awsCall(ec2, cfg, { operation: 'CreateImage', instanceId: req.instanceId }, opts, (abortSignal) => ec2.send(new CreateImageCommand(input), { abortSignal }));
    if (out.ImageId) return out.ImageId;
    throw new BerthError('internal', `EC2 accepted CreateImage for ${req.name} but returned no image id`, 'Bake again.');
  } catch (err) {
    if (!hasAwsCode(err, 'InvalidAMIName.Duplicate')) throw err;
    const same = await findBakedImage(ec2, cfg, req.name, req.spec.specDigest, opts);
    if (!same?.ImageId) throw new BerthError('conflict', `an AMI named ${req.name} exists that berth did not bake from this spec`, 'Deregister it, or rename the image.', { name: req.name }, { cause: err });
    if (!IMAGE_FAILED.includes(same.State ?? '') || retried) return same.ImageId;
    await removeImage(ec2, cfg, same, opts);
    return createBakedImage(ec2, cfg, req, opts, true);
  }
}

/** Every AMI of this account with all these tags, any state, through all pages. */
export async function findImages(ec2: EC2Client, cfg: ResolvedAwsConfig, tags: Record<string, string>, extra: Filter[], opts?: OperationOptions): Promise<Image[]> {
  return awsCall(ec2, cfg, { operation: 'DescribeImages' }, opts, async (abortSignal) => {
    const filters = [{ Name: `tag:${TAG_MANAGED_BY}`, Values: [cfg.name] }, ...Object.entries(tags).map(([k, v]) => ({ Name: `tag:${k}`, Values: [v] })), ...extra];
    const all: Image[] = [];
    for await (const page of paginateDescribeImages({ client: ec2, pageSize: 500 }, { Owners: ['self'], Filters: filters }, { abortSignal })) all.push(...(page.Images ?? []));
    return all;
  });
}

/**
 * Deregisters the AMI, then deletes its snapshots (EC2 refuses to delete a snapshot an AMI still
 * uses, so the order is fixed). Either already gone is success: a prune or a bake's cleanup that
 * stopped half-way can simply run again.
 */
export async function removeImage(ec2: EC2Client, cfg: ResolvedAwsConfig, image: Image, opts?: OperationOptions): Promise<string[]> {
  const imageId = image.ImageId ?? '';
  try {
    await awsCall(ec2, cfg, { operation: 'DeregisterImage', imageId }, opts, (abortSignal) => ec2.send(new DeregisterImageCommand({ ImageId: imageId }), { abortSignal }));
  } catch (err) {
    if (!hasAwsCode(err, ...IMAGE_GONE)) throw err;
  }
  const snapshots = snapshotIdsOf(image);
  for (const id of snapshots) await deleteSnapshot(ec2, cfg, id, opts);
  cfg.logger.info({ imageId, snapshots }, 'AMI deregistered and its snapshots deleted');
  return snapshots;
}

async function deleteSnapshot(ec2: EC2Client, cfg: ResolvedAwsConfig, snapshotId: string, opts?: OperationOptions): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await awsCall(ec2, cfg, { operation: 'DeleteSnapshot' }, opts, (abortSignal) => ec2.send(new DeleteSnapshotCommand({ SnapshotId: snapshotId }), { abortSignal }));
      return;
    } catch (err) {
      if (hasAwsCode(err, ...SNAPSHOT_GONE)) return;
      const delay = SNAPSHOT_IN_USE_DELAYS_MS[attempt];
      if (!hasAwsCode(err, 'InvalidSnapshot.InUse') || delay === undefined || opts?.signal?.aborted) throw err;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

export interface AmiRetentionOptions {
  /** For tests: an SDK request handler instead of the network. */
  requestHandler?: RequestHandler;
}

export class AmiRetention {
  private readonly ec2: EC2Client;
  private readonly counter = new CallCounter();

  constructor(
    private readonly cfg: ResolvedAwsConfig,
    options: AmiRetentionOptions = {},
  ) {
    this.ec2 = createEc2Client(cfg, options.requestHandler);
    this.counter.attach(this.ec2);
  }

  callCounts(): Record<string, number> {
    return this.counter.callCounts();
  }

  /**
   * Keeps the newest `keep` available AMIs of the image, every AMI in `inUse` and every pending one
   * (a bake under way); removes the rest (older available ones, failed ones) with their snapshots.
   * Then deletes tagged snapshots whose AMI no longer exists: what an earlier prune left when it
   * stopped between a deregister and its snapshot deletions.
   */
  async prune(opts: PruneOptions): Promise<PruneResult> {
    if (!opts.name) throw new BerthError('validation_failed', 'prune needs the image name', 'Pass the name the AMIs were baked under (spec.name).');
    if (!Number.isInteger(opts.keep) || opts.keep < 0) {
      throw new BerthError('validation_failed', `keep must be a whole number ≥ 0 (got ${opts.keep})`, 'Say how many of the newest AMIs of the image stay.');
    }
    const call = { signal: opts.signal };
    const images = await findImages(this.ec2, this.cfg, { [TAG_IMAGE]: opts.name }, [], call);
    // Newest first; ISO dates compare as strings. The id breaks ties so the order is stable.
    const available = images.filter((i) => i.State === 'available').sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? '') || (a.ImageId ?? '').localeCompare(b.ImageId ?? ''));
    const keep = new Set<string>([...available.slice(0, opts.keep).map((i) => i.ImageId ?? ''), ...opts.inUse]);
    for (const image of images) if (image.State === 'pending') keep.add(image.ImageId ?? '');

    const removed: RemovedImage[] = [];
    // A snapshot a kept AMI also uses is never deleted (berth does not share them; others might).
    const keptSnapshots = new Set(images.filter((i) => keep.has(i.ImageId ?? '')).flatMap(snapshotIdsOf));
    for (const image of images) {
      if (!image.ImageId || keep.has(image.ImageId)) continue;
      const own = { ...image, BlockDeviceMappings: (image.BlockDeviceMappings ?? []).filter((m) => !keptSnapshots.has(m.Ebs?.SnapshotId ?? '')) };
      const snapshotIds = await removeImage(this.ec2, this.cfg, own, call);
      removed.push({ imageId: image.ImageId, name: image.Name, createdAt: image.CreationDate, snapshotIds });
    }

    const live = new Set(images.filter((i) => !removed.some((r) => r.imageId === i.ImageId)).map((i) => i.ImageId));
    const orphanSnapshots: string[] = [];
    for (const snapshot of await this.taggedSnapshots(opts.name, call)) {
      const amiId = SNAPSHOT_OF_AMI_RE.exec(snapshot.Description ?? '')?.[1];
      // Only snapshots provably made for an AMI that is gone: an unknown description stays.
      if (!snapshot.SnapshotId || !amiId || live.has(amiId) || keptSnapshots.has(snapshot.SnapshotId) || removed.some((r) => r.snapshotIds.includes(snapshot.SnapshotId ?? ''))) continue;
      try {
        await deleteSnapshot(this.ec2, this.cfg, snapshot.SnapshotId, call);
        orphanSnapshots.push(snapshot.SnapshotId);
      } catch (err) {
        // A snapshot of an AMI registered moments ago may look orphaned; EC2 refusing is the proof it is not.
        if (!hasAwsCode(err, 'InvalidSnapshot.InUse')) throw err;
        this.cfg.logger.debug({ snapshotId: snapshot.SnapshotId, err: errorMessage(err) }, 'snapshot still in use; kept');
      }
    }
    return { removed, kept: [...keep].filter((id) => images.some((i) => i.ImageId === id)).sort(), orphanSnapshots };
  }

  private taggedSnapshots(name: string, opts: OperationOptions): Promise<Snapshot[]> {
    return awsCall(this.ec2, this.cfg, { operation: 'DescribeSnapshots' }, opts, async (abortSignal) => {
      const all: Snapshot[] = [];
      const filters = [
        { Name: `tag:${TAG_MANAGED_BY}`, Values: [this.cfg.name] },
        { Name: `tag:${TAG_IMAGE}`, Values: [name] },
      ];
      for await (const page of paginateDescribeSnapshots({ client: this.ec2, pageSize: 500 }, { OwnerIds: ['self'], Filters: filters }, { abortSignal })) all.push(...(page.Snapshots ?? []));
      return all;
    });
  }

  close(): void {
    this.ec2.destroy();
  }
}
