/**
 * The control plane's side of the agent channel: a WebSocket endpoint that agents dial out to. It
 * authenticates each agent with its per-host token at the HTTP upgrade (a host cannot act as another
 * host), keeps one session per host, and knows at every moment which agents are connected: a session
 * ends on close, or when pings go unanswered for two intervals.
 */
import { createReadStream } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { isBerthError } from '../core/errors.js';
import {
  AGENT_ENROL_PATH,
  AGENT_PATH,
  HOST_ID_HEADER,
  type AgentIdentity,
  parseAgentMessage,
  type AgentMessage,
  type ServerMessage,
} from '../protocol/messages.js';

export interface AgentSessionInfo {
  hostId: string;
  /** The tenant the host belongs to, established when the agent authenticated. */
  tenantId: string;
  bootId: string;
  agentVersion: string;
  connectedAt: Date;
  lastSeen: Date;
}

export interface GatewayHandlers {
  /** Resolves the host's tenant when the token belongs to the host and the host may connect. */
  authenticate(hostId: string, token: string): Promise<{ tenantId: string } | undefined>;
  onHello(hostId: string, hello: Extract<AgentMessage, { type: 'hello' }>): void;
  onMessage(hostId: string, msg: AgentMessage): void;
  onDisconnect(hostId: string): void;
}

export interface GatewayOptions {
  host: string;
  port: number;
  heartbeatIntervalMs?: number;
  log?: (line: string) => void;
  /**
   * Files hosts may download by GET on this port (environments' slugs): the path on this machine
   * for a URL path, or undefined. Their URLs carry a content digest, so naming one is having it.
   */
  files?: (urlPath: string) => string | undefined;
  /**
   * A fleet host's agent asking for its identity (POST AGENT_ENROL_PATH, see AgentEnrolment): the
   * body as sent, parsed JSON. Throws a BerthError to refuse.
   */
  enrol?: (body: unknown) => Promise<AgentIdentity>;
  /** Serve the channel over TLS (wss://, https://) with this certificate (and chain) and key, PEM. */
  tls?: { cert: Buffer; key: Buffer };
  /** The CA bundle agents trust now (TLS): each agent is told it after its welcome (see sendTrust). */
  trust?: () => string | undefined;
  /**
   * TLS only: what an agent that dials this port in plain (launched before the channel had TLS) is
   * told to dial instead (the `switch` frame). Undefined: it is refused.
   */
  switchTo?: () => { url: string; ca?: string | undefined } | undefined;
  /** TLS only: how long a new connection may stay silent before it is dropped (default 10 s). */
  firstByteTimeoutMs?: number;
}

/** How long a plain connection told to switch may stay (an agent older than the frame ignores it). */
const PLAIN_GRACE_MS = 30_000;

/** An enrolment request is a few hundred bytes; anything much larger is not one. */
const ENROL_BODY_LIMIT = 16 * 1024;

interface Session extends AgentSessionInfo {
  socket: WebSocket;
  alive: boolean;
}

export class AgentGateway {
  private readonly http: Server | HttpsServer;
  /** With TLS: where a plain connection goes (an agent launched before, to be told to switch). */
  private readonly plain: Server | undefined;
  /** What listens: the HTTP server, or with TLS one that hands each connection on by its first byte. */
  private readonly listener: Server | NetServer;
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
  private readonly sessions = new Map<string, Session>();
  private readonly heartbeatIntervalMs: number;
  private pinger: NodeJS.Timeout | undefined;
  /**
   * Set by close(). An upgrade still authenticating when the server stops must not become a
   * session after close() terminated the others: its socket would keep the HTTP server's close
   * (and so the server's stop) waiting for as long as the agent stays connected.
   */
  private closing = false;
  private readonly log: (line: string) => void;

  constructor(
    private readonly opts: GatewayOptions,
    private readonly handlers: GatewayHandlers,
  ) {
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 5000;
    this.log = opts.log ?? (() => {});
    const onRequest: RequestListener = (req, res) => {
      if (req.method === 'POST' && req.url === AGENT_ENROL_PATH && opts.enrol) {
        void this.onEnrol(req, opts.enrol).then(({ status, body }) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        });
        return;
      }
      const file = req.method === 'GET' && req.url ? opts.files?.(req.url) : undefined;
      if (file) {
        res.writeHead(200, { 'content-type': 'application/x-tar' });
        createReadStream(file)
          .on('error', () => res.destroy())
          .pipe(res);
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 'not_found', message: 'this port serves only the agent channel', hint: `Agents connect to ${AGENT_PATH}.` }));
    };
    const upgrades = (plain: boolean) => (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.onUpgrade(req, socket, head, plain).catch((err: unknown) => {
        this.log(`agent upgrade failed: ${String(err)}`);
        reject(socket, 500, 'internal error');
      });
    };
    if (opts.tls) {
      this.http = createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, onRequest);
      this.plain = createServer((_req, res) => {
        res.writeHead(426, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'bad_request', message: 'this port serves the agent channel over TLS', hint: 'Use https:// (wss:// for agents).' }));
      });
      this.plain.on('upgrade', upgrades(true));
      this.listener = createNetServer((socket) => this.route(socket));
    } else {
      this.http = createServer(onRequest);
      this.listener = this.http;
    }
    this.http.on('upgrade', upgrades(false));
  }

  /** TLS: a connection starting with a TLS handshake record (0x16) is TLS; anything else is plain HTTP. */
  private route(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    // Until it says something, nothing else (TLS's or HTTP's own timeouts) watches the connection.
    socket.setTimeout(this.opts.firstByteTimeoutMs ?? 10_000, () => socket.destroy());
    socket.once('data', (first: Buffer) => {
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(first);
      if (first[0] === 0x16) {
        this.http.emit('connection', socket); // TLS reads what is buffered itself
      } else {
        this.plain?.emit('connection', socket);
        socket.resume(); // the HTTP parser reads from 'data' events
      }
    });
  }

  private async onEnrol(req: IncomingMessage, enrol: (body: unknown) => Promise<AgentIdentity>): Promise<{ status: number; body: unknown }> {
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > ENROL_BODY_LIMIT) return { status: 413, body: { code: 'bad_request', message: 'the enrolment request is too large', hint: 'Send the enrolment file as written by the boot script.' } };
        chunks.push(chunk);
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return { status: 400, body: { code: 'bad_request', message: 'the enrolment request is not JSON', hint: 'Send the enrolment file as written by the boot script.' } };
      }
      return { status: 200, body: await enrol(parsed) };
    } catch (err) {
      if (isBerthError(err)) return { status: err.status, body: err.toJSON() };
      this.log(`enrolment failed: ${String(err)}`);
      return { status: 500, body: { code: 'internal', message: 'enrolment failed on the control plane', hint: 'See the server log; the agent retries.' } };
    }
  }

  /** A new CA bundle: every connected agent trusts it from now on (and keeps it for its next start). */
  sendTrust(ca: string): void {
    const frame = JSON.stringify({ type: 'trust', ca } satisfies ServerMessage);
    for (const session of this.sessions.values()) session.socket.send(frame);
  }

  /** A renewed certificate and key for connections from now on (open sessions keep theirs); TLS only. */
  setCertificate(pair: { cert: Buffer; key: Buffer }): void {
    if ('setSecureContext' in this.http) this.http.setSecureContext({ cert: pair.cert, key: pair.key });
  }

  async listen(): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen(this.opts.port, this.opts.host, () => {
        this.listener.off('error', reject);
        resolve();
      });
    });
    this.pinger = setInterval(() => this.checkLiveness(), this.heartbeatIntervalMs);
    this.pinger.unref();
    const address = this.listener.address();
    const port = typeof address === 'object' && address ? address.port : this.opts.port;
    return { host: this.opts.host, port };
  }

  isConnected(hostId: string): boolean {
    return this.sessions.has(hostId);
  }

  session(hostId: string): AgentSessionInfo | undefined {
    const s = this.sessions.get(hostId);
    return s ? { hostId: s.hostId, tenantId: s.tenantId, bootId: s.bootId, agentVersion: s.agentVersion, connectedAt: s.connectedAt, lastSeen: s.lastSeen } : undefined;
  }

  connectedHostIds(): string[] {
    return [...this.sessions.keys()];
  }

  send(hostId: string, msg: ServerMessage): boolean {
    const session = this.sessions.get(hostId);
    if (!session) return false;
    session.socket.send(JSON.stringify(msg));
    return true;
  }

  /** Drops a host's session (e.g. when the host is terminated). */
  disconnect(hostId: string, reason: string): void {
    const session = this.sessions.get(hostId);
    if (!session) return;
    this.sessions.delete(hostId);
    session.socket.close(1000, reason);
    this.handlers.onDisconnect(hostId);
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.pinger);
    for (const session of this.sessions.values()) session.socket.terminate();
    this.sessions.clear();
    // And connections that have not said hello yet: they are in no session.
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
    this.http.closeAllConnections();
    this.plain?.closeAllConnections();
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }

  private async onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, plain: boolean): Promise<void> {
    const path = (req.url ?? '').split('?')[0];
    if (path !== AGENT_PATH) return reject(socket, 404, 'not found');
    const hostId = header(req, HOST_ID_HEADER);
    const auth = header(req, 'authorization');
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    const identity = hostId && token ? await this.handlers.authenticate(hostId, token) : undefined;
    if (!hostId || !identity) {
      this.log(`refused an agent connection for host ${hostId ?? '(none)'} from ${req.socket.remoteAddress ?? '?'}: bad credentials`);
      return reject(socket, 401, 'unauthorized');
    }
    if (this.closing) return void socket.destroy(); // the agent redials the next server
    this.wss.handleUpgrade(req, socket, head, (ws) => (plain ? this.onPlainConnection(hostId, ws) : this.onConnection(hostId, identity.tenantId, ws)));
  }

  /**
   * An agent launched before the channel had TLS dialled in plain: it is told where to dial now and
   * nothing else happens on this connection (no session, no command). The agent closes it to
   * redial; one that does not know the frame stays here, idle, rather than redialling at once.
   */
  private onPlainConnection(hostId: string, ws: WebSocket): void {
    const to = this.opts.switchTo?.();
    if (!to) return ws.close(1008, 'this port serves the agent channel over TLS');
    ws.send(JSON.stringify({ type: 'switch', url: to.url, ...(to.ca ? { ca: to.ca } : {}) } satisfies ServerMessage));
    this.log(`host ${hostId}: its agent dialled in plain; told to dial ${to.url}`);
    const grace = setTimeout(() => ws.terminate(), PLAIN_GRACE_MS);
    grace.unref();
    ws.on('close', () => clearTimeout(grace));
    ws.on('error', () => ws.terminate());
  }

  private onConnection(hostId: string, tenantId: string, ws: WebSocket): void {
    let session: Session | undefined;
    ws.on('pong', () => {
      if (session) {
        session.alive = true;
        session.lastSeen = new Date();
      }
    });
    ws.on('message', (data: Buffer) => {
      const msg = parseAgentMessage(data.toString('utf8'));
      if (!msg) {
        this.log(`host ${hostId}: ignored a malformed frame`);
        return;
      }
      if (!session) {
        if (msg.type !== 'hello' || msg.hostId !== hostId) {
          ws.close(1008, 'expected hello for this host');
          return;
        }
        const previous = this.sessions.get(hostId);
        const now = new Date();
        session = { hostId, tenantId, bootId: msg.bootId, agentVersion: msg.agentVersion, connectedAt: now, lastSeen: now, socket: ws, alive: true };
        this.sessions.set(hostId, session);
        // A newer connection from the same host replaces the old one (the old socket is dead or dying).
        if (previous) previous.socket.terminate();
        ws.send(JSON.stringify({ type: 'welcome', heartbeatIntervalMs: this.heartbeatIntervalMs, serverTime: now.toISOString() } satisfies ServerMessage));
        const ca = this.opts.trust?.();
        if (ca) ws.send(JSON.stringify({ type: 'trust', ca } satisfies ServerMessage));
        this.handlers.onHello(hostId, msg);
        return;
      }
      session.lastSeen = new Date();
      session.alive = true;
      this.handlers.onMessage(hostId, msg);
    });
    ws.on('close', () => {
      if (session && this.sessions.get(hostId) === session) {
        this.sessions.delete(hostId);
        this.handlers.onDisconnect(hostId);
      }
    });
    ws.on('error', () => ws.terminate());
  }

  private checkLiveness(): void {
    for (const session of this.sessions.values()) {
      if (!session.alive) {
        this.log(`host ${session.hostId}: agent missed its heartbeats; dropping the session`);
        session.socket.terminate();
        continue;
      }
      session.alive = false;
      session.socket.ping();
    }
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function reject(socket: Duplex, status: number, message: string): void {
  socket.write(`HTTP/1.1 ${status} ${message}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  socket.destroy();
}
