/** Limits on what a host may be given (HostResources), shared by the API, pool specs and the CLI. */

/** The sizes a host's disk (HostResources.diskMiB) may take: room for a system's writes, at most 1 TiB. */
export const DISK_MIN_MIB = 16;
export const DISK_MAX_MIB = 1024 * 1024;
