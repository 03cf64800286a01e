/**
 * The agent's one outbound connection to the control plane. Reconnects forever with a short, capped
 * backoff (the first retries are fast: at boot the host's network may still be coming up).
 */
import { WsClient } from './ws-client.js';
import { HOST_ID_HEADER, parseServerMessage, type AgentMessage, type ServerMessage } from '../protocol/messages.js';

export interface ConnectionOptions {
  serverUrl: string;
  /** For a wss:// serverUrl: the CA certificates (PEM) to trust; default the system's roots. */
  ca?: string | undefined;
  hostId: string;
  token: string;
  /** The server sent a new CA bundle to trust (see the `trust` frame): keep it for the next start. */
  onTrust?: (ca: string) => void;
  /** The server moved the channel to TLS (see the `switch` frame): keep its URL and CA for the next start. */
  onSwitch?: (serverUrl: string, ca: string | undefined) => void;
  /** Called on every (re)connection, before anything else is sent; returns the hello frame. */
  hello: () => AgentMessage;
  onMessage: (msg: ServerMessage) => void;
  /** The connection dropped (it is retried); what lived only on it (shell sessions) ends. */
  onClose?: () => void;
  log: (line: string) => void;
}

const BACKOFF_MS = [5, 10, 20, 50, 100, 200, 500, 1000, 2000];

export class AgentConnection {
  private socket: WsClient | undefined;
  private attempt = 0;
  private stopped = false;
  private heartbeat: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private lastTlsError: string | undefined;
  private ca: string | undefined;
  private url: string;

  constructor(private readonly opts: ConnectionOptions) {
    this.ca = opts.ca;
    this.url = opts.serverUrl;
  }

  start(): void {
    this.connect();
  }

  get connected(): boolean {
    return this.socket?.isOpen ?? false;
  }

  /** Sends when connected; returns false otherwise (the caller keeps state to resend on hello). */
  send(msg: AgentMessage): boolean {
    const socket = this.socket;
    if (!socket?.isOpen) return false;
    socket.send(JSON.stringify(msg));
    return true;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.retry);
    this.socket?.close(1001, 'agent stopping');
  }

  private connect(): void {
    if (this.stopped) return;
    const socket = new WsClient(this.url, {
      headers: { authorization: `Bearer ${this.opts.token}`, [HOST_ID_HEADER]: this.opts.hostId },
      handshakeTimeoutMs: 5000,
      ...(this.ca ? { ca: this.ca } : {}),
    });
    this.socket = socket;
    socket.on('open', () => {
      this.attempt = 0;
      socket.send(JSON.stringify(this.opts.hello()));
    });
    socket.on('message', (data: string) => {
      const msg = parseServerMessage(data);
      if (!msg) {
        this.opts.log('ignored a malformed frame from the server');
        return;
      }
      if (msg.type === 'welcome') this.startHeartbeat(msg.heartbeatIntervalMs);
      if (msg.type === 'trust') return this.onTrust(msg.ca);
      if (msg.type === 'switch') return this.onSwitch(socket, msg.url, msg.ca);
      this.opts.onMessage(msg);
    });
    socket.on('unexpected-response', (status: number) => {
      this.opts.log(`server refused the connection: HTTP ${status}`);
    });
    socket.on('error', (err: Error & { code?: string }) => {
      // 'close' follows and schedules the retry; errors are expected while the network comes up.
      // A certificate the agent does not trust is not one of them: said once, it is retried all the same.
      const untrusted = /CERT|SELF_SIGNED|UNABLE_TO|HOSTNAME|ERR_TLS|ERR_SSL/.test(err.code ?? '');
      if (untrusted && err.message !== this.lastTlsError) this.opts.log(`the server's certificate is refused: ${err.message}`);
      this.lastTlsError = untrusted ? err.message : undefined;
    });
    socket.on('close', () => {
      clearInterval(this.heartbeat);
      if (this.socket === socket) this.socket = undefined;
      this.opts.onClose?.();
      this.scheduleRetry();
    });
  }

  /** Only a server this agent verified over TLS may change what it trusts (never one on plain ws://). */
  private onTrust(ca: string): void {
    if (!this.url.startsWith('wss:') || ca === this.ca) return;
    this.ca = ca;
    this.opts.log('the server sent a new CA bundle: trusted from the next connection on');
    this.opts.onTrust?.(ca);
  }

  /**
   * The server this agent dials in plain now serves TLS on the same port: from here on the agent
   * dials wss:// there, and nothing else. A switch to another host or port is refused, so the
   * plain channel (which anyone on the path could speak) cannot send the agent elsewhere.
   */
  private onSwitch(socket: WsClient, url: string, ca: string | undefined): void {
    const from = new URL(this.url);
    let to: URL;
    try {
      to = new URL(url);
    } catch {
      return this.opts.log(`refused to switch to ${url}: not a URL`);
    }
    if (from.protocol !== 'ws:' || to.protocol !== 'wss:' || to.host !== from.host || to.pathname !== from.pathname) {
      return this.opts.log(`refused to switch from ${this.url} to ${url}: only ws:// to wss:// on the same address`);
    }
    this.url = url;
    this.ca = ca;
    this.opts.log(`the server now serves the agent channel over TLS: dialling ${url}`);
    this.opts.onSwitch?.(url, ca);
    this.attempt = 0;
    socket.close(1000, 'switching to TLS');
  }

  private startHeartbeat(intervalMs: number): void {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.send({ type: 'heartbeat', at: new Date().toISOString() }), intervalMs);
    this.heartbeat.unref();
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] ?? 2000;
    this.attempt++;
    this.retry = setTimeout(() => this.connect(), delay);
  }
}
