/** The local driver: hosts as Linux namespaces on this machine. */
export { LocalDriver } from './local-driver.js';
export type { LocalDriverConfig, LocalDriverLogger } from './config.js';
export { countLocalLeftovers, findLocalLeftovers, type LeftoverCounts, type LocalLeftovers } from './leftovers.js';
export { machineNameServers } from './dns-forwarder.js';
