/**
 * Restarting a live environment's services (`berth env restart NAME [--service S]`), as `heroku
 * ps:restart` and `fly apps restart` do: host by host (rolling.ts), each service asked to restart
 * by its host's supervisor and waited for until a new process of it is ready, and the host back in
 * the router's rotation before the next one restarts, so several replicas keep serving. A service
 * that does not come back stops the roll there (the hosts after it keep running as they were) and
 * says why. The environment is `restarting` meanwhile; nothing is undone after a server restart.
 */
import { z } from 'zod';
import { BerthError, errorMessage } from '../core/errors.js';
import type { HostServicesView } from '../services/services-service.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvironmentRow } from '../store/schema.js';
import { rollOver, type RollingDeps } from './rolling.js';

export const restartEnvironmentBody = z
  .object({
    service: z.string().min(1).max(63).optional().describe('Restart only this service (default: every service of the environment)'),
    wait: z.number().positive().max(600).default(120).describe("Seconds each host's restarted services get to be ready"),
  })
  .strict();

export type RestartInput = z.output<typeof restartEnvironmentBody>;

export interface RestartDeps extends RollingDeps {
  envs: Pick<EnvironmentsRepo, 'transition'>;
  services: {
    get(tenantId: string, hostId: string): Promise<HostServicesView>;
    act(tenantId: string, hostId: string, name: string, action: 'restart'): Promise<unknown>;
    waitFor(tenantId: string, hostId: string, done: (view: HostServicesView) => boolean, timeoutMs: number): Promise<HostServicesView>;
  };
}

export async function restartServices(deps: RestartDeps, row: EnvironmentRow, input: RestartInput): Promise<EnvironmentRow> {
  const { tenant_id: tenantId, name } = row;
  // Which services each host runs, and so which of them restart there.
  const plan = new Map<string, string[]>();
  const running = new Set<string>();
  for (const { hostId } of row.hosts) {
    const names = (await deps.services.get(tenantId, hostId)).services.map((s) => s.name);
    for (const n of names) running.add(n);
    const chosen = input.service === undefined ? names : names.filter((n) => n === input.service);
    if (chosen.length > 0) plan.set(hostId, chosen);
  }
  if (plan.size === 0) {
    const what = input.service === undefined ? 'no services' : `no service ${input.service}`;
    throw new BerthError('validation_failed', `environment ${name} runs ${what}${running.size > 0 ? ` (it runs ${[...running].sort().join(', ')})` : ''}`, 'Name one of its services with --service, or leave it out to restart them all.');
  }
  const what = input.service ?? 'its services';
  const started = await deps.envs.transition(tenantId, name, ['ready'], 'restarting', { reason: `restarting ${what}` });
  if (!started) throw new BerthError('conflict', `environment ${name} is ${row.state}`, 'Wait until it is ready, then restart it.');
  const pids = new Map<string, Map<string, number | null>>();
  try {
    await rollOver(
      deps,
      { tenantId, name },
      [...plan.keys()],
      async (hostId) => {
        const names = plan.get(hostId) ?? [];
        const view = await deps.services.get(tenantId, hostId);
        pids.set(hostId, new Map(names.map((n) => [n, view.services.find((s) => s.name === n)?.status?.pid ?? null])));
        for (const n of names) await deps.services.act(tenantId, hostId, n, 'restart');
      },
      { deadline: Date.now() + input.wait * 1000, ready: (hostId, timeoutMs) => restarted(deps, { tenantId, name }, hostId, pids.get(hostId) ?? new Map<string, number | null>(), timeoutMs) },
    );
  } catch (err) {
    await deps.envs.transition(tenantId, name, ['restarting'], 'ready', { reason: `restart of ${what} stopped: ${errorMessage(err)}` });
    throw err;
  }
  const done = await deps.envs.transition(tenantId, name, ['restarting'], 'ready', { reason: `restarted ${what} on ${plan.size} host${plan.size === 1 ? '' : 's'}` });
  if (!done) throw new BerthError('conflict', `environment ${name} changed while it restarted`, 'Look at it (berth env show).');
  return done;
}

/** Resolves once every service restarted on the host runs as a new process and is ready; throws when one failed or time ran out. */
async function restarted(deps: RestartDeps, env: { tenantId: string; name: string }, hostId: string, before: Map<string, number | null>, timeoutMs: number): Promise<void> {
  const mine = (view: HostServicesView) => view.services.filter((s) => before.has(s.name));
  const fresh = (s: HostServicesView['services'][number]) => s.status !== null && s.status.pid !== null && s.status.pid !== before.get(s.name) && s.status.configHash === s.configHash;
  const view = await deps.services.waitFor(env.tenantId, hostId, (v) => mine(v).some((s) => s.status?.state === 'failed') || mine(v).every((s) => fresh(s) && s.status?.state === 'ready'), timeoutMs);
  const failed = mine(view).find((s) => s.status?.state === 'failed');
  if (failed) throw new BerthError('environment_failed', `environment ${env.name}: host ${hostId}: service ${failed.name} failed after its restart: ${failed.status?.reason ?? 'no reason given'}`, `See its log: berth env logs ${env.name} --service ${failed.name}`, { hostId, service: failed.name });
  const waiting = mine(view).filter((s) => !(fresh(s) && s.status?.state === 'ready'));
  if (waiting.length > 0) {
    throw new BerthError('deadline_exceeded', `environment ${env.name}: host ${hostId}: not restarted and ready in time: ${waiting.map((s) => `${s.name} ${s.status?.state ?? 'not reported'}`).join(', ')}`, 'Look at `berth env logs` and `berth svc ls --host ID`, or give --wait more seconds.', { hostId });
  }
}
