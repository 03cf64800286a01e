/**
 * What a server finds after a restart, and what it does so no environment is left half-done:
 * routes come back for ready environments; a create cut short releases what it had claimed and is
 * gone; a deploy, scale or heal cut short returns to the hosts its route was on; a settings change cut short puts
 * every host back; a restart cut short is over; a removal finishes; a sleeping environment (or one
 * whose wake was cut short) sleeps, routed so its next request wakes it (sleep.ts).
 */
import { errorMessage } from '../core/errors.js';
import type { EnvironmentsRepo } from '../store/environments-repo.js';
import type { EnvHostRecord, EnvironmentRow } from '../store/schema.js';

export interface RecoveryOps {
  envs: Pick<EnvironmentsRepo, 'all' | 'delete' | 'transition'>;
  /** Gives hosts back, out of any load balancing first. */
  letGo(row: EnvironmentRow, hosts: readonly EnvHostRecord[], why: string): Promise<void>;
  /** Gives back hosts a deploy had claimed (which of them it had attached is not known). */
  releaseStale(row: EnvironmentRow, hosts: readonly EnvHostRecord[], why: string): Promise<void>;
  finishRemoval(row: EnvironmentRow): Promise<void>;
  settleSettings(row: EnvironmentRow): Promise<unknown>;
  recoverAsleep(row: EnvironmentRow): Promise<void>;
  restoreRoute(row: EnvironmentRow, route: NonNullable<EnvironmentRow['route']>): Promise<void>;
  log: (line: string) => void;
}

export async function recoverEnvironments(ops: RecoveryOps): Promise<{ routed: string[]; cleaned: string[] }> {
  const routed: string[] = [];
  const cleaned: string[] = [];
  for (const row of await ops.envs.all()) {
    try {
      if (row.state === 'creating') {
        await ops.letGo(row, row.hosts, `environment ${row.name}: its creation was cut short by a server restart`);
        await ops.envs.delete(row.tenant_id, row.name);
        cleaned.push(row.name);
      } else if (row.state === 'removing') {
        await ops.finishRemoval(row);
        cleaned.push(row.name);
      } else if (row.state === 'sleeping' || row.state === 'waking') {
        await ops.recoverAsleep(row);
        routed.push(row.name);
      } else if (row.route) {
        const routedGen = row.route.generation;
        const stale = row.hosts.filter((h) => h.generation > routedGen);
        if (stale.length > 0) await ops.releaseStale(row, stale, `environment ${row.name}: its deploy was cut short by a server restart`);
        const kept = row.hosts.filter((h) => h.generation <= routedGen);
        if (row.state === 'deploying') await ops.envs.transition(row.tenant_id, row.name, ['deploying'], 'ready', { reason: 'a deploy was cut short by a server restart', hosts: kept });
        // A review environment's count is its hosts now (a scale records it only at its end), so that
        // the same scale asked again is not taken for nothing to do.
        if (row.state === 'scaling') await ops.envs.transition(row.tenant_id, row.name, ['scaling'], 'ready', { reason: 'a scale was cut short by a server restart', hosts: kept, ...(row.mode === 'review' && kept.length > 0 ? { replicas: kept.length } : {}) });
        // Its lost hosts are still in the record: the next sweep replaces them again.
        if (row.state === 'healing') await ops.envs.transition(row.tenant_id, row.name, ['healing'], 'ready', { reason: 'replacing lost hosts was cut short by a server restart', hosts: kept });
        if (row.state === 'configuring') await ops.settleSettings(row);
        if (row.state === 'restarting') await ops.envs.transition(row.tenant_id, row.name, ['restarting'], 'ready', { reason: 'a restart was cut short by a server restart' });
        await ops.restoreRoute({ ...row, hosts: kept }, row.route);
        routed.push(row.name);
      }
    } catch (err) {
      ops.log(`environment ${row.name}: recovery: ${errorMessage(err)}`);
    }
  }
  return { routed, cleaned };
}
