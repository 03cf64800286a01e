/**
 * A request that offered a protocol switch the router does not take (h2c), answered over HTTP/1.1
 * on the socket the HTTP server handed over for the upgrade (RFC 9110 7.8 lets a server ignore it).
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** The request as one that asks for no protocol switch (its hop-by-hop upgrade headers dropped). */
export function withoutUpgrade(req: IncomingMessage): IncomingMessage {
  const offered = (req.headers.connection ?? '').split(',').map((token) => token.trim().toLowerCase());
  for (const name of offered) if (name !== 'close' && name !== 'keep-alive') delete req.headers[name];
  delete req.headers.upgrade;
  req.headers.connection = 'close';
  return req;
}

/** A response on a socket the HTTP server let go of (it took it for an upgrade): one answer, then closed. */
export function plainResponse(req: IncomingMessage, socket: Duplex): ServerResponse {
  const res = new http.ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  res.once('finish', () => socket.end());
  res.once('close', () => {
    if (!res.writableFinished) socket.destroy();
  });
  return res;
}
