/** Limits on what a host may be given (HostResources), shared by the API, pool specs and the CLI. */

/** The sizes a host's disk (HostResources.diskMiB) may take: room for a system's writes, at most 1 TiB. */
export const DISK_MIN_MIB = 16;
export const DISK_MAX_MIB = 1024 * 1024;

/** How many of the machine's ports one host may be granted (HostResources.machinePorts). */
export const MACHINE_PORTS_MAX = 64;

