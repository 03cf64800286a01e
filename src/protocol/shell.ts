/**
 * Interactive shell sessions on a host (`berth host shell`), as SSM's Session Manager gives one: a
 * terminal (a pseudo-terminal on the host) relayed over the agent's one outbound connection, so a
 * host still opens no inbound port. Terminal bytes travel base64-encoded inside the JSON frames.
 *
 * Flow control, both ways: the agent stops reading the terminal while more than SHELL_WINDOW_BYTES
 * of its output are not yet acknowledged (`shellAck`, sent by the server once it has handed the
 * bytes to the client's socket), so a slow client slows the program down instead of filling memory;
 * and the server stops reading the client while more than SHELL_WINDOW_BYTES of input are not yet
 * written into the terminal (`shellInputTaken`). Either way one session has at most a window of
 * bytes on the agent's channel, which its Run Commands and service reports share. (What a program
 * does not read yet waits in `script`, which queues its terminal's input: the host's memory.)
 */
import * as z from 'zod/mini';

/** Output bytes the agent may have in flight before it waits for an acknowledgement. */
export const SHELL_WINDOW_BYTES = 1024 * 1024;
/** Sessions one host runs at once (each is a terminal and a shell). */
export const SHELL_MAX_SESSIONS_PER_HOST = 8;
/** A Unix user name the shell may run as (`su -l`). */
export const SHELL_USER_PATTERN = /^[a-z_][a-z0-9_-]{0,31}$/;
/** A terminal type, passed as TERM. */
export const SHELL_TERM_PATTERN = /^[A-Za-z0-9._+-]{1,64}$/;

const dimension = z.int().check(z.gte(1), z.lte(1000));
const sessionId = z.string().check(z.minLength(1), z.maxLength(64));

export const shellServerFrames = [
  z.object({
    type: z.literal('shellOpen'),
    sessionId,
    /** Run by the host's shell (`-c`) in the terminal; absent: the shell, as a login shell. */
    command: z.optional(z.string().check(z.minLength(1))),
    cwd: z.optional(z.string().check(z.startsWith('/'))),
    user: z.optional(z.string().check(z.regex(SHELL_USER_PATTERN))),
    term: z.string().check(z.regex(SHELL_TERM_PATTERN)),
    cols: dimension,
    rows: dimension,
  }),
  /** Keystrokes (or piped input) for the terminal. */
  z.object({ type: z.literal('shellInput'), sessionId, data: z.string() }),
  z.object({ type: z.literal('shellResize'), sessionId, cols: dimension, rows: dimension }),
  /** The client went away: the terminal hangs up (SIGHUP), and what ignores it is killed after a grace. */
  z.object({ type: z.literal('shellClose'), sessionId }),
  /** This many more output bytes of the session reached the client. */
  z.object({ type: z.literal('shellAck'), sessionId, bytes: z.int().check(z.positive()) }),
] as const;

export const shellAgentFrames = [
  z.object({ type: z.literal('shellOpened'), sessionId, pid: z.int() }),
  z.object({ type: z.literal('shellOutput'), sessionId, data: z.string() }),
  /** This many more input bytes of the session were written into the terminal. */
  z.object({ type: z.literal('shellInputTaken'), sessionId, bytes: z.int().check(z.positive()) }),
  /**
   * The session ended: the program's exit code or signal, or `error` when it could not start (then
   * both are null) or was cut off.
   */
  z.object({ type: z.literal('shellExit'), sessionId, code: z.nullable(z.int()), signal: z.nullable(z.string()), error: z.optional(z.string()) }),
] as const;

export type ShellOpen = z.infer<(typeof shellServerFrames)[0]>;
