/**
 * The pure half of the SSM channel (no AWS calls): the fail-fast script berth sends as
 * AWS-RunShellScript's `commands`, reading the per-command exit codes it reports back out of
 * stderr, and SSM's invocation statuses mapped to berth's (src/core/command-status.ts).
 *
 * Why a wrapper: SSM joins the commands into one script and runs every line whatever the previous
 * ones returned; berth's semantics are fail-fast, and a user wants to know which command failed.
 */
import { BerthError } from '../../core/errors.js';
import { isTerminal, type InvocationStatus } from '../../core/command-status.js';

export interface ScriptSpec {
  commands: string[];
  workingDirectory?: string | undefined;
  env?: Record<string, string> | undefined;
  /**
   * The host's tags, as berth's agent gives them to commands: `BERTH_TAGS` (JSON; `env` may
   * override it). `json` = the tags now, also written to `file` first (a claim changed them);
   * absent = read from `file` (the boot script wrote it), `{}` without one.
   */
  tags?: { json?: string | undefined; file: string } | undefined;
}

/** One line per command that ran, on stderr: `##berth-ssm## cmd=<index> exit=<code>`. */
export const MARKER_PREFIX = '##berth-ssm##';
const MARKER_RE = /^##berth-ssm## cmd=(\d+) exit=(\d+)$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** POSIX single quotes: nothing inside is expanded; a quote is closed, escaped and reopened. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function invalid(message: string, hint: string): BerthError {
  return new BerthError('validation_failed', message, hint);
}

/** A NUL cannot travel in a shell script (nor in SSM's JSON parameters as text). */
function checkText(what: string, value: string): void {
  if (value.includes('\0')) throw invalid(`${what} contains a NUL byte`, 'Remove the NUL byte; shell scripts cannot carry one.');
}

/**
 * The script: exports the environment, changes to the working directory, then runs each command
 * with `eval` in this same shell (so `cd`, `export` and variables carry over from one command to
 * the next, as they do in SSM's own script), prints a marker with its exit code on stderr, and
 * exits with the first non-zero code. An `exit` (or a `set -e` abort) inside a command is reported
 * by the EXIT trap for the command that was running. POSIX sh only: SSM runs it with /bin/sh,
 * which is dash on Debian and Ubuntu.
 */
export function failFastScript(spec: ScriptSpec): string {
  if (spec.commands.length === 0) throw invalid('an SSM command needs at least one command line', 'Give the commands to run.');
  spec.commands.forEach((c, i) => checkText(`command ${i}`, c));
  const lines = [
    '# berth: run each command in turn, stop at the first that fails, report every exit code on stderr',
    '__berth_i=',
    `trap '__berth_rc=$?; [ -z "$__berth_i" ] || printf "${MARKER_PREFIX} cmd=%s exit=%s\\n" "$__berth_i" "$__berth_rc" >&2' EXIT`,
    '__berth_run() {',
    '  eval "$__berth_cmd"',
    '  __berth_rc=$?',
    `  printf '${MARKER_PREFIX} cmd=%s exit=%s\\n' "$__berth_i" "$__berth_rc" >&2`,
    '  __berth_i=',
    '  [ "$__berth_rc" -eq 0 ] || exit "$__berth_rc"',
    '}',
  ];
  if (spec.tags) lines.push(...tagsLines(spec.tags.json, spec.tags.file));
  for (const [name, value] of Object.entries(spec.env ?? {})) {
    if (!ENV_NAME_RE.test(name)) {
      throw invalid(`environment variable name ${JSON.stringify(name)} is not valid`, 'Use letters, digits and underscores, not starting with a digit.');
    }
    checkText(`environment variable ${name}`, value);
    lines.push(`export ${name}=${shellQuote(value)}`);
  }
  if (spec.workingDirectory !== undefined) {
    if (spec.workingDirectory === '') throw invalid('the working directory is empty', 'Give an absolute path, or leave it out.');
    checkText('the working directory', spec.workingDirectory);
    // SSM also gets workingDirectory as a parameter; the cd keeps the script right wherever it runs.
    const dir = shellQuote(spec.workingDirectory);
    lines.push(`cd -- ${dir} || { printf 'berth: cannot change to the working directory %s\\n' ${dir} >&2; exit 1; }`);
  }
  spec.commands.forEach((command, i) => lines.push(`__berth_i=${i}; __berth_cmd=${shellQuote(command)}; __berth_run`));
  return `${lines.join('\n')}\n`;
}

function tagsLines(json: string | undefined, file: string): string[] {
  const path = shellQuote(file);
  if (json === undefined) return [`BERTH_TAGS=$(cat -- ${path} 2>/dev/null) || BERTH_TAGS='{}'`, 'export BERTH_TAGS'];
  checkText('the host tags', json);
  const dir = shellQuote(file.slice(0, file.lastIndexOf('/')) || '/');
  const tmp = shellQuote(`${file}.berth-tmp`);
  // Through a rename, as berth's agent writes it: a reader never sees half a file.
  return [`export BERTH_TAGS=${shellQuote(json)}`, `{ mkdir -p -- ${dir} && printf '%s\\n' "$BERTH_TAGS" > ${tmp} && mv -f -- ${tmp} ${path}; } 2>/dev/null || :`];
}

/** stderr without berth's marker lines, and the exit code of each command that ran, in order. */
export function readMarkers(stderr: string): { stderr: string; exitCodes: number[] } {
  const exitCodes: number[] = [];
  const kept: string[] = [];
  for (const line of stderr.split('\n')) {
    const m = MARKER_RE.exec(line);
    if (m) exitCodes[Number(m[1])] = Number(m[2]);
    // A marker cut short by SSM's 24,000-character limit is still berth's, not the user's.
    else if (!line.startsWith(MARKER_PREFIX)) kept.push(line);
  }
  // Indices come from berth's own script; fill any gap (a line lost to truncation) rather than leave holes.
  return { stderr: kept.join('\n'), exitCodes: Array.from(exitCodes, (c) => c ?? -1) };
}

export interface MappedStatus {
  status: InvocationStatus;
  /** Why, in berth's words, when the status alone does not say it. */
  reason: string | undefined;
}

/** `DeliveryTimedOut`, `Delivery Timed Out`, `deliverytimedout`: SSM's docs and answers spell them both ways. */
function norm(value: string | undefined): string {
  return (value ?? '').replace(/[\s_-]/g, '').toLowerCase();
}

/**
 * SSM's Status (+ StatusDetails, which is finer) → berth's status. Undeliverable and Terminated
 * arrive as details of Failed/Cancelled in GetCommandInvocation, but are accepted as statuses too.
 */
export function mapSsmStatus(ssmStatus: string | undefined, statusDetails: string | undefined): MappedStatus {
  const details = norm(statusDetails);
  const status = norm(ssmStatus);
  if (details === 'undeliverable' || status === 'undeliverable') {
    return { status: 'Undeliverable', reason: 'SSM could not deliver the command: the instance may not exist, be stopped, or its agent may not be responding' };
  }
  if (details === 'terminated' || status === 'terminated') {
    return { status: 'Cancelled', reason: 'SSM cancelled the invocation: the command reached its MaxErrors limit on other instances' };
  }
  if (details === 'invalidplatform') return { status: 'Undeliverable', reason: 'the instance is not a Linux instance AWS-RunShellScript can run on' };
  switch (status) {
    case 'pending':
      return { status: 'Pending', reason: undefined };
    case 'delayed':
      return { status: 'Pending', reason: 'SSM could not reach the agent yet and is retrying (Delayed)' };
    case 'inprogress':
      return { status: 'InProgress', reason: undefined };
    case 'success':
      return { status: 'Success', reason: undefined };
    case 'cancelling':
      return { status: 'Cancelling', reason: undefined };
    case 'cancelled':
      return { status: 'Cancelled', reason: undefined };
    case 'timedout':
      if (details === 'deliverytimedout') return { status: 'DeliveryTimedOut', reason: 'the SSM agent did not pick the command up within the delivery timeout' };
      return { status: 'TimedOut', reason: 'the commands did not finish within the execution timeout' };
    case 'failed':
      return { status: 'Failed', reason: undefined };
    default:
      // Failing loudly beats polling forever on a status berth cannot tell terminal or not.
      return { status: 'Failed', reason: `SSM reported status ${ssmStatus ?? '(none)'}${statusDetails ? ` (${statusDetails})` : ''}, which berth does not know` };
  }
}

/** The fields of GetCommandInvocation's answer berth reads. */
export interface RawInvocation {
  Status?: string | undefined;
  StatusDetails?: string | undefined;
  ResponseCode?: number | undefined;
  StandardOutputContent?: string | undefined;
  StandardErrorContent?: string | undefined;
}

export interface SsmInvocation {
  commandId: string;
  instanceId: string;
  status: InvocationStatus;
  /** SSM's own status and details, for whoever compares with the AWS console. */
  ssmStatus: string;
  ssmStatusDetails: string | undefined;
  /** The script's exit code once terminal (SSM's ResponseCode); null while open or when nothing ran. */
  exitCode: number | null;
  /** SSM keeps the first 24,000 characters of each. */
  stdout: string;
  /** berth's marker lines removed. */
  stderr: string;
  /** Exit code of each command that ran, in order; the last one is the failure when status is Failed. */
  commandExitCodes: number[];
  /** Index of the command that failed, when one did. */
  failedCommand: number | undefined;
  reason: string | undefined;
}

export function readInvocation(commandId: string, instanceId: string, raw: RawInvocation): SsmInvocation {
  const mapped = mapSsmStatus(raw.Status, raw.StatusDetails);
  const { stderr, exitCodes } = readMarkers(raw.StandardErrorContent ?? '');
  const code = raw.ResponseCode;
  const exitCode = isTerminal(mapped.status) && code !== undefined && code >= 0 ? code : null;
  const last = exitCodes.length - 1;
  const failedCommand = last >= 0 && exitCodes[last] !== 0 ? last : undefined;
  let reason = mapped.reason;
  if (reason === undefined && mapped.status === 'Failed') {
    reason = failedCommand !== undefined ? `command ${failedCommand} exited with ${exitCodes[failedCommand]}; the commands after it did not run` : `the script exited with ${exitCode ?? 'an unknown code'}`;
  }
  return { commandId, instanceId, status: mapped.status, ssmStatus: raw.Status ?? '', ssmStatusDetails: raw.StatusDetails, exitCode, stdout: raw.StandardOutputContent ?? '', stderr, commandExitCodes: exitCodes, failedCommand, reason };
}
