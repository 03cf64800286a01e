/** Validation of HostResources fields shared by the API and pool specs (zod: kept out of the CLI's imports). */
import { z } from 'zod';
import { MACHINE_PORTS_MAX } from './resources.js';

/** HostResources.machinePorts: distinct TCP ports, at most MACHINE_PORTS_MAX. */
export const machinePorts = z
  .array(z.number().int().min(1).max(65535))
  .max(MACHINE_PORTS_MAX)
  .refine((ports) => new Set(ports).size === ports.length, 'each port at most once');
