/** Validation of HostResources fields shared by the API and pool specs (zod: kept out of the CLI's imports). */
import { z } from 'zod';
import { MACHINE_PORTS_MAX } from './resources.js';
import { EGRESS_ALLOW_MAX, parseEgressAllow } from './egress-allow.js';
import { errorMessage } from './errors.js';

/** HostResources.machinePorts: distinct TCP ports, at most MACHINE_PORTS_MAX. */
export const machinePorts = z
  .array(z.number().int().min(1).max(65535))
  .max(MACHINE_PORTS_MAX)
  .refine((ports) => new Set(ports).size === ports.length, 'each port at most once');

/** HostResources.egressAllow: IPv4 ranges and DNS names (egress-allow.ts). */
export const egressAllow = z
  .array(z.string())
  .max(EGRESS_ALLOW_MAX)
  .superRefine((entries, ctx) => {
    try {
      parseEgressAllow(entries);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: errorMessage(err) });
    }
  });

/** An allow list narrows egress: without egress it would mean nothing, so it is refused. */
export function egressAllowNeedsEgress(resources: { egress?: boolean | undefined; egressAllow?: string[] | undefined }): boolean {
  return !resources.egressAllow?.length || resources.egress === true;
}

export const EGRESS_ALLOW_NEEDS_EGRESS = { message: 'egressAllow narrows egress: give egress: true with it', path: ['egressAllow'] };
