/**
 * One service's logging: its FIFO (in the state dir) feeding its rotating log file (in the log dir).
 * Outlives the service's processes: every run of the service, and the agent after a restart, share the
 * same FIFO and file.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ServiceLogPolicy } from '../../protocol/messages.js';
import { LogFifo } from './log-fifo.js';
import { RotatingLog } from './log-file.js';
import { readLogLines, type LogReadOptions } from './log-read.js';

export interface ServiceLogOptions {
  name: string;
  stateDir: string;
  logDir: string;
  policy: ServiceLogPolicy;
  clock: () => number;
  onError: (message: string) => void;
}

export class ServiceLog {
  private readonly file: RotatingLog;
  private readonly fifo: LogFifo;

  constructor(opts: ServiceLogOptions) {
    // Made with the first service, not at agent start: a host that runs none keeps its layer clean.
    mkdirSync(opts.logDir, { recursive: true });
    this.file = new RotatingLog(join(opts.logDir, `${opts.name}.log`), opts.policy, opts.clock, opts.onError);
    this.fifo = new LogFifo(join(opts.stateDir, `${opts.name}.fifo`), (chunk) => this.file.write(chunk), opts.onError);
  }

  /** See LogFifo.openForService. */
  openForService(): number {
    return this.fifo.openForService();
  }

  note(text: string): void {
    this.file.note(text);
  }

  setPolicy(policy: ServiceLogPolicy): void {
    this.file.setPolicy(policy);
  }

  /** Retained log files, oldest first, the current one last. */
  files(): string[] {
    return this.file.files();
  }

  lines(opts: LogReadOptions = {}): AsyncGenerator<string, void, undefined> {
    return readLogLines(this.file, opts);
  }

  /** The agent is exiting: stop reading, leave the FIFO for the next agent. */
  detach(): void {
    this.fifo.close();
    this.file.close();
  }

  /**
   * The service was removed and its processes are gone: read what they left in the pipe, then remove
   * the FIFO. The log files stay.
   */
  async close(drainMs = 100): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, drainMs));
    this.fifo.remove();
    this.file.close();
  }
}
