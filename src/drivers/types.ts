/**
 * The driver contract: the one narrow interface every backend (local namespaces, AWS) implements.
 * The control plane owns identity, state and the store; a driver only creates, finds and destroys
 * machines. Everything a driver needs to find a host again after a control-plane restart goes into
 * `driverData`, which the control plane stores verbatim (it must be JSON-serialisable).
 */
export interface HostResources {
  /** CPU limit in cores (may be fractional). */
  cpus?: number;
  /** Memory limit in MiB. */
  memoryMiB?: number;
  /** Maximum number of processes (and threads). */
  pids?: number;
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
}

export interface AgentBootstrap {
  hostId: string;
  /** Per-host secret; the control plane stores only its hash. */
  token: string;
  /** WebSocket URL the agent dials, e.g. `ws://10.213.0.1:7071/v1/agent`. */
  serverUrl: string;
}

export interface LaunchedHost {
  id: string;
  hostname: string;
  ip: string;
  driverData: Record<string, unknown>;
}

export type DriverHostState = 'running' | 'stopped' | 'gone';

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

export interface DriverInfo {
  name: string;
  /** Address the control plane must listen on so agents inside hosts can reach it. */
  agentListenHost: string;
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
  /** Idempotent: terminating a host that is already gone succeeds. Leaves nothing behind. */
  terminate(id: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<void>;
  describe(id: string, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<DescribedHost>;
  /** Every host of this driver that exists on the backend, known to the store or not. */
  list(opts?: OperationOptions): Promise<FoundHost[]>;
}
