/**
 * What `berth image build` needs of the AWS driver (src/images/ami-builds.ts): the bake and the
 * retention of AMIs, and the boot script that makes a builder start a berth agent with a host's
 * identity — the one the driver's own hosts run (user-data.ts). Loaded only on the AWS driver.
 */
import { createHash } from 'node:crypto';
import type { AgentIdentity } from '../../protocol/messages.js';
import type { HostDriver } from '../types.js';
import { AMI_IDENTITY_CHECK_SCRIPT, AMI_IDENTITY_STRIP_SCRIPT } from './ami-identity.js';
import { AmiBaker, type AmiBakeOptions, type AmiBakeResult, type AmiBakeSpec, type BuilderRunner } from './ami-bake.js';
import { AmiRetention, type PruneOptions, type PruneResult } from './ami-retention.js';
import type { ResolvedAwsConfig } from './config.js';
import { buildUserData } from './user-data.js';

export interface AmiBackend {
  /** The driver's AMI: what an image whose parent is `/` is baked from. */
  readonly driverImageId: string;
  /** Of the identity strip and check scripts: part of every spec digest, so a changed script bakes anew. */
  readonly identityDigest: string;
  bake(spec: AmiBakeSpec, runner: BuilderRunner, opts: AmiBakeOptions): Promise<AmiBakeResult>;
  prune(opts: PruneOptions): Promise<PruneResult>;
  /** The boot script of a builder whose agent connects as the host `agent.hostId`. */
  builderUserData(hostname: string, tags: Record<string, string>, agent: AgentIdentity): string;
  close(): void;
}

/** The driver's AMI side, or undefined when the driver is not AWS's. */
export function amiBackendFor(driver: HostDriver): AmiBackend | undefined {
  const aws = driver as HostDriver & { resolvedConfig?: () => ResolvedAwsConfig };
  if (driver.name !== 'aws' || typeof aws.resolvedConfig !== 'function') return undefined;
  const cfg = aws.resolvedConfig();
  // moto (and maybe other emulators) cannot tag snapshots in CreateImage; an endpoint of one's
  // own is taken as one. On AWS's endpoints the snapshots are tagged as they are made.
  const baker = new AmiBaker(cfg, { tagSnapshotsAtCreate: cfg.endpoint === undefined });
  const retention = new AmiRetention(cfg);
  return {
    driverImageId: cfg.imageId,
    identityDigest: createHash('sha256').update(`${AMI_IDENTITY_STRIP_SCRIPT}\n${AMI_IDENTITY_CHECK_SCRIPT}`).digest('hex'),
    bake: (spec, runner, opts) => baker.bake(spec, runner, opts),
    prune: (opts) => retention.prune(opts),
    builderUserData: (hostname, tags, agent) => buildUserData({ id: agent.hostId, hostname, image: cfg.imageId, tags, resources: { cpus: 1, memoryMiB: 1024, pids: 512 }, agent }, cfg.agentCommand),
    close: () => {
      baker.close();
      retention.close();
    },
  };
}
