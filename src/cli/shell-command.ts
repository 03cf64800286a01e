/**
 * `berth host shell HOST [-- COMMAND...]`: a terminal on a host, as `ssh -t` or SSM's
 * `start-session` give one. On a terminal, keys go through raw (Ctrl-C reaches the host's program)
 * and the window's size follows; piped input is typed into the host's terminal, and its end is a
 * Ctrl-D. The exit code is the host program's (128 + N when signal N ended it), 1 when the session
 * was cut off. On a terminal, `~.` at the start of a line leaves a session that no longer answers
 * (as in ssh; `~~` sends one `~`).
 */
import type { Command } from 'commander';
import { constants } from 'node:os';
import type { WebSocket } from 'ws';
import type { EnvironmentView } from '../environments/views.js';
import type { Context } from './context.js';
import type { ShellSessionView } from '../shells/shell-broker.js';
import type { RecordingInfo } from '../shells/shell-recorder.js';
import { age, table, UsageError } from './output.js';

interface ExitFrame {
  type: 'exit';
  code: number | null;
  signal: string | null;
  error?: string;
}

/** End of input, as the terminal's line discipline reads it at the start of a line. */
const CTRL_D = Buffer.from([4]);

interface ShellOptions {
  cwd?: string;
  user?: string;
}

export function registerHostShellCommand(host: Command, ctx: Context): void {
  withShellOptions(host.command('shell'))
    .description("open a terminal on a host: a login shell, or COMMAND (after --); exits with the program's exit code")
    .argument('<id>', 'the host')
    .argument('[command...]', 'run this instead of a login shell')
    .action(async (id: string, command: string[], opts: ShellOptions) => {
      ctx.exitCode = await shell(ctx, id, command, opts);
    });
}

/** `berth env shell NAME`: the same, on an environment's host (the one running --service, if given). */
export function registerEnvShellCommand(env: Command, ctx: Context): void {
  withShellOptions(env.command('shell'))
    .description('open a terminal on an environment\'s host (the one running --service, when its services are on several)')
    .argument('<name>', 'the environment')
    .argument('[command...]', 'run this instead of a login shell')
    .option('--service <name>', "the host running this service of the environment's stack")
    .action(async (name: string, command: string[], opts: ShellOptions & { service?: string }) => {
      const view = await ctx.client().get<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`);
      // A review host (service null) runs every service of the stack.
      const candidates = opts.service ? view.hosts.filter((h) => h.service === opts.service || h.service === null) : view.hosts;
      const target = candidates[0];
      if (!target) {
        const on = view.hosts.map((h) => `${h.hostId} (${h.service ?? 'every service'})`).join(', ') || 'none';
        throw new UsageError(`environment ${name} has no host ${opts.service ? `for service ${opts.service}` : 'yet'}; its hosts: ${on}`);
      }
      ctx.exitCode = await shell(ctx, target.hostId, command, opts);
    });
}

/** `berth shell ls` and `berth shell end`: the open sessions, and ending one (an operator's). */
export function registerShellCommands(program: Command, ctx: Context): void {
  const shellCmd = program.command('shell').description('open shell sessions (open one with `berth host shell HOST`)');
  shellCmd
    .command('ls')
    .description('open shell sessions: host, program, since when, bytes each way')
    .option('--host <id>', 'only the sessions on this host')
    .option('--json', 'print JSON')
    .action(async (opts: { host?: string; json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const { sessions } = await ctx.client().get<{ sessions: ShellSessionView[] }>(`/v1/shells${opts.host ? `?host=${encodeURIComponent(opts.host)}` : ''}`);
      if (printer.json) return printer.out(`${JSON.stringify(sessions, null, 2)}\n`);
      if (sessions.length === 0) return printer.err('no shell sessions are open\n');
      printer.out(
        table(
          ['SESSION', 'HOST', 'STATE', 'AGE', 'BY', 'IN', 'OUT', 'PROGRAM'],
          sessions.map((s) => [s.id, s.hostId, s.state, age(s.openedAt), s.openedBy ?? '-', String(s.bytesIn), String(s.bytesOut), `${s.user ? `${s.user}: ` : ''}${s.command ?? 'login shell'}`]),
        ),
      );
    });
  shellCmd
    .command('end')
    .description("end a shell session: its terminal hangs up, and its user is told it was ended")
    .argument('<session>', 'the session id (`berth shell ls`)')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const view = await ctx.client().delete<ShellSessionView>(`/v1/shells/${encodeURIComponent(id)}`);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.err(`ended ${view.id} on ${view.hostId}\n`);
    });
  registerRecordingCommands(shellCmd, ctx);
}

/** `berth shell recordings` and `berth shell recording`: what recorded sessions showed (--record-shells). */
function registerRecordingCommands(shellCmd: Command, ctx: Context): void {
  shellCmd
    .command('recordings')
    .description('recorded shell sessions, newest first (the server runs with --record-shells)')
    .option('--host <id>', 'only the sessions on this host')
    .option('--json', 'print JSON')
    .action(async (opts: { host?: string; json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const { recordings } = await ctx.client().get<{ recordings: RecordingInfo[] }>(`/v1/shells/recordings${opts.host ? `?host=${encodeURIComponent(opts.host)}` : ''}`);
      if (printer.json) return printer.out(`${JSON.stringify(recordings, null, 2)}\n`);
      if (recordings.length === 0) return printer.err('no recorded shell sessions\n');
      printer.out(
        table(
          ['SESSION', 'HOST', 'STARTED', 'BYTES', 'ENDED', 'PROGRAM'],
          recordings.map((r) => [r.session, r.hostId, r.startedAt, String(r.bytes), r.ended?.how ?? '(open)', `${r.user ? `${r.user}: ` : ''}${r.command ?? 'login shell'}`]),
        ),
      );
    });
  shellCmd
    .command('recording')
    .description('print a recorded session: asciicast v2 (`> s.cast; asciinema play s.cast`), or with --text its output alone')
    .argument('<session>', 'the session id (`berth shell recordings`)')
    .option('--text', 'only the output, as the terminal received it (escape sequences kept: view it with `less -R`)')
    .action(async (session: string, opts: { text?: boolean }) => {
      const cast = await ctx.client().getText(`/v1/shells/${encodeURIComponent(session)}/recording`);
      if (!opts.text) return void process.stdout.write(cast);
      for (const line of cast.split('\n').slice(1)) {
        if (!line) continue;
        const [, kind, data] = JSON.parse(line) as [number, string, string];
        if (kind === 'o') process.stdout.write(data);
      }
    });
}

function withShellOptions(cmd: Command): Command {
  return cmd.option('--cwd <dir>', 'start in this directory (absolute)').option('--user <name>', 'run as this user of the host (a login shell of theirs, `su -l`)');
}

async function shell(ctx: Context, hostId: string, command: string[], opts: ShellOptions): Promise<number> {
  const stdout = process.stdout;
  const query = new URLSearchParams({
    // A terminal that does not know its size says 0.
    cols: String((stdout.isTTY && stdout.columns) || 80),
    rows: String((stdout.isTTY && stdout.rows) || 24),
    term: process.env['TERM'] && /^[A-Za-z0-9._+-]{1,64}$/.test(process.env['TERM']) ? process.env['TERM'] : 'xterm-256color',
  });
  if (command.length > 0) query.set('command', command.join(' '));
  if (opts.cwd) query.set('cwd', opts.cwd);
  if (opts.user) query.set('user', opts.user);
  const ws = await ctx.client().openSocket(`/v1/hosts/${encodeURIComponent(hostId)}/shell?${query.toString()}`);
  return relay(ws, process.stdin, stdout);
}

function relay(ws: WebSocket, stdin: NodeJS.ReadStream, stdout: NodeJS.WriteStream): Promise<number> {
  return new Promise((resolve) => {
    let exit: ExitFrame | undefined;
    const raw = stdin.isTTY;
    if (raw) stdin.setRawMode(true);
    let leftByEscape = false;
    const escape = new EscapeReader(() => {
      leftByEscape = true;
      ws.close(1000, 'the user left (~.)');
    });
    // The escape works on a terminal only, as ssh's: piped input is sent as it is.
    const onInput = (data: Buffer): void => {
      const out = raw ? escape.read(data) : data;
      if (out.length > 0 && ws.readyState === ws.OPEN) ws.send(out, { binary: true });
    };
    const onEnd = (): void => ws.send(CTRL_D, { binary: true });
    const onResize = (): void => {
      if (stdout.columns > 0 && stdout.rows > 0) ws.send(JSON.stringify({ type: 'resize', cols: stdout.columns, rows: stdout.rows }));
    };
    stdin.on('data', onInput);
    stdin.once('end', onEnd);
    if (stdout.isTTY) stdout.on('resize', onResize);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return void stdout.write(data);
      try {
        const frame = JSON.parse(data.toString('utf8')) as ExitFrame;
        if (frame.type === 'exit') exit = frame;
      } catch {
        // not ours: ignore
      }
    });
    ws.once('close', () => {
      stdin.off('data', onInput);
      stdin.off('end', onEnd);
      stdout.off('resize', onResize);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      if (leftByEscape) {
        process.stderr.write('\r\nberth: left the session (~.); its terminal hung up\n');
        return resolve(0);
      }
      if (exit?.code !== null && exit?.code !== undefined) return resolve(exit.code);
      const signo = exit?.signal ? constants.signals[exit.signal as keyof typeof constants.signals] : undefined;
      if (signo !== undefined) return resolve(128 + signo);
      process.stderr.write(`${raw ? '\r\n' : ''}berth: ${exit?.error ?? 'the connection to the server was lost'}\n`);
      resolve(1);
    });
    ws.on('error', () => undefined); // 'close' follows
  });
}

/**
 * ssh's escape, at the start of a line: `~.` leaves, `~~` is one `~`, `~` and anything else is sent
 * as typed. Keys come one chunk per keystroke on a raw terminal; a paste comes whole and is passed
 * through, but for an escape at its start.
 */
export class EscapeReader {
  private lineStart = true;
  private pending = false;

  constructor(private readonly leave: () => void) {}

  /** What to send of `data`. */
  read(data: Buffer): Buffer {
    const out: number[] = [];
    for (const byte of data) {
      if (this.pending) {
        this.pending = false;
        if (byte === 0x2e) {
          this.leave();
          return Buffer.from(out);
        }
        if (byte !== 0x7e) out.push(0x7e);
        out.push(byte);
      } else if (this.lineStart && byte === 0x7e) {
        this.pending = true;
        continue;
      } else out.push(byte);
      this.lineStart = byte === 0x0d || byte === 0x0a;
    }
    return Buffer.from(out);
  }
}
