/**
 * The pipe between a service and its log: a FIFO in the state dir that both sides open O_RDWR. The
 * service's side therefore always has a reader (never EPIPE/SIGPIPE, even while no agent runs), and the
 * agent's side never sees EOF; a new agent re-opens the same FIFO and reads on where the old one stopped.
 * While no agent reads, a service that fills the pipe buffer (64 KiB) blocks on write, as under runit.
 */
import { execFileSync } from 'node:child_process';
import { constants, lstatSync, openSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';

export class LogFifo {
  private readonly reader: Socket;
  private closed = false;

  constructor(
    readonly path: string,
    onData: (chunk: Buffer) => void,
    onError: (message: string) => void,
  ) {
    ensureFifo(path);
    // A separate open file description from the service's: O_NONBLOCK here must not leak to the service.
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    // A pipe handle (epoll) rather than fs reads: a blocking read would hold a threadpool thread forever.
    this.reader = new Socket({ fd, readable: true, writable: false });
    this.reader.on('data', onData);
    this.reader.on('error', (e) => onError(`reading ${path}: ${e.message}`));
  }

  /** A blocking read-write descriptor for the service's stdout and stderr; the caller closes it after spawn. */
  openForService(): number {
    return openSync(this.path, constants.O_RDWR);
  }

  /** Stops reading. Bytes still in the pipe stay there for the next reader. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader.destroy();
  }

  /** Removes the FIFO (the service is gone for good). */
  remove(): void {
    this.close();
    rmSync(this.path, { force: true });
  }
}

function ensureFifo(path: string): void {
  const stat = lstatSync(path, { throwIfNoEntry: false });
  if (stat?.isFIFO()) return;
  if (stat) rmSync(path, { force: true, recursive: true });
  // Node has no mkfifo(3); coreutils' is on every host image.
  execFileSync('mkfifo', ['-m', '600', path], { stdio: 'ignore' });
}
