/**
 * The driver's launch template, `<name>-hosts`: what every host has in common (AMI, instance type,
 * instance profile, IMDSv2). Ensured at init, idempotently and safely when two servers init at once;
 * when the configuration changed since it was made, a new version carries the change, and launches
 * use `$Latest`.
 */
import {
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  DeleteLaunchTemplateCommand,
  DescribeLaunchTemplateVersionsCommand,
  type _InstanceType,
  type BlockDeviceMapping,
  type EC2Client,
  type RequestLaunchTemplateData,
  type ResponseLaunchTemplateData,
} from '@aws-sdk/client-ec2';
import type { OperationOptions } from '../types.js';
import { launchTemplateName, TAG_MANAGED_BY, type ResolvedAwsConfig } from './config.js';
import { hasAwsCode } from './errors.js';
import { awsCall } from './sdk.js';

const TEMPLATE_NOT_FOUND = ['InvalidLaunchTemplateName.NotFoundException', 'InvalidLaunchTemplateId.NotFound', 'InvalidLaunchTemplateName.NotFound'];
const TEMPLATE_EXISTS = 'InvalidLaunchTemplateName.AlreadyExistsException';

/**
 * A template other than the driver's own: a pool's, whose instances are launched by its Auto
 * Scaling group and so carry everything in the template (boot script, security groups).
 */
export interface TemplateVariant {
  name: string;
  imageId?: string;
  instanceType?: string;
  instanceProfile?: string;
  securityGroupIds?: string[];
  /** The boot script, plain text (base64-encoded here). */
  userData?: string;
  /** The root volume's size, when the pool's hosts ask for a disk size (root-volume.ts). */
  rootVolume?: BlockDeviceMapping;
}

export function templateData(cfg: ResolvedAwsConfig, variant?: TemplateVariant): RequestLaunchTemplateData {
  const profile = variant?.instanceProfile ?? cfg.instanceProfile;
  const securityGroupIds = variant?.securityGroupIds ?? cfg.securityGroupIds;
  return {
    ImageId: variant?.imageId ?? cfg.imageId,
    ...(variant?.userData !== undefined ? { UserData: Buffer.from(variant.userData).toString('base64') } : {}),
    // RunInstances names them per launch; an Auto Scaling group's launches take them from here.
    ...(variant && securityGroupIds.length > 0 ? { SecurityGroupIds: securityGroupIds } : {}),
    InstanceType: (variant?.instanceType ?? cfg.instanceType) as _InstanceType, // EC2 validates it; new types must not need a berth release
    ...(profile ? { IamInstanceProfile: profile.startsWith('arn:') ? { Arn: profile } : { Name: profile } } : {}),
    ...(variant?.rootVolume?.DeviceName && variant.rootVolume.Ebs
      ? { BlockDeviceMappings: [{ DeviceName: variant.rootVolume.DeviceName, Ebs: { VolumeSize: variant.rootVolume.Ebs.VolumeSize, DeleteOnTermination: true } }] }
      : {}),
    // IMDSv2 only: a process in the host cannot be tricked (SSRF) into reading the instance's credentials.
    MetadataOptions: { HttpTokens: 'required', HttpEndpoint: 'enabled', HttpPutResponseHopLimit: 1 },
  };
}

function matches(want: RequestLaunchTemplateData, have: ResponseLaunchTemplateData | undefined): boolean {
  if (!have) return false;
  const profile = (p: { Arn?: string | undefined; Name?: string | undefined } | undefined): string => p?.Arn ?? p?.Name ?? '';
  const groups = (ids: string[] | undefined): string => [...(ids ?? [])].sort().join(',');
  const volumes = (mappings: { DeviceName?: string | undefined; Ebs?: { VolumeSize?: number | undefined } | undefined }[] | undefined): string =>
    (mappings ?? []).map((m) => `${m.DeviceName ?? ''}:${m.Ebs?.VolumeSize ?? ''}`).join(',');
  return (
    want.ImageId === have.ImageId &&
    want.InstanceType === have.InstanceType &&
    profile(want.IamInstanceProfile) === profile(have.IamInstanceProfile) &&
    have.MetadataOptions?.HttpTokens === 'required' &&
    (want.UserData ?? '') === (have.UserData ?? '') &&
    groups(want.SecurityGroupIds) === groups(have.SecurityGroupIds) &&
    volumes(want.BlockDeviceMappings) === volumes(have.BlockDeviceMappings)
  );
}

/** Makes sure the template exists with the configuration's data; returns its name. */
/** Deletes a launch template (all its versions); false when there was none. 1 call. */
export async function deleteLaunchTemplate(client: EC2Client, cfg: ResolvedAwsConfig, name: string, opts?: OperationOptions): Promise<boolean> {
  try {
    await awsCall(client, cfg, { operation: 'DeleteLaunchTemplate' }, opts, (abortSignal) => client.send(new DeleteLaunchTemplateCommand({ LaunchTemplateName: name }), { abortSignal }));
    return true;
  } catch (err) {
    if (hasAwsCode(err, ...TEMPLATE_NOT_FOUND)) return false;
    throw err;
  }
}

export async function ensureLaunchTemplate(client: EC2Client, cfg: ResolvedAwsConfig, opts?: OperationOptions, variant?: TemplateVariant): Promise<string> {
  const name = variant?.name ?? launchTemplateName(cfg);
  const want = templateData(cfg, variant);
  const latest = await awsCall(client, cfg, { operation: 'DescribeLaunchTemplateVersions' }, opts, (abortSignal) =>
    client.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: name, Versions: ['$Latest'] }), { abortSignal }),
  ).catch((err: unknown) => {
    if (hasAwsCode(err, ...TEMPLATE_NOT_FOUND)) return undefined;
    throw err;
  });
  const version = latest?.LaunchTemplateVersions?.[0];
  if (!version) {
    try {
      await awsCall(client, cfg, { operation: 'CreateLaunchTemplate', ...(cfg.instanceProfile ? { instanceProfile: cfg.instanceProfile } : {}) }, opts, (abortSignal) =>
        client.send(
          new CreateLaunchTemplateCommand({
            LaunchTemplateName: name,
            LaunchTemplateData: want,
            TagSpecifications: [{ ResourceType: 'launch-template', Tags: [{ Key: TAG_MANAGED_BY, Value: cfg.name }] }],
          }),
          { abortSignal },
        ),
      );
      cfg.logger.info({ launchTemplate: name }, 'launch template created');
    } catch (err) {
      // Another server created it between our describe and create: theirs has the same data.
      if (!hasAwsCode(err, TEMPLATE_EXISTS)) throw err;
    }
    return name;
  }
  if (!matches(want, version.LaunchTemplateData)) {
    await awsCall(client, cfg, { operation: 'CreateLaunchTemplateVersion' }, opts, (abortSignal) =>
      client.send(new CreateLaunchTemplateVersionCommand({ LaunchTemplateName: name, LaunchTemplateData: want, VersionDescription: 'berth: configuration changed' }), { abortSignal }),
    );
    cfg.logger.info({ launchTemplate: name, previousVersion: version.VersionNumber }, 'launch template updated to the configuration');
  }
  return name;
}
