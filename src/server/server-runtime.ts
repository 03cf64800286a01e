/**
 * Small pieces of a running server: its periodic tasks, its store held for it alone, and the steps
 * of its stop.
 */
import { hostname } from 'node:os';
import type { DatabaseLockOptions } from '../store/database-lock.js';
import { openStore, type Store } from '../store/store.js';
import { StandbyListener } from './standby-listener.js';
import type { TlsPair } from './tls-files.js';
import type { ServerConfig } from './server-config.js';

/**
 * Runs one step of a server's stop, saying in the log every `warnMs` while it has not finished, and
 * which step it is: a stop that hangs (on a connection that does not close, say) names its cause.
 */
export async function stopStep(name: string, step: () => unknown, log: (line: string) => void, warnMs = 5000): Promise<void> {
  const t0 = Date.now();
  const timer = setInterval(() => log(`stopping: still waiting for ${name} after ${Math.round((Date.now() - t0) / 1000)} s`), warnMs);
  timer.unref();
  try {
    await step();
  } finally {
    clearInterval(timer);
  }
}

/** Tasks run every so often, one run at a time each (a slow run is not overlapped by the next), until stop(). */
export class TaskLoops {
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;

  add(intervalMs: number, task: () => Promise<void>, onError: (err: unknown) => void): void {
    let running = false;
    const timer = setInterval(() => {
      if (running || this.stopped) return;
      running = true;
      task()
        .catch(onError)
        .finally(() => {
          running = false;
        });
    }, intervalMs);
    timer.unref();
    this.timers.push(timer);
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
  }
}

/**
 * Opens the server's store, holding the database (one server per PostgreSQL database; see
 * DatabaseLock). A standby waits for it, answering 503 on the API address meanwhile (StandbyListener);
 * a server whose database another took later is fenced: `fence` stops it.
 */
export async function openServerStore(config: ServerConfig, apiTls: TlsPair | undefined, log: (line: string) => void, progress: (step: string) => void, fence: (holder: string) => void): Promise<Store> {
  const listener = config.standby && config.databaseUrl ? await StandbyListener.open(config.host ?? '127.0.0.1', config.port ?? 7070, apiTls) : undefined;
  const exclusive: DatabaseLockOptions = {
    holder: `berth server pid ${process.pid} on ${hostname()}`,
    log,
    onTaken: (holder) => {
      log(`another server took this server's database (${holder}): stopping, so that one server acts on it`);
      fence(holder);
    },
  };
  if (config.standby) {
    exclusive.standby = {
      onWaiting: (holder) => {
        listener?.waitingFor(holder);
        progress(`standing by: another server holds the database (${holder}); this one starts when it lets go`);
      },
    };
  }
  try {
    return await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, exclusive });
  } finally {
    await listener?.close();
  }
}

/** What a running server does every so often. */
export interface PeriodicWork {
  sweepCommands: () => Promise<void>;
  monitorHosts: () => Promise<void>;
  reconcilePools: () => Promise<void>;
  sampleLevels: () => Promise<void>;
  sweepOrphans: () => Promise<void>;
  /** Which hosts reach each other, set whole again (NetworkGroups.syncAll). */
  syncNetworkGroups: () => Promise<void>;
  discoverFleet?: () => Promise<void>;
}

/** Starts a server's periodic work on `loops`, at the intervals its config gives (or the defaults). */
export function startLoops(loops: TaskLoops, config: ServerConfig, work: PeriodicWork, report: (what: string) => (err: unknown) => void): void {
  loops.add(config.sweepIntervalMs ?? 500, work.sweepCommands, report('command sweep'));
  loops.add(config.monitorIntervalMs ?? 2000, work.monitorHosts, report('host monitor'));
  loops.add(config.poolIntervalMs ?? 1000, work.reconcilePools, report('pool reconciler'));
  loops.add(5000, work.sampleLevels, report('dashboard level sampler'));
  loops.add(config.orphanSweepIntervalMs ?? 60_000, work.sweepOrphans, report('orphan sweep'));
  loops.add(config.networkSyncIntervalMs ?? 300_000, work.syncNetworkGroups, report('network groups'));
  if (work.discoverFleet) loops.add(config.fleetDiscoveryIntervalMs ?? 5000, work.discoverFleet, report('fleet discovery'));
}
