/**
 * The driver contract: the one narrow interface every backend (local namespaces, AWS) implements.
 * The control plane owns identity, state and the store; a driver only creates, finds and destroys
 * machines. Everything a driver needs to find a host again after a control-plane restart goes into
 * `driverData`, which the control plane stores verbatim (it must be JSON-serialisable).
 */
import type { AgentMessage, ServerMessage } from '../protocol/messages.js';

/** A name service's answers by how: see DnsCounts in drivers/local/dns-forwarder.ts. */
export interface NameServiceCounts {
  local: number;
  relayed: number;
  refused: number;
  failed: number;
  tcpConnections: number;
}

export interface HostResources {
  /** CPU limit in cores (may be fractional). */
  cpus?: number;
  /** Memory limit in MiB. */
  memoryMiB?: number;
  /** Maximum number of processes (and threads). */
  pids?: number;
  /**
   * Local driver: the host's writable layer lives on a filesystem of its own of this size, so a host
   * that fills it gets ENOSPC and the machine's disk is untouched. Absent: the machine's disk, unbounded.
   * Between DISK_MIN_MIB and DISK_MAX_MIB (core/resources.ts).
   */
  diskMiB?: number;
  /**
   * Local driver: TCP ports of the machine (at the host's gateway address) the host may connect to,
   * besides its agent channel; every other port of the machine is closed to it where nftables is
   * installed (see drivers/local/machine-ports.ts). At most MACHINE_PORTS_MAX (core/resources.ts).
   */
  machinePorts?: number[];
  /**
   * Local driver: the host may open connections beyond the machine, under the machine's address
   * (NAT), except to the driver's denied ranges (by default private, shared and link-local ones).
   * Without it a host sends nothing past the machine. Needs nftables (drivers/local/egress.ts).
   */
  egress?: boolean;
  /**
   * Local driver, with egress: the host reaches only these IPv4 ranges, and the addresses of these
   * names (`packages.example.com`, `*.mirror.example.org`) once it resolves them through the machine, for as
   * long as the answer holds. See core/egress-allow.ts.
   */
  egressAllow?: string[];
}

/** A host as setNetworkGroups takes it. */
export interface GroupMember {
  id: string;
  driverData: Record<string, unknown>;
  /** Lower-case DNS labels its group mates may look it up by. */
  names?: string[];
}

export interface HostSpec {
  /** Assigned by the control plane, e.g. `h-3f9c2a1b7d`. Unique for the life of the store. */
  id: string;
  hostname: string;
  /** Local driver: a root filesystem directory; `/` means this machine's own root. */
  image: string;
  /**
   * Local driver: the image's layer directories (overlayfs format), top first, mounted read-only
   * over `image`. Empty or absent: the host sees `image` alone.
   */
  layers?: string[];
  tags: Record<string, string>;
  resources: HostResources;
  /** What the agent needs to enrol: written into the host at /etc/berth/agent.json (mode 0600). */
  agent: AgentBootstrap;
  /**
   * A pool's spare, launched ahead of any user: its processes get a small CPU share where the
   * backend has one, so under contention claimed hosts go first (see HostDriver.setStandby).
   */
  standby?: boolean;
}

export interface AgentBootstrap {
  hostId: string;
  /** Per-host secret; the control plane stores only its hash. */
  token: string;
  /** WebSocket URL the agent dials, e.g. `ws://10.213.0.1:7071/v1/agent` (`wss://` with agent TLS). */
  serverUrl: string;
  /** The CA certificates (PEM) the agent trusts for a `wss://` serverUrl; absent: the system's roots. */
  ca?: string;
}

/** Where agents dial and what they trust there; every host's AgentBootstrap is made from it. */
export interface AgentChannel {
  url: string;
  ca?: string;
}

export function agentBootstrap(channel: AgentChannel, hostId: string, token: string): AgentBootstrap {
  return { hostId, token, serverUrl: channel.url, ...(channel.ca ? { ca: channel.ca } : {}) };
}

export interface LaunchedHost {
  id: string;
  hostname: string;
  ip: string;
  driverData: Record<string, unknown>;
}

export type DriverHostState = 'running' | 'stopped' | 'gone';

/** What a host uses now (HostDriver.stats). A field is absent when the backend does not measure it. */
export interface HostStats {
  /** CPU time its processes used since it booted, in seconds. */
  cpuSeconds?: number;
  memoryBytes?: number;
  /** Absent: no limit. */
  memoryLimitBytes?: number;
  pids?: number;
  pidsLimit?: number;
  /** Of its disk of its own (HostResources.diskMiB); absent for a host without one. */
  diskUsedBytes?: number;
  diskSizeBytes?: number;
}

export interface DescribedHost {
  id: string;
  state: DriverHostState;
  ip?: string;
  /** Why the state is what it is, for humans (e.g. "init process 4242 exited"). */
  reason?: string;
}

export interface FoundHost {
  id: string;
  driverData: Record<string, unknown>;
}

export interface OperationOptions {
  signal?: AbortSignal;
}

/** How a host the backend launched by itself (a pool's group) becomes a berth host: see PoolFleet. */
export interface FleetEnrolment {
  /** Where its agent asks for its identity: the agent channel's enrolment URL. */
  url: string;
  tenantId: string;
  pool: string;
  /** The pool's enrolment secret; it only lets an instance of the pool's own group enrol. */
  token: string;
  /** The pool's generation (its template): a machine enrolling after a change says which it boots. */
  generation: number;
  /** What the agent trusts for an https:// url (AgentBootstrap's ca). */
  ca?: string;
}

export interface FleetPool {
  name: string;
  /** Hosts the pool's group keeps running (ready or on their way). */
  size: number;
  /** Root filesystem or machine image its hosts boot (AWS: `/` = the driver's AMI, or `ami-…`). */
  image: string;
  tags: Record<string, string>;
  resources: HostResources;
  enrolment: FleetEnrolment;
  /** The pool's own settings for the driver (AWS: instance type, subnets...), over the driver's. */
  settings?: Record<string, unknown>;
}

export interface TerminateOptions extends OperationOptions {
  /** Fleet hosts: the host's group starts a replacement (a pool's quarantined host), else it shrinks. */
  replace?: boolean;
}

/**
 * Optional part of a driver: a backend that launches a pool's hosts itself and keeps their number
 * (an AWS Auto Scaling group, as in the seeds). The control plane then never launches pool hosts:
 * each machine the backend starts enrols with the pool's enrolment secret and the control plane
 * admits it as a host; a claim moves it from the pool's group into the claiming group's.
 */
export interface PoolFleet {
  /** Makes the pool's group keep `size` hosts booting `image`, each enrolling with `enrolment`. Idempotent. */
  ensurePool(pool: FleetPool, opts?: OperationOptions): Promise<void>;
  /**
   * A machine asks to enrol as a host of `pool`: its address and driverData when it is one of the
   * pool's group, else a BerthError('forbidden').
   */
  admit(pool: string, machineId: string, opts?: OperationOptions): Promise<{ ip: string; driverData: Record<string, unknown> }>;
  /**
   * The backend part of a claim: the host leaves its pool's group (which replaces it) for
   * `group`'s. Returns the host's driverData from now on (the control plane stores it before
   * anything else happens to the host) and the backend calls it waited for, by operation.
   */
  moveToGroup(pool: string, group: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<{ driverData: Record<string, unknown>; calls: Record<string, number> }>;
  /** The pool is gone: its group and the hosts still in it go too. */
  removePool(pool: string, opts?: OperationOptions): Promise<void>;
  /**
   * Optional: machines of the pool's group that will not ask to enrol (they run no berth agent:
   * their commands go through the backend's agent), for the control plane to admit itself.
   */
  discover?(pool: FleetPool, opts?: OperationOptions): Promise<string[]>;
  /** Optional: removes claiming groups' backend groups that hold nothing and are not in `keep`. */
  sweepGroups?(keep: Set<string>, opts?: OperationOptions): Promise<string[]>;
  /**
   * Optional (`berth down`): the pool's group keeps no machine, and launches none, until the next
   * ensurePool sizes it again. Whether it had a group.
   */
  drainPool?(pool: string, opts?: OperationOptions): Promise<boolean>;
  /**
   * Optional (`berth down --purge`, once no host is left): removes what the driver made for these
   * pools and for claiming groups on the backend (groups, templates). Returns what is gone now.
   */
  purge?(pools: string[], opts?: OperationOptions): Promise<string[]>;
}

/** Where a backend's agents report, as berth's agents report through the agent channel. */
export interface BackendAgentHandlers {
  onHello(hostId: string, hello: Extract<AgentMessage, { type: 'hello' }>): void;
  onMessage(hostId: string, msg: AgentMessage): void;
  onDisconnect(hostId: string): void;
}

/**
 * Optional part of a driver: hosts whose commands run through the backend's own agent (the SSM
 * agent on EC2) instead of berth's. To the control plane such a host's agent looks like berth's:
 * it says hello once the backend's agent is online, takes `run` and `cancel`, and reports
 * `accepted` and `result` in the protocol's own messages, so Run Command's statuses, deadlines
 * and at-most-once delivery hold the same. Such hosts have no service supervisor.
 */
export interface BackendAgents {
  /** Whether a host launched or admitted with this driverData runs its commands through the backend. */
  handles(driverData: Record<string, unknown>): boolean;
  /** How long such a host may take from its launch until its agent is online (SSM registration is slow). */
  readonly bootTimeoutMs: number;
  /** Where reports go; called once, before any attach. */
  start(handlers: BackendAgentHandlers): void;
  /** Follows the host's backend agent (until detach): hello when it is online, disconnect when it is not. */
  attach(host: { id: string; tenantId: string; driverData: Record<string, unknown> }): void;
  detach(hostId: string): void;
  isAttached(hostId: string): boolean;
  isConnected(hostId: string): boolean;
  session(hostId: string): { tenantId: string } | undefined;
  connectedHostIds(): string[];
  /** false when the agent is not connected or the backend cannot carry the message (services). */
  send(hostId: string, msg: ServerMessage): boolean;
  close(): Promise<void>;
}

/** One finding of `berth doctor` about where hosts run (this machine, an AWS account). */
export interface DoctorCheck {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
  /** What to do, when the status is not ok. */
  hint?: string;
}

export interface DriverInfo {
  name: string;
  /** Address the control plane must listen on so agents inside hosts can reach it. */
  agentListenHost: string;
  /** How long a host may take from its launch until its agent enrols (a VM boots slower than a namespace); the control plane's default when absent. */
  bootTimeoutMs?: number;
}

export interface HostDriver {
  readonly name: string;
  /**
   * Checks the machine can run hosts and prepares shared resources (bridge, cgroup parents).
   * Throws BerthError('driver_unavailable') with a hint when it cannot.
   */
  init(opts?: OperationOptions): Promise<DriverInfo>;
  launch(spec: HostSpec, opts?: OperationOptions): Promise<LaunchedHost>;
  /**
   * Optional: makes a running host a fresh one from `spec` (same id; new files, processes and agent
   * credentials), cheaper than terminate + launch. Drivers that cannot leave it out.
   */
  reset?(spec: HostSpec, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<LaunchedHost>;
  /**
   * Optional: writes what the host changed in its image (its writable layer, in overlayfs format:
   * whiteouts for removed files) into `dest`, which must not exist. With `stop`, the host's
   * processes are stopped first and the layer is moved, not copied; the host must then be
   * terminated. What the driver itself put into the host at boot (its identity files, agent
   * credentials, mount points) is left out.
   */
  captureLayer?(id: string, driverData: Record<string, unknown>, dest: string, opts: OperationOptions & { stop: boolean }): Promise<void>;
  /**
   * Optional: a standby host (HostSpec.standby) starts or stops yielding the CPU to serving hosts;
   * a claim makes its host serve before running its init. Synchronous and cheap (a local setting);
   * throws only when the setting cannot be written.
   */
  setStandby?(id: string, driverData: Record<string, unknown>, standby: boolean): void;
  /**
   * Optional: which hosts reach each other over the network. Hosts of one group reach each other;
   * no host reaches a host outside its group (the machine and its control plane stay reachable).
   * Each group given is the whole truth for its members; with `all`, the groups given are the whole
   * truth (hosts in none reach no other host). A member whose driverData is stale (the host was
   * reset or terminated since) is left out. A driver without it keeps hosts apart by its own means.
   * Terminate and reset take a host out of its group themselves. (Local: routing rules per host,
   * local/reachability.ts; AWS: a security group per group, aws/network-groups.ts.)
   * A member's `names` (DNS labels: its hostname, its service) resolve, for its group mates, to its
   * address where the driver answers DNS (the local driver: dns-forwarder.ts).
   */
  setNetworkGroups?(groups: GroupMember[][], opts?: OperationOptions & { all?: boolean }): Promise<void>;
  /** Optional: what a running host uses now (CPU time, memory, processes, disk), read cheaply enough to poll. */
  stats?(id: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<HostStats>;
  /** Idempotent: terminating a host that is already gone succeeds. Leaves nothing behind. */
  terminate(id: string, driverData: Record<string, unknown>, opts?: TerminateOptions): Promise<void>;
  describe(id: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<DescribedHost>;
  /** Every host of this driver that exists on the backend, known to the store or not. */
  list(opts?: OperationOptions): Promise<FoundHost[]>;
  /** Present when the backend launches pool hosts itself (see PoolFleet). */
  readonly fleet?: PoolFleet;
  /** Present when some hosts run commands through the backend's own agent (see BackendAgents). */
  readonly agents?: BackendAgents;
  /**
   * Optional: refuses (a validation_failed BerthError) resources this driver would not honour, before
   * anything is recorded: a restriction silently ignored would be worse than an error.
   */
  checkResources?(resources: HostResources): void;
  /** Optional: what the driver's name service for hosts answered so far (the local driver's relay), by how; undefined before it started. */
  nameServiceCounts?(): NameServiceCounts | undefined;
  /**
   * Optional: removes what `init` set up on the machine (the local driver's bridge, firewall tables,
   * cgroup parents, mounted image views), once no host of this driver is left: `berth down`. While
   * one is, it removes nothing and returns false. A later `init` sets it all up again.
   */
  teardown?(): Promise<boolean>;
  /** Optional: stops what the driver serves from this process (the local driver's DNS for hosts); the server is stopping. Hosts keep running. */
  stopServing?(): Promise<void>;
  /** A cloud driver's API calls so far, by operation (retries not counted). */
  callCounts?(): Record<string, number>;
  /** The same with every retry counted. */
  attemptCounts?(): Record<string, number>;
}
