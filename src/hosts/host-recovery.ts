/**
 * Hosts against what the driver says: adoption after a control-plane restart, the periodic
 * monitor (hosts that died or never enrolled), and the sweep of machines the store does not know.
 */
import { BerthError, errorMessage } from '../core/errors.js';
import { mapLimit } from '../core/map-limit.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';
import type { HostRow } from '../store/schema.js';
import type { HostDriver } from '../drivers/types.js';
import type { HostServiceDeps } from './host-service.js';

export interface RecoveryContext {
  deps: Pick<HostServiceDeps, 'hosts' | 'driver' | 'agents' | 'log' | 'bootTimeoutMs'>;
  /** Terminates the machine and records the host as terminated (the host is `terminating`). */
  cleanUp(row: HostRow, reason: string): Promise<void>;
  /** Marks a host lost and cleans it up. */
  markLost(row: HostRow, why: string): Promise<void>;
  /** This process is terminating the host right now. */
  isTerminating(id: string): boolean;
  /** This process is resetting the host: its init is replaced on purpose. */
  isResetting(id: string): boolean;
}

/** Driver errors that say nothing about the host, only that the backend could not answer now. */
const TRANSIENT: readonly string[] = ['driver_unavailable', 'deadline_exceeded', 'server_unreachable'];

/**
 * After a control-plane restart: hosts whose processes still run are adopted (their agents
 * reconnect by themselves); hosts that died, were mid-launch or mid-termination are cleaned up;
 * anything the driver finds that the store does not know as live is removed.
 */
export async function recoverHosts(ctx: RecoveryContext): Promise<{ adopted: string[]; cleaned: string[] }> {
  const { deps } = ctx;
  const live = await deps.hosts.listInStates(LIVE_HOST_STATES);
  // A store shared with a server of another driver (PostgreSQL): this driver would find none of
  // those hosts and record them all as gone while they run on. Refused before anything changes.
  const foreign = live.filter((row) => row.driver !== deps.driver.name);
  const other = foreign[0];
  if (other) {
    throw new BerthError(
      'conflict',
      `the store has ${foreign.length} live host(s) of the ${other.driver} driver (${foreign.slice(0, 3).map((row) => row.id).join(', ')}), and this server runs the ${deps.driver.name} driver`,
      `Start the server (or berth down) with --driver ${other.driver}, or remove those hosts through a server that runs them first.`,
    );
  }
  await deps.hosts.markAllDisconnected();
  const adopted: string[] = [];
  const cleaned: string[] = [];
  for (const row of live) {
    if (row.state === 'launching' || row.state === 'terminating') {
      await deps.hosts.transition(row.id, ['launching'], 'terminating', { reason: `control plane restarted while the host was ${row.state}` });
      // One host the backend cannot remove now must not keep the server from starting: it stays
      // failed, and the orphan sweep removes its machine later.
      try {
        await ctx.cleanUp(row, `control plane restarted while the host was ${row.state}`);
        cleaned.push(row.id);
      } catch (err) {
        deps.log(`host ${row.id}: cleanup at start-up failed, left for the sweep: ${errorMessage(err)}`);
      }
    }
  }
  // Described a few at a time (a cloud driver answers each in a round trip, and may batch them).
  const rest = live.filter((row) => row.state !== 'launching' && row.state !== 'terminating');
  const described = await mapLimit(rest, 16, (row) =>
    deps.driver.describe(row.id, row.driver_data).catch((err: unknown) => {
      // The backend could not say (unreachable, throttled, timed out): the host is kept, and the
      // monitor asks again. Cleaning it up on a transient error would destroy working hosts.
      if (err instanceof BerthError && TRANSIENT.includes(err.code)) return { state: 'unknown' as const, reason: errorMessage(err) };
      return { state: 'gone' as const, reason: errorMessage(err) };
    }),
  );
  for (const [i, row] of rest.entries()) {
    const d = described[i] ?? { state: 'gone' as const, reason: 'not described' };
    if (d.state === 'running' || d.state === 'unknown') {
      if (d.state === 'unknown') deps.log(`host ${row.id}: kept at start-up although its state is unknown (${d.reason ?? ''})`);
      adopted.push(row.id);
    } else {
      try {
        await ctx.markLost(row, d.reason ?? `host is ${d.state}`);
        cleaned.push(row.id);
      } catch (err) {
        deps.log(`host ${row.id}: cleanup at start-up failed, left for the sweep: ${errorMessage(err)}`);
      }
    }
  }
  const known = new Set(adopted);
  for (const found of await deps.driver.list()) {
    if (known.has(found.id)) continue;
    await deps.driver.terminate(found.id, found.driverData).catch((err: unknown) => deps.log(`host ${found.id}: cleanup of unknown host failed: ${errorMessage(err)}`));
    if (!cleaned.includes(found.id)) cleaned.push(found.id);
  }
  return { adopted, cleaned };
}

/**
 * Periodic: whatever the driver finds that the store does not know as a live host (a launch or
 * termination that failed half-way, a machine someone started by hand with berth's tags) is
 * removed — recovery does this at start-up; this closes the gap while the server runs. Rows are
 * written before machines are made, so a launch in progress is never taken for an orphan.
 */
export async function sweepOrphans(ctx: RecoveryContext): Promise<string[]> {
  const { deps } = ctx;
  const removed: string[] = [];
  for (const found of await deps.driver.list()) {
    const row = await deps.hosts.getAnyTenant(found.id);
    if (row && row.state !== 'terminated') continue;
    if (ctx.isTerminating(found.id)) continue;
    await deps.driver.terminate(found.id, found.driverData).catch((err: unknown) => deps.log(`host ${found.id}: removing an orphan failed: ${errorMessage(err)}`));
    deps.log(`host ${found.id}: removed an orphaned machine the store ${row ? 'knows as terminated' : 'does not know'}`);
    removed.push(found.id);
  }
  return removed;
}

/** Periodic check: hosts whose processes died are marked lost and cleaned; hosts that never enrol fail. */
export async function monitorHosts(ctx: RecoveryContext, now: Date): Promise<void> {
  for (const row of await ctx.deps.hosts.listInStates(['booting', 'running', 'lost'])) await checkHost(ctx, row, now);
}

/** One host of the monitor's (also looked at as soon as its agent goes away): lost if its machine is gone, failed if it never enrolled. */
export async function checkHost(ctx: RecoveryContext, row: HostRow, now: Date): Promise<void> {
  const { deps } = ctx;
  if (!['booting', 'running', 'lost'].includes(row.state) || deps.agents.isConnected(row.id) || ctx.isResetting(row.id) || ctx.isTerminating(row.id)) return;
  const described = await deps.driver.describe(row.id, row.driver_data).catch(() => ({ state: 'running' as const, reason: undefined }));
  // A backend's agent (SSM) registers in minutes where berth's enrols in a second: its own limit.
  const limit = bootTimeoutOf(deps.driver, row.driver_data) ?? deps.bootTimeoutMs ?? 60_000;
  if (described.state !== 'running') {
    await ctx.markLost(row, described.reason ?? `host is ${described.state}`);
  } else if (row.state === 'booting' && now.getTime() - new Date(row.created_at).getTime() > limit) {
    if (!(await deps.hosts.transition(row.id, ['booting'], 'terminating', { reason: `agent never enrolled within ${limit / 1000} s` }))) return;
    await ctx.cleanUp(row, 'agent never enrolled');
  }
}

/** How long a host whose agent is the backend's may take to come online; undefined for berth's agent. */
export function bootTimeoutOf(driver: HostDriver, driverData: Record<string, unknown>): number | undefined {
  return driver.agents?.handles(driverData) ? driver.agents.bootTimeoutMs : undefined;
}

/**
 * Looks at a host whose agent just left, rather than at the monitor's next pass (up to 2 s later),
 * so an environment can replace a dead host at once (environments/heal.ts). Twice, 50 and 300 ms
 * after: a killed host's agent may leave while its init is still exiting (it looks alive then). An
 * agent that only restarted (its init does that) leaves a host that is running: nothing is done.
 */
export class LeftAgentChecks {
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly check: (hostId: string) => Promise<void>,
    private readonly log: (line: string) => void,
  ) {}

  schedule(hostId: string): void {
    if (this.stopped) return;
    for (const afterMs of [50, 300]) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        void this.check(hostId).catch((err: unknown) => this.log(`host ${hostId}: check after its agent left: ${errorMessage(err)}`));
      }, afterMs);
      timer.unref();
      this.timers.add(timer);
    }
  }

  /** Nothing more is looked at: the server stops (every agent leaves as its channel closes). */
  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}
