/** Runs a pool's warm-up, health check or a claim's init on one host, and says plainly why it failed. */
import { BerthError } from '../core/errors.js';
import type { CommandService } from '../commands/command-service.js';
import type { CommandView } from '../commands/views.js';

export type CheckKind = 'warm-up' | 'health check' | 'init';

export class CheckFailed extends BerthError {
  constructor(
    readonly kind: CheckKind,
    readonly hostId: string,
    what: string,
    /** The host could not run it at all (agent away, not delivered): another host may do better. */
    readonly hostFault: boolean,
    details: { commandId?: string; status?: string; exitCodes?: number[] } = {},
  ) {
    const hint = details.commandId ? `See the command with \`berth cmd show ${details.commandId}\`.` : 'Check the host with `berth host ls`.';
    super('claim_failed', `${kind} on host ${hostId} ${what}`, hint, { hostId, ...details });
  }
}

const HOST_FAULTS = new Set(['Undeliverable', 'DeliveryTimedOut', 'Cancelled', 'Pending', 'InProgress']);

export async function runChecks(
  commands: CommandService,
  tenantId: string,
  hostId: string,
  kind: CheckKind,
  script: string[],
  opts: { timeoutS: number; env?: Record<string, string>; signal?: AbortSignal },
): Promise<CommandView> {
  const timeoutS = Math.max(1, Math.ceil(opts.timeoutS));
  let view: CommandView;
  try {
    view = await commands.send(
      tenantId,
      {
        targets: { hostIds: [hostId] },
        parameters: { commands: script, executionTimeout: timeoutS, ...(opts.env && Object.keys(opts.env).length > 0 ? { env: opts.env } : {}) },
        deliveryTimeout: Math.min(timeoutS, 30),
      },
      { waitMs: timeoutS * 1000 + 5000, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    if (err instanceof BerthError && (err.code === 'host_not_connected' || err.code === 'host_not_found')) throw new CheckFailed(kind, hostId, `could not start: ${err.message}`, true);
    throw err;
  }
  if (view.status === 'Success') return view;
  const inv = view.invocations[0];
  const codes = inv?.exitCodes.length ? ` (exit codes ${inv.exitCodes.join(', ')})` : '';
  const detail = inv?.statusDetail ? ` — ${inv.statusDetail}` : '';
  const stderr = inv?.stderr.trim() ? `: ${inv.stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 300)}` : '';
  throw new CheckFailed(kind, hostId, `ended ${view.status}${codes}${detail}${stderr}`, HOST_FAULTS.has(view.status), {
    commandId: view.id,
    status: view.status,
    exitCodes: inv?.exitCodes ?? [],
  });
}
