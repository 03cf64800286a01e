/**
 * The berth agent: the first process in every host. It enrols with its per-host token, keeps one
 * outbound connection, and executes Run Commands with at-most-once semantics (see journal.ts).
 */
import { randomUUID } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';
import type { AgentIdentity, InvocationResult, ServerMessage, ServiceSpec } from '../protocol/messages.js';
import { HOST_TAGS_PATH, PROTOCOL_VERSION, SERVICE_LOG_DIR } from '../protocol/messages.js';
import { existsSync, readdirSync } from 'node:fs';
import type { Supervisor } from './supervisor/index.js';
import { AgentConnection } from './connection.js';
import { InvocationJournal } from './journal.js';
import { defaultShell, killInvocationProcesses, runShellScript, WarmShellPool } from './runcommand/index.js';
import type { ExecutionResult } from './runcommand/types.js';
import { ShellSessions } from './shell/shell-sessions.js';
import { readMachineStats } from './machine-stats.js';
import { HostTagsFile } from './host-tags.js';
import { isSameLiveProcess, readProcStat } from './procfs.js';

export const AGENT_VERSION = '0.1.0';
const IDLE_GC_DELAY_MS = 2000;
/** A command still running this long after it started is reported `accepted` (see onRun). */
const ACCEPTED_REPORT_DELAY_MS = 20;

export interface AgentOptions {
  identity: AgentIdentity;
  /** Where the journal, scratch files and the supervisor's state live (tmpfs: /run). */
  stateDir: string;
  /** Where services' logs go; default /var/log/berth. */
  serviceLogDir?: string;
  /** The host's tags file; default /etc/berth/tags.json. */
  tagsPath?: string;
  log?: (line: string) => void;
  outputLimitBytes?: number;
  killGraceMs?: number;
  /** The shell commands run in; default bash when present, else /bin/sh. */
  shell?: string;
  /**
   * Environment every command gets on top of the agent's own. The agent process sets its tools'
   * (BERTH_NODE, …) in its environment; agents sharing one process (tests' emulated machines) give theirs here.
   */
  env?: Record<string, string>;
  /** The server gave a new CA bundle for its channel (AgentConnection's onTrust). */
  onTrust?: (ca: string) => void;
  /** The server moved its channel to TLS (AgentConnection's onSwitch). */
  onSwitch?: (serverUrl: string, ca: string | undefined) => void;
  /** The channel closed (the agent redials by itself); the build's rehearsal stops there. */
  onDisconnect?: () => void;
}

export class Agent {
  private readonly journal: InvocationJournal;
  private readonly connection: AgentConnection;
  private readonly running = new Map<string, AbortController>();
  private readonly bootId = randomUUID();
  private readonly log: (line: string) => void;
  private readonly warmShells: WarmShellPool;
  private readonly shells: ShellSessions;
  private readonly tags: HostTagsFile;
  private idleTimer: NodeJS.Timeout | undefined;
  /**
   * Made on first use (a services message, or services a previous agent process left to re-adopt):
   * most hosts run none, and the supervisor's code is loaded only then (the agent's RSS and start
   * time are on every host's budget).
   */
  private supervisor: Promise<Supervisor> | undefined;
  private readonly supervisorDir: string;
  /** Converges run one after another, newest set last: a set that arrives meanwhile waits its turn. */
  private converging: Promise<void> = Promise.resolve();
  private reportTimer: NodeJS.Immediate | undefined;

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log ?? ((line) => process.stderr.write(`berth-agent: ${line}\n`));
    this.tags = new HostTagsFile(opts.tagsPath ?? HOST_TAGS_PATH, this.log);
    this.warmShells = new WarmShellPool(opts.shell ?? defaultShell(), opts.env ? { ...process.env, ...opts.env } : process.env);
    this.journal = new InvocationJournal(`${opts.stateDir}/invocations`);
    this.settleOrphans();
    this.supervisorDir = `${opts.stateDir}/services`;
    // Services outlive the agent: a new agent process re-adopts what the previous one started.
    if (hasEntries(this.supervisorDir)) void this.services();
    this.connection = new AgentConnection({
      serverUrl: opts.identity.serverUrl,
      ca: opts.identity.ca,
      ...(opts.onTrust ? { onTrust: opts.onTrust } : {}),
      ...(opts.onSwitch ? { onSwitch: opts.onSwitch } : {}),
      hostId: opts.identity.hostId,
      token: opts.identity.token,
      log: this.log,
      hello: () => ({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        hostId: opts.identity.hostId,
        agentVersion: AGENT_VERSION,
        bootId: this.bootId,
        pid: process.pid,
        invocations: this.journal.known(),
        tags: JSON.parse(this.tags.json()) as Record<string, string>,
      }),
      onMessage: (msg) => this.onMessage(msg),
      onClose: () => {
        this.shells.closeAll();
        this.opts.onDisconnect?.();
      },
    });
    this.shells = new ShellSessions({
      send: (msg) => this.connection.send(msg),
      env: () => ({ ...process.env, ...this.opts.env, BERTH_TAGS: this.tags.json() }),
      ...(this.opts.shell ? { shell: this.opts.shell } : {}),
      log: this.log,
    });
  }

  start(): void {
    this.connection.start();
    this.warmShells.fill();
  }

  /**
   * Leaves running invocations alone (the next agent process settles them, see settleOrphans) and
   * services running (the next agent process re-adopts them).
   */
  stop(): void {
    this.warmShells.stop();
    this.shells.closeAll();
    void this.supervisor?.then((s) => s.detach());
    if (this.reportTimer) clearImmediate(this.reportTimer);
    this.connection.stop();
  }

  /**
   * The host is being stopped (TERM to its init, passed on to the agent): services are stopped
   * properly, in reverse dependency order with their stop signals, before the agent goes. Unlike
   * runsvdir, which exits on TERM and leaves them to be killed.
   */
  async shutdown(): Promise<void> {
    await this.converging.catch(() => undefined);
    await this.supervisor?.then((s) => s.stopAll()).catch((err: unknown) => this.log(`stopping services: ${err instanceof Error ? err.message : String(err)}`));
    this.stop();
  }

  /**
   * Status changes come in bursts (a converge moves several services at once): one report for all
   * the changes of the same turn of the event loop. No longer a wait: a reload or a restart is on
   * the path of a claim that waits for it (an environment's create), and every ms shows.
   */
  private reportServicesSoon(): void {
    this.reportTimer ??= setImmediate(() => {
      this.reportTimer = undefined;
      const statuses = this.supervisor ? this.supervisor.then((s) => s.status()) : Promise.resolve([]);
      void statuses.then((list) => this.connection.send({ type: 'services', statuses: list }));
    });
  }

  private services(): Promise<Supervisor> {
    this.supervisor ??= import('./supervisor/index.js').then(
      ({ Supervisor }) =>
        new Supervisor({
          stateDir: this.supervisorDir,
          logDir: this.opts.serviceLogDir ?? SERVICE_LOG_DIR,
          log: this.log,
          onStatus: () => this.reportServicesSoon(),
        }),
    );
    return this.supervisor;
  }

  private converge(specs: ServiceSpec[]): void {
    this.converging = this.converging
      .then(async () => {
        // Nothing to run and nothing running: no supervisor needed.
        if (specs.length === 0 && !this.supervisor) return;
        await (await this.services()).converge(specs);
      })
      .catch((err: unknown) => this.log(`services: ${err instanceof Error ? err.message : String(err)}`))
      .finally(() => this.reportServicesSoon());
  }

  private serviceAction(name: string, action: 'start' | 'stop' | 'restart'): void {
    this.converging = this.converging
      .then(async () => {
        const supervisor = await this.services();
        if (action === 'stop') await supervisor.stop(name);
        else if (action === 'start') await supervisor.start(name);
        else await supervisor.restart(name);
      })
      .catch((err: unknown) => this.log(`service ${name}: ${action}: ${err instanceof Error ? err.message : String(err)}`))
      .finally(() => this.reportServicesSoon());
  }

  /**
   * Invocations journalled as running by a previous agent process: their output pipes died with it,
   * so their outcome cannot be known. Kill what is left of them (found by their marker variable)
   * and report that plainly.
   */
  private settleOrphans(): void {
    for (const entry of this.journal.all()) {
      if (entry.state !== 'running') continue;
      const shell = entry.shell && isSameLiveProcess(entry.shell.pid, entry.shell.startTime) ? { pgid: entry.shell.pid } : {};
      void killInvocationProcesses({ invocationId: entry.invocationId, ...shell }).catch(() => undefined);
      const now = new Date().toISOString();
      const empty = { text: '', truncated: false, bytes: 0 };
      this.journal.put({
        ...entry,
        state: 'finished',
        result: {
          status: 'Failed',
          statusDetail: 'the agent restarted while this command ran; its outcome is unknown and its processes were killed',
          exitCodes: [],
          stdout: empty,
          stderr: empty,
          startedAt: entry.startedAt,
          finishedAt: now,
        },
      });
    }
  }

  private onMessage(msg: ServerMessage): void {
    switch (msg.type) {
      case 'welcome':
        // The server learns of re-adopted services at once (a host without any has nothing to say).
        if (this.supervisor) this.reportServicesSoon();
        return;
      case 'services':
        this.converge(msg.services);
        return;
      case 'serviceAction':
        this.serviceAction(msg.name, msg.action);
        return;
      case 'tags':
        this.tags.set(msg.tags);
        return;
      case 'run':
        this.onRun(msg);
        return;
      case 'cancel':
        this.onCancel(msg.invocationId);
        return;
      case 'ack':
        this.journal.forget(msg.invocationId);
        return;
      case 'statsRequest':
        void readMachineStats().then(
          (stats) => this.connection.send({ type: 'stats', requestId: msg.requestId, stats }),
          (err: unknown) => this.connection.send({ type: 'stats', requestId: msg.requestId, stats: {}, error: err instanceof Error ? err.message : String(err) }),
        );
        return;
      default:
        this.shells.handle(msg);
    }
  }

  private onRun(msg: Extract<ServerMessage, { type: 'run' }>): void {
    const id = msg.invocationId;
    const existing = this.journal.get(id);
    if (existing) {
      // A duplicate delivery: never run twice; tell the server what we know.
      if (existing.state === 'finished' && existing.result) this.connection.send({ type: 'result', invocationId: id, result: existing.result });
      else this.connection.send({ type: 'accepted', invocationId: id, startedAt: existing.startedAt });
      return;
    }
    if (this.journal.wasAcknowledged(id)) return;
    if (msg.deliverBy && Date.parse(msg.deliverBy) < Date.now()) {
      // The server gave up on delivering it (DeliveryTimedOut): starting it now would run a command
      // the user was told never ran.
      const now = new Date().toISOString();
      this.finish(id, now, { ...failure(now, `not started: it arrived after its delivery deadline ${msg.deliverBy}`), status: 'Cancelled' });
      return;
    }
    const startedAt = new Date().toISOString();
    // The warm shell the run is about to take (runShellScript takes the idle one, synchronously).
    const shellPid = this.warmShells.idlePid();
    const shellStat = shellPid === undefined ? undefined : readProcStat(shellPid);
    this.journal.put({ invocationId: id, state: 'running', startedAt, ...(shellPid !== undefined && shellStat ? { shell: { pid: shellPid, startTime: shellStat.startTime } } : {}) });
    // `accepted` tells the server the command started; a command that ends sooner says so with its
    // result. Most end within milliseconds, and a message each way is a large share of their round
    // trip. Output is never sent before it.
    let acceptedSent = false;
    const sendAccepted = (): void => {
      clearTimeout(acceptTimer);
      if (acceptedSent) return;
      acceptedSent = true;
      this.connection.send({ type: 'accepted', invocationId: id, startedAt });
    };
    const acceptTimer = setTimeout(sendAccepted, ACCEPTED_REPORT_DELAY_MS);
    const controller = new AbortController();
    this.running.set(id, controller);
    const streamOutput = msg.streamOutput;
    // One decoder per stream, so a multibyte character split across chunks arrives whole.
    const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    runShellScript(
      id,
      { ...msg.parameters, env: { ...this.opts.env, BERTH_TAGS: this.tags.json(), ...msg.parameters.env } },
      {
        scratchDir: `${this.opts.stateDir}/scratch`,
        ...(this.opts.shell ? { shell: this.opts.shell } : {}),
        outputLimitBytes: this.opts.outputLimitBytes,
        killGraceMs: this.opts.killGraceMs,
        warmShells: this.warmShells,
      },
      {
        signal: controller.signal,
        ...(streamOutput
          ? {
              onOutput: (stream, chunk) => {
                const data = decoders[stream].write(chunk);
                if (!data) return;
                sendAccepted();
                this.connection.send({ type: 'output', invocationId: id, stream, data });
              },
            }
          : {}),
      },
    )
      .finally(() => clearTimeout(acceptTimer))
      .then(
        (result) => this.finish(id, startedAt, toWire(result)),
        (err: unknown) => this.finish(id, startedAt, failure(startedAt, `the agent could not run the command: ${String(err)}`)),
      );
  }

  private finish(id: string, startedAt: string, result: InvocationResult): void {
    this.running.delete(id);
    // Sent first, recorded right after, in the same turn: should the agent die in between, its
    // record says the command was running, which a restarted agent reports as interrupted, and the
    // server ignores for an invocation whose result it has.
    this.connection.send({ type: 'result', invocationId: id, result });
    try {
      this.journal.put({ invocationId: id, state: 'finished', startedAt, result });
    } catch (err) {
      // Without the record, an agent restarted before the server has the result would report the
      // invocation as interrupted.
      this.log(`invocation ${id}: could not record its result: ${err instanceof Error ? err.message : String(err)}`);
    }
    // Start the next warm shell only now, off the path of the result just sent.
    setImmediate(() => this.warmShells.fill());
    this.compactWhenIdle();
  }

  /**
   * An agent spends most of its life idle in a warm pool: once work stops, a full GC gives back the
   * memory that bursts of commands grew (`gc` is exposed by runAgent, see v8-tuning.ts).
   */
  private compactWhenIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.running.size === 0) (globalThis as { gc?: () => void }).gc?.();
    }, IDLE_GC_DELAY_MS);
    this.idleTimer.unref();
  }

  private onCancel(id: string): void {
    const controller = this.running.get(id);
    if (controller) {
      controller.abort();
      return;
    }
    const existing = this.journal.get(id);
    if (existing?.result) {
      this.connection.send({ type: 'result', invocationId: id, result: existing.result });
      return;
    }
    // Never seen: record it as cancelled so a late `run` for it is refused.
    const now = new Date().toISOString();
    this.finish(id, now, { ...failure(now, 'cancelled before it started'), status: 'Cancelled' });
  }
}

function toWire(result: ExecutionResult): InvocationResult {
  return {
    status: result.status,
    statusDetail: result.statusDetail,
    exitCodes: result.exitCodes,
    stdout: result.stdout,
    stderr: result.stderr,
    startedAt: result.startedAt.toISOString(),
    finishedAt: result.finishedAt.toISOString(),
  };
}

function failure(startedAt: string, detail: string): InvocationResult {
  const empty = { text: '', truncated: false, bytes: 0 };
  return { status: 'Failed', statusDetail: detail, exitCodes: [], stdout: empty, stderr: empty, startedAt, finishedAt: new Date().toISOString() };
}

function hasEntries(dir: string): boolean {
  try {
    return existsSync(dir) && readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}
