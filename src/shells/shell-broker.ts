/**
 * Shell sessions on the control plane's side: each joins one API client's socket to one terminal
 * on a host, through that host's agent channel. The broker checks the host before anything is
 * sent (it exists, runs, runs berth's agent, is connected, has room), relays the bytes, acknowledges
 * output once the client's socket took it (the agent's flow-control window), and records each
 * session's open and close as events (who was on which host, and how it ended).
 *
 * A session: opening -> open -> ended. It ends when the program on the host exits, when the client
 * goes (the terminal hangs up), when the host's agent disconnects, or when the agent never answers.
 */
import { BerthError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { EventSink } from '../events/types.js';
import type { AgentMessage, ServerMessage } from '../protocol/messages.js';
import { SHELL_MAX_SESSIONS_PER_HOST, SHELL_WINDOW_BYTES } from '../protocol/shell.js';
import type { HostRow } from '../store/schema.js';
import type { ShellRecorder } from './shell-recorder.js';

/** What the client asked for (validated by the endpoint). */
export interface ShellRequest {
  command?: string;
  cwd?: string;
  user?: string;
  term: string;
  cols: number;
  rows: number;
}

export interface ShellExit {
  code: number | null;
  signal: string | null;
  error?: string;
}

/** The client's end of a session. */
export interface ShellClient {
  /** Terminal output; `taken` is called once the client's socket has taken the bytes. */
  output(data: Buffer, taken: () => void): void;
  /** The session is over; nothing follows. */
  ended(exit: ShellExit): void;
  /** Stop taking input from the client (the terminal has SHELL_WINDOW_BYTES of it to take first). */
  pauseInput?(): void;
  resumeInput?(): void;
}

/** A session as listings show it. */
export interface ShellSessionView {
  id: string;
  hostId: string;
  state: 'opening' | 'open';
  /** The program asked for; absent: a login shell. */
  command?: string;
  user?: string;
  /** The name of the API token that opened it. */
  openedBy?: string;
  openedAt: string;
  /** The program's pid on the host, once it started. */
  pid?: number;
  bytesIn: number;
  bytesOut: number;
}

/** How sessions ended: the reasons a session can end, as metrics count them. */
export const SHELL_END_CAUSES = ['exit', 'client', 'agent_gone', 'not_opened', 'idle', 'operator', 'server_stop'] as const;
export type ShellEndCause = (typeof SHELL_END_CAUSES)[number];

/** A tenant's sessions since the server started, for /metrics. */
export interface ShellTotals {
  open: number;
  ended: Record<ShellEndCause, number>;
  bytesIn: number;
  bytesOut: number;
}

/** What the client's side may do with an open session. */
export interface ShellHandle {
  readonly id: string;
  input(data: Buffer): void;
  resize(cols: number, rows: number): void;
  /** The client went away: the terminal hangs up. */
  close(): void;
}

export interface ShellBrokerDeps {
  hosts: { get(tenantId: string, hostId: string): Promise<HostRow | undefined> };
  agents: { isConnected(hostId: string): boolean; supervises(hostId: string): boolean; send(hostId: string, msg: ServerMessage): boolean };
  events: EventSink;
  /** How long the agent may take to start the terminal. Default 10 s. */
  openTimeoutMs?: number;
  /** A session with no byte either way for this long is ended (SSM's idle session timeout). Default: never. */
  idleTimeoutMs?: number;
  /** Records each session's output (shell-recorder.ts); absent: nothing is recorded. */
  recorder?: ShellRecorder;
}

type State = 'opening' | 'open' | 'ended';

/** A pool's hosts in these slots are (or are about to be) handed to a claim: no terminal on them. */
const HANDED_OUT_SLOTS: ReadonlySet<string> = new Set(['warming', 'ready', 'claiming']);

interface Session {
  id: string;
  tenantId: string;
  hostId: string;
  client: ShellClient;
  state: State;
  openTimer?: NodeJS.Timeout;
  /** Input bytes sent to the agent and not yet written into the terminal. */
  inputInFlight: number;
  inputPaused: boolean;
  request: ShellRequest;
  openedBy?: string | undefined;
  openedAt: Date;
  pid?: number;
  bytesIn: number;
  bytesOut: number;
  /** performance.now() of its last byte either way. */
  lastActive: number;
}

export class ShellBroker {
  private readonly sessions = new Map<string, Session>();
  private idleSweep: NodeJS.Timeout | undefined;
  /** Ended sessions' counts and bytes, by tenant (since the server started). */
  private readonly totals = new Map<string, Omit<ShellTotals, 'open'>>();

  constructor(private readonly deps: ShellBrokerDeps) {
    const idleMs = deps.idleTimeoutMs;
    if (idleMs) {
      this.idleSweep = setInterval(() => this.endIdle(idleMs), Math.min(10_000, Math.max(50, idleMs / 4)));
      this.idleSweep.unref();
    }
  }

  /** Sessions not ended, for a host or all. */
  count(hostId?: string): number {
    return [...this.sessions.values()].filter((s) => hostId === undefined || s.hostId === hostId).length;
  }

  /** Checks the host and asks its agent for a terminal. Throws (and sends nothing) when it cannot. */
  async open(tenantId: string, hostId: string, request: ShellRequest, client: ShellClient, openedBy?: string): Promise<ShellHandle> {
    const host = await this.deps.hosts.get(tenantId, hostId);
    if (!host || host.state === 'terminated') throw new BerthError('host_not_found', `host ${hostId} does not exist${host ? ' any more' : ''}`, 'List hosts with `berth host ls`.', { hostId });
    if (host.state !== 'running') throw new BerthError('invalid_state', `host ${hostId} is ${host.state}, not running`, 'Wait until it runs (`berth host ls`), or launch another.', { hostId });
    if (host.pool && host.slot && HANDED_OUT_SLOTS.has(host.slot)) {
      // Whatever a terminal changes there, the next claim gets: someone else's host.
      throw new BerthError('invalid_state', `host ${hostId} is a ${host.slot} host of pool ${host.pool}, waiting to be handed out`, `Claim it first (\`berth claim ${host.pool} --group …\`); a quarantined host can be opened to see why it failed.`, { hostId });
    }
    if (!this.deps.agents.supervises(hostId)) {
      throw new BerthError('invalid_state', `host ${hostId} runs commands through its backend's agent (SSM), not berth's, so berth cannot open a terminal on it`, "Use the backend's own sessions (`aws ssm start-session --target <instance>`), or a pool with `commandChannel: agent`.", { hostId });
    }
    if (!this.deps.agents.isConnected(hostId)) throw new BerthError('host_not_connected', `the agent of host ${hostId} is not connected`, 'Wait for it to reconnect (`berth host ls` shows it), or reset the host.', { hostId });
    if (this.count(hostId) >= SHELL_MAX_SESSIONS_PER_HOST) {
      throw new BerthError('conflict', `host ${hostId} has ${SHELL_MAX_SESSIONS_PER_HOST} shell sessions open already (the most it runs at once)`, 'Close one of them first.', { hostId });
    }
    const session: Session = { id: newId('sh'), tenantId, hostId, client, state: 'opening', inputInFlight: 0, inputPaused: false, request, openedBy, openedAt: new Date(), bytesIn: 0, bytesOut: 0, lastActive: performance.now() };
    this.sessions.set(session.id, session);
    if (!this.deps.agents.send(hostId, { type: 'shellOpen', sessionId: session.id, ...request })) {
      this.sessions.delete(session.id);
      throw new BerthError('host_not_connected', `the agent of host ${hostId} disconnected`, 'Retry once it is back (`berth host ls`).', { hostId });
    }
    this.event(session, 'opening', undefined, `${request.command ? `command ${JSON.stringify(request.command)}` : 'login shell'}${openedBy !== undefined ? ` by ${openedBy}` : ''}`, openedBy);
    this.deps.recorder?.start({ session: session.id, tenantId, hostId, ...request, ...(openedBy !== undefined ? { openedBy } : {}) });
    session.openTimer = setTimeout(() => {
      if (session.state !== 'opening') return;
      this.deps.agents.send(hostId, { type: 'shellClose', sessionId: session.id });
      this.end(session, { code: null, signal: null, error: `the agent of host ${hostId} did not open a terminal within ${(this.deps.openTimeoutMs ?? 10_000) / 1000} s (is it older than the server?)` }, 'not_opened');
    }, this.deps.openTimeoutMs ?? 10_000);
    session.openTimer.unref();
    const live = () => session.state !== 'ended';
    return {
      id: session.id,
      input: (data) => {
        if (!live() || !this.deps.agents.send(hostId, { type: 'shellInput', sessionId: session.id, data: data.toString('base64') })) return;
        session.inputInFlight += data.length;
        session.bytesIn += data.length;
        session.lastActive = performance.now();
        if (session.inputInFlight > SHELL_WINDOW_BYTES && !session.inputPaused) {
          session.inputPaused = true;
          client.pauseInput?.();
        }
      },
      resize: (cols, rows) => {
        if (!live() || !this.deps.agents.send(hostId, { type: 'shellResize', sessionId: session.id, cols, rows })) return;
        this.deps.recorder?.resize(session.id, cols, rows);
      },
      close: () => {
        if (!live()) return;
        this.deps.agents.send(hostId, { type: 'shellClose', sessionId: session.id });
        // The agent's exit report would find no one to tell: the session ends here.
        this.end(session, { code: null, signal: null, error: 'the client closed the session' }, 'client', false);
      },
    };
  }

  /** Handles a shell frame from a host's agent; false when `msg` is not one. */
  onAgentMessage(hostId: string, msg: AgentMessage): boolean {
    if (msg.type !== 'shellOpened' && msg.type !== 'shellOutput' && msg.type !== 'shellInputTaken' && msg.type !== 'shellExit') return false;
    const session = this.sessions.get(msg.sessionId);
    // A frame of another host's session, or of one that ended here already: nothing to do.
    if (!session || session.hostId !== hostId) return true;
    switch (msg.type) {
      case 'shellOpened':
        if (session.state === 'opening') {
          clearTimeout(session.openTimer);
          session.state = 'open';
          session.pid = msg.pid;
          this.event(session, 'open', 'opening', `pid ${msg.pid}`);
        }
        break;
      case 'shellOutput': {
        const data = Buffer.from(msg.data, 'base64');
        if (data.length === 0) break;
        session.bytesOut += data.length;
        session.lastActive = performance.now();
        this.deps.recorder?.output(session.id, data);
        session.client.output(data, () => {
          if (session.state !== 'ended') this.deps.agents.send(hostId, { type: 'shellAck', sessionId: session.id, bytes: data.length });
        });
        break;
      }
      case 'shellInputTaken':
        session.inputInFlight = Math.max(0, session.inputInFlight - msg.bytes);
        if (session.inputPaused && session.inputInFlight <= SHELL_WINDOW_BYTES / 2) {
          session.inputPaused = false;
          session.client.resumeInput?.();
        }
        break;
      case 'shellExit':
        // An error without an exit status: the terminal never started.
        this.end(session, { code: msg.code, signal: msg.signal, ...(msg.error !== undefined ? { error: msg.error } : {}) }, msg.error !== undefined && msg.code === null && msg.signal === null ? 'not_opened' : 'exit');
        break;
    }
    return true;
  }

  /** The tenant's sessions since the server started: open now, ended by cause, bytes each way. */
  totalsFor(tenantId: string): ShellTotals {
    const ended = this.totalsOf(tenantId);
    const open = [...this.sessions.values()].filter((s) => s.tenantId === tenantId);
    return {
      open: open.length,
      ended: { ...ended.ended },
      bytesIn: ended.bytesIn + open.reduce((n, s) => n + s.bytesIn, 0),
      bytesOut: ended.bytesOut + open.reduce((n, s) => n + s.bytesOut, 0),
    };
  }

  private totalsOf(tenantId: string): Omit<ShellTotals, 'open'> {
    let t = this.totals.get(tenantId);
    if (!t) {
      t = { ended: Object.fromEntries(SHELL_END_CAUSES.map((c) => [c, 0])) as Record<ShellEndCause, number>, bytesIn: 0, bytesOut: 0 };
      this.totals.set(tenantId, t);
    }
    return t;
  }

  /** The tenant's open sessions (of one host, if given), oldest first. */
  list(tenantId: string, hostId?: string): ShellSessionView[] {
    return [...this.sessions.values()]
      .filter((s) => s.tenantId === tenantId && (hostId === undefined || s.hostId === hostId))
      .map(viewOf);
  }

  /** Ends a session from outside it (an operator): its terminal hangs up, its client is told why. */
  terminate(tenantId: string, id: string): ShellSessionView {
    const session = this.sessions.get(id);
    if (session?.tenantId !== tenantId) throw new BerthError('not_found', `shell session ${id} is not open`, 'List open sessions with `berth shell ls`.', { sessionId: id });
    this.deps.agents.send(session.hostId, { type: 'shellClose', sessionId: id });
    const view = viewOf(session);
    this.end(session, { code: null, signal: null, error: 'the session was ended by `berth shell end`' }, 'operator');
    return view;
  }

  /** The host's agent disconnected (or the host is gone): its terminals are gone with it. */
  onAgentGone(hostId: string): void {
    for (const session of [...this.sessions.values()]) {
      if (session.hostId === hostId) this.end(session, { code: null, signal: null, error: `the agent of host ${hostId} disconnected; the terminal was closed` }, 'agent_gone');
    }
  }

  /** The server stops: every session ends (its terminal hangs up when the agent's connection drops). */
  closeAll(): void {
    clearInterval(this.idleSweep);
    for (const session of [...this.sessions.values()]) {
      this.deps.agents.send(session.hostId, { type: 'shellClose', sessionId: session.id });
      this.end(session, { code: null, signal: null, error: 'the berth server is stopping' }, 'server_stop');
    }
  }

  private endIdle(idleMs: number): void {
    const now = performance.now();
    for (const session of [...this.sessions.values()]) {
      if (session.state !== 'open' || now - session.lastActive < idleMs) continue;
      this.deps.agents.send(session.hostId, { type: 'shellClose', sessionId: session.id });
      this.end(session, { code: null, signal: null, error: `the session was idle for ${formatIdle(idleMs)} and was ended (berth server --shell-idle-timeout)` }, 'idle');
    }
  }

  private end(session: Session, exit: ShellExit, cause: ShellEndCause, tellClient = true): void {
    if (session.state === 'ended') return;
    const totals = this.totalsOf(session.tenantId);
    totals.ended[cause]++;
    totals.bytesIn += session.bytesIn;
    totals.bytesOut += session.bytesOut;
    const from = session.state;
    session.state = 'ended';
    clearTimeout(session.openTimer);
    this.sessions.delete(session.id);
    const how = exit.error ?? (exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code ?? '?'}`);
    this.event(session, 'closed', from, how);
    this.deps.recorder?.end(session.id, how);
    if (tellClient) session.client.ended(exit);
  }

  /** `actor`: the session's opening is its opener's doing (a WebSocket upgrade runs outside the routes' context). */
  private event(session: Session, state: string, from: State | undefined, reason: string, actor?: string): void {
    this.deps.events.emit({ kind: 'shell', id: session.id, tenantId: session.tenantId, state, ...(from ? { from } : {}), hostId: session.hostId, reason, ...(actor !== undefined ? { actor } : {}) });
  }
}

function formatIdle(ms: number): string {
  const s = ms / 1000;
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

function viewOf(s: Session): ShellSessionView {
  return {
    id: s.id,
    hostId: s.hostId,
    state: s.state === 'opening' ? 'opening' : 'open',
    ...(s.request.command !== undefined ? { command: s.request.command } : {}),
    ...(s.request.user !== undefined ? { user: s.request.user } : {}),
    ...(s.openedBy !== undefined ? { openedBy: s.openedBy } : {}),
    openedAt: s.openedAt.toISOString(),
    ...(s.pid !== undefined ? { pid: s.pid } : {}),
    bytesIn: s.bytesIn,
    bytesOut: s.bytesOut,
  };
}
