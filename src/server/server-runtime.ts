/**
 * Two small pieces of a running server: its periodic tasks, and its hold on a PostgreSQL store.
 */
import { hostname } from 'node:os';
import type { DatabaseLockOptions } from '../store/database-lock.js';
import type { ServerConfig } from './server-config.js';

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

/** This server's hold on a PostgreSQL store (one server per database): a standby waits for it; a server whose database another took stops. */
export function databaseLockOptions(config: ServerConfig, log: (line: string) => void, progress: (step: string) => void, fence: (holder: string) => void): DatabaseLockOptions {
  return {
    holder: `berth server pid ${process.pid} on ${hostname()}`,
    log,
    ...(config.standby ? { standby: { onWaiting: (holder: string) => progress(`standing by: another server holds the database (${holder}); this one starts when it lets go`) } } : {}),
    onTaken: (holder) => {
      log(`another server took this server's database (${holder}): stopping, so that one server acts on it`);
      fence(holder);
    },
  };
}
