/**
 * What a standby server (`berth server --standby`) answers on its API address while it waits for
 * the database: every request 503 `standby`, naming the server it waits for. An orchestrator's
 * readiness probe (GET /v1/health) sees that this one is not the active server, a liveness probe
 * that it runs, and a client sent to it is told where things stand. Closed just before the server's
 * own API listens on the same address.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { BerthError } from '../core/errors.js';

export class StandbyListener {
  private constructor(
    private readonly server: http.Server | https.Server,
    private readonly waiting: { holder: string },
  ) {}

  static async open(host: string, port: number, tls: { cert: Buffer; key: Buffer } | undefined): Promise<StandbyListener> {
    const waiting = { holder: 'another server' };
    const answer: http.RequestListener = (_req, res) => {
      const body = new BerthError('standby', `this berth server is a standby: another server holds the database (${waiting.holder})`, 'Use the active server; this one starts, at this address, when that one lets go.');
      res.writeHead(body.status, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end(JSON.stringify({ ...body.toJSON(), status: 'standby' }));
    };
    const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, answer) : http.createServer(answer);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new StandbyListener(server, waiting);
  }

  /** The server it waits for, as the database names it. */
  waitingFor(holder: string): void {
    this.waiting.holder = holder;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
