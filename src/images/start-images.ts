/** The server's image service over the local image store under `<dataDir>/images`. */
import type { CommandService } from '../commands/command-service.js';
import type { LiveOutput } from '../commands/live-output.js';
import { resolveTools } from '../drivers/local/preflight.js';
import { runCommand } from '../drivers/local/proc.js';
import type { HostService } from '../hosts/host-service.js';
import type { ServerConfig } from '../server/server-config.js';
import type { ImagesRepo } from '../store/images-repo.js';
import type { PoolsRepo } from '../store/pools-repo.js';
import { ArtifactCache } from './artifacts.js';
import { BakeHosts } from './bake-hosts.js';
import { BakeMounts } from './bake-mounts.js';
import { ImageBuilder } from './builder.js';
import { treeDigest } from './digests.js';
import { ImageService } from './image-service.js';
import { LayerStore, umountWith } from './layer-store.js';

/** The local image store under `<dataDir>/images`: layers, artifact cache, bake views. */
export async function startImages(
  config: ServerConfig,
  dataDir: string,
  deps: { hosts: HostService; commands: CommandService; live: LiveOutput; poolsRepo: PoolsRepo; imagesRepo: ImagesRepo; log: (line: string) => void },
): Promise<ImageService> {
  const dir = `${dataDir}/images`;
  const tools = resolveTools();
  const run = config.toolRunner ?? runCommand;
  const layers = new LayerStore(dir, umountWith(run, tools.umount));
  await layers.recover(deps.log);
  let agentDigest: Promise<string> | undefined;
  const builder = new ImageBuilder({
    layers,
    artifacts: new ArtifactCache(`${dir}/artifacts`),
    mounts: new BakeMounts(`${dir}/bases`, tools, run),
    bakeHosts: new BakeHosts({ hosts: deps.hosts, commands: deps.commands, live: deps.live, log: deps.log }),
    agentDir: config.agentDir,
    agentDigest: () => (agentDigest ??= treeDigest(config.agentDir)),
    run,
  });
  return new ImageService({ images: deps.imagesRepo, pools: deps.poolsRepo, layers, builder, hosts: deps.hosts, log: deps.log });
}
