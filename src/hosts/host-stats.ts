/**
 * What running hosts use now, as their driver measures it (HostDriver.stats) or, for a driver that
 * cannot (EC2), as the host's agent reads its own machine (agent-stats.ts), with the time it was read.
 */
import { BerthError } from '../core/errors.js';
import { mapLimit } from '../core/map-limit.js';
import type { HostServiceDeps } from './host-types.js';
import type { HostRow } from '../store/schema.js';
import type { HostStatsView } from './views.js';

type StatsDeps = Pick<HostServiceDeps, 'driver' | 'hosts' | 'agentStats'>;

export async function hostStats(deps: StatsDeps, tenantId: string, id: string): Promise<HostStatsView> {
  const row = await deps.hosts.get(tenantId, id);
  if (!row) throw new BerthError('host_not_found', `host ${id} does not exist`, 'List hosts with `berth host ls`.', { hostId: id });
  if (row.state !== 'running') throw new BerthError('invalid_state', `host ${id} is ${row.state}, so it uses nothing`, 'Ask for the stats of a running host.', { hostId: id, state: row.state });
  return statsOf(deps, row);
}

/**
 * The stats of every running host of the tenant (one store read); one that stops meanwhile is left
 * out. One host after another, giving the event loop back every few: a reading costs ~0.2 ms of
 * this process's time, and a scrape of hundreds of hosts must not hold up claims meanwhile.
 */
export async function runningHostStats(deps: StatsDeps, tenantId: string): Promise<HostStatsView[]> {
  const rows = await deps.hosts.list(tenantId, { states: ['running'] });
  const read: HostStatsView[] = [];
  if (!deps.driver.stats) {
    // Asked of the agents: over the network, 16 at a time, each bounded (one that does not answer is left out).
    const asked = await mapLimit(rows, 16, (row) => statsOf(deps, row).catch(() => undefined));
    return asked.filter((s): s is HostStatsView => s !== undefined);
  }
  for (const [i, row] of rows.entries()) {
    if (i > 0 && i % 16 === 0) await new Promise((resolve) => setImmediate(resolve));
    const stats = await statsOf(deps, row).catch(() => undefined);
    if (stats) read.push(stats);
  }
  return read;
}

async function statsOf({ driver, agentStats }: StatsDeps, row: HostRow): Promise<HostStatsView> {
  if (driver.stats) return { hostId: row.id, at: new Date().toISOString(), ...(await driver.stats(row.id, row.driver_data)) };
  if (!agentStats) throw new BerthError('invalid_state', `the ${driver.name} driver does not report what its hosts use`, 'Use a driver that reports host stats.', { hostId: row.id });
  return { hostId: row.id, at: new Date().toISOString(), ...(await agentStats.ask(row.id)) };
}
