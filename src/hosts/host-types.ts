/**
 * What the host service works with: launch requests, the image a host boots, a host registered in
 * the store but not yet started, and the service's dependencies (see host-service.ts).
 */
import type { AgentChannel, HostDriver, HostResources, HostStats } from '../drivers/types.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import type { HostRow } from '../store/schema.js';

export interface LaunchRequest {
  image?: string | undefined;
  hostname?: string | undefined;
  tags?: Record<string, string> | undefined;
  resources?: HostResources | undefined;
}

/** What a host boots from, as resolved by the control plane's images. */
export interface BootImage {
  /** As users name it: an image name, or a root filesystem path. */
  image: string;
  /** The build of a named image; null for a plain root filesystem. */
  imageId: string | null;
  /** Root filesystem directory at the bottom. */
  base: string;
  /** Layer directories over it, top first. */
  layers: string[];
}

export interface ImageResolver {
  /** The current build of an image name, or a root filesystem path as it is. Throws image_not_found. */
  resolve(tenantId: string, ref: string): Promise<BootImage>;
}

export interface RegisteredHost {
  id: string;
  tenantId: string;
  token: string;
  hostname: string;
  boot: BootImage;
  resources: HostResources;
  tags: Record<string, string>;
  /** Set when the host's agent is a backend's (SSM), which may take longer to come online than berth's. */
  bootTimeoutMs?: number;
  /** A pool's spare being warmed: it yields the CPU to serving hosts until a claim (see serve()). */
  standby?: boolean;
}

export interface AgentPresence {
  isConnected(hostId: string): boolean;
  disconnect(hostId: string, reason: string): void;
}

export interface HostServiceDeps {
  hosts: HostsRepo;
  driver: HostDriver;
  agents: AgentPresence;
  /** Where agents dial, as seen from inside a host, and what they trust there. */
  agentChannel: AgentChannel;
  defaultImage: string;
  defaultResources: HostResources;
  images: ImageResolver;
  /** Called when a host is gone for good, so its open work can be settled. */
  onHostGone: (hostId: string, detail: string) => Promise<void>;
  log: (line: string) => void;
  /** A host whose agent has not enrolled by then is failed and cleaned up. */
  bootTimeoutMs?: number;
  /** After a host's tags changed: its agent and its stack's services follow. */
  onTagsChanged?: (row: HostRow) => Promise<void>;
  /** A user's reset of a host that stays in its group is over: it reaches its group's hosts again (the driver's reset cut it off). */
  onResetInGroup?: (row: HostRow) => Promise<void>;
  /** Asks a host's agent what the machine uses, for a driver that cannot say (agent-stats.ts). */
  agentStats?: { ask(hostId: string): Promise<HostStats> };
  /** A host's machine exists (launched or admitted): a backend agent of the driver may speak for it. */
  onMachine?: (host: { id: string; tenantId: string; driverData: Record<string, unknown> }) => void;
}
