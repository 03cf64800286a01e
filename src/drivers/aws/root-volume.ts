/**
 * A host's disk on AWS (HostResources.diskMiB): the size of its root EBS volume, rounded up to whole
 * GiB (EC2 sizes volumes in GiB). The AMI says which device is its root and how large that
 * volume's snapshot is; a disk smaller than the snapshot is refused here, with the size to ask for,
 * before EC2 would refuse the launch (InvalidBlockDeviceMapping). An AMI is looked up once per
 * driver: its root never changes.
 */
import { DescribeImagesCommand, type BlockDeviceMapping, type EC2Client, type Image } from '@aws-sdk/client-ec2';
import { BerthError } from '../../core/errors.js';
import type { OperationOptions } from '../types.js';
import type { ResolvedAwsConfig } from './config.js';
import { awsCall } from './sdk.js';

export function volumeGiB(diskMiB: number): number {
  return Math.ceil(diskMiB / 1024);
}

/** The block device mapping that gives an instance of `image` a root volume of `diskMiB`. */
export function rootVolumeMapping(image: Image, diskMiB: number): BlockDeviceMapping {
  const device = image.RootDeviceName;
  if (!device || image.RootDeviceType !== 'ebs') {
    throw new BerthError('validation_failed', `image ${image.ImageId ?? '?'} has no EBS root volume, so a host's disk size cannot be set`, 'Leave the disk size out (diskMiB, --disk), or use an EBS-backed AMI.', { imageId: image.ImageId });
  }
  const snapshotGiB = image.BlockDeviceMappings?.find((m) => m.DeviceName === device)?.Ebs?.VolumeSize ?? 0;
  const size = volumeGiB(diskMiB);
  if (size < snapshotGiB) {
    throw new BerthError(
      'validation_failed',
      `a disk of ${diskMiB} MiB is smaller than the root volume of image ${image.ImageId ?? '?'} (${snapshotGiB} GiB)`,
      `Ask for at least ${snapshotGiB * 1024} MiB, or leave the disk size out to get the image's own.`,
      { imageId: image.ImageId, diskMiB, imageRootGiB: snapshotGiB },
    );
  }
  return { DeviceName: device, Ebs: { VolumeSize: size, DeleteOnTermination: true } };
}

export class RootVolumes {
  private readonly images = new Map<string, Promise<Image>>();

  constructor(
    private readonly ec2: EC2Client,
    private readonly cfg: ResolvedAwsConfig,
  ) {}

  /** The mappings for a launch of `imageId` with a disk of `diskMiB`; none when no size is asked for. */
  async mappings(imageId: string, diskMiB: number | undefined, opts?: OperationOptions): Promise<BlockDeviceMapping[] | undefined> {
    if (diskMiB === undefined) return undefined;
    return [rootVolumeMapping(await this.image(imageId, opts), diskMiB)];
  }

  private image(imageId: string, opts?: OperationOptions): Promise<Image> {
    let found = this.images.get(imageId);
    if (!found) {
      found = awsCall(this.ec2, this.cfg, { operation: 'DescribeImages', imageId }, opts, (abortSignal) => this.ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] }), { abortSignal })).then((out) => {
        const image = out.Images?.[0];
        if (!image) throw new BerthError('image_not_found', `image ${imageId} does not exist in region ${this.cfg.region}`, 'Check the AMI id and the region.', { imageId });
        return image;
      });
      // A failed lookup is not remembered: the next launch asks again.
      found.catch(() => this.images.delete(imageId));
      this.images.set(imageId, found);
    }
    return found;
  }
}
