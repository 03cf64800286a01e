/** The server's image service over the local image store under `<dataDir>/images`, and AMI builds on AWS. */
import type { CommandService } from '../commands/command-service.js';
import type { LiveOutput } from '../commands/live-output.js';
import { resolveTools } from '../drivers/local/preflight.js';
import { runCommand } from '../drivers/local/proc.js';
import type { HostService } from '../hosts/host-service.js';
import type { ServerConfig } from '../server/server-config.js';
import type { ImagesRepo } from '../store/images-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import { AmiBuilds, type AmiBuildsDeps } from './ami-builds.js';
import { ArtifactCache } from './artifacts.js';
import { BakeHosts } from './bake-hosts.js';
import { BakeMounts } from './bake-mounts.js';
import { ImageBuilder } from './builder.js';
import { treeDigest } from './digests.js';
import { ImageService } from './image-service.js';
import { LayerStore, umountWith } from './layer-store.js';

/** The stores' own collections (images, layers, artifacts; slugs too): their grace, and how often. */
export const DEFAULT_GC_AFTER_MS = 24 * 3600_000;
export const GC_EVERY_MS = 3600_000;

/** The local image store under `<dataDir>/images`: layers, artifact cache, bake views. */
export async function startImages(
  config: ServerConfig,
  dataDir: string,
  deps: { hosts: HostService; commands: CommandService; live: LiveOutput; poolsRepo: PoolsRepo; imagesRepo: ImagesRepo; log: (line: string) => void; aws?: AwsImageDeps },
): Promise<ImageService> {
  const dir = `${dataDir}/images`;
  const tools = resolveTools();
  const run = config.toolRunner ?? runCommand;
  const layers = new LayerStore(dir, umountWith(run, tools.umount));
  await layers.recover(deps.log);
  let agentDigest: Promise<string> | undefined;
  const artifacts = new ArtifactCache(`${dir}/artifacts`);
  const bakeHosts = new BakeHosts({ hosts: deps.hosts, commands: deps.commands, live: deps.live, log: deps.log });
  const builder = new ImageBuilder({
    layers,
    artifacts,
    mounts: new BakeMounts(`${dir}/bases`, tools, run),
    bakeHosts,
    agentDir: config.agentDir,
    agentDigest: () => (agentDigest ??= treeDigest(config.agentDir)),
    run,
  });
  // The driver decides what an image is: on AWS an AMI (the AWS SDK is loaded only then).
  const backend = deps.aws && config.driver.name === 'aws' ? (await import('../drivers/aws/ami-backend.js')).amiBackendFor(config.driver) : undefined;
  const ami =
    backend && deps.aws
      ? new AmiBuilds({ ...deps.aws, ...config.amiImages, backend, images: deps.imagesRepo, hosts: deps.hosts, bakeHosts, artifacts, stageDir: `${dir}/ami-inputs`, log: deps.log })
      : undefined;
  const gcAfterMs = config.imageGcAfterMs ?? DEFAULT_GC_AFTER_MS;
  const autoGc = gcAfterMs > 0 && config.runLoops !== false ? { layerAgeMs: gcAfterMs, everyMs: Math.min(gcAfterMs, GC_EVERY_MS) } : undefined;
  return new ImageService({ images: deps.imagesRepo, pools: deps.poolsRepo, layers, artifacts, builder, hosts: deps.hosts, log: deps.log, ...(ami ? { ami } : {}), ...(autoGc ? { autoGc } : {}) });
}

/** What AMI builds need of the server besides the image store (see AmiBuildsDeps). */
export type AwsImageDeps = Pick<AmiBuildsDeps, 'hostsRepo' | 'publishTar' | 'fileUrl' | 'agentChannel'>;
