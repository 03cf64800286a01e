/**
 * Typed errors with stable codes. Every error a user can see carries a code (stable, machine-readable),
 * a message (what happened) and a hint (what to do next). The HTTP layer maps `status`; the CLI maps
 * 4xx to exit code 2 (bad usage) and everything else to 1.
 */
export type ErrorCode =
  | 'bad_request'
  | 'validation_failed'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'host_not_found'
  | 'command_not_found'
  | 'host_not_connected'
  | 'no_targets'
  | 'conflict'
  | 'invalid_state'
  | 'driver_unavailable'
  | 'launch_failed'
  | 'deadline_exceeded'
  | 'server_unreachable'
  | 'pool_not_found'
  | 'pool_exists'
  | 'pool_empty'
  | 'pool_failing'
  | 'claim_not_found'
  | 'claim_failed'
  | 'host_not_claimed'
  | 'image_not_found'
  | 'image_in_use'
  | 'bake_failed'
  | 'stack_not_found'
  | 'environment_not_found'
  | 'environment_exists'
  | 'environment_failed'
  | 'token_not_found'
  | 'token_exists'
  | 'standby'
  | 'internal';

const STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  validation_failed: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  host_not_found: 404,
  command_not_found: 404,
  host_not_connected: 409,
  no_targets: 400,
  conflict: 409,
  invalid_state: 409,
  driver_unavailable: 503,
  launch_failed: 500,
  deadline_exceeded: 504,
  server_unreachable: 503,
  pool_not_found: 404,
  token_not_found: 404,
  token_exists: 409,
  pool_exists: 409,
  pool_empty: 503,
  // Its hosts keep failing to become ready: a claim does not launch another while the pool backs off.
  pool_failing: 503,
  claim_not_found: 404,
  // The claim's init failed on every host it tried (or its deadline passed): the request is fine,
  // the work is not.
  claim_failed: 422,
  host_not_claimed: 409,
  image_not_found: 404,
  image_in_use: 409,
  // A step, test or the clone-uniqueness check failed: the spec is well-formed, the bake is not.
  bake_failed: 422,
  stack_not_found: 404,
  environment_not_found: 404,
  environment_exists: 409,
  // Its hosts were claimed but a service never became ready (or its stack's tags made no sense).
  environment_failed: 422,
  // A standby server (--standby) waiting for the database: another server is the active one.
  standby: 503,
  internal: 500,
};

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  hint: string;
  details?: Record<string, unknown>;
}

export class BerthError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, hint: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    super(message, options);
    this.name = 'BerthError';
    this.code = code;
    this.hint = hint;
    this.details = details;
  }

  get status(): number {
    return STATUS[this.code];
  }

  toJSON(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message, hint: this.hint };
    if (this.details) body.details = this.details;
    return body;
  }
}

export function isBerthError(err: unknown): err is BerthError {
  return err instanceof BerthError;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A listener that could not start, as a person can act on it: which address, why in plain words,
 * and (in `hint`) the option that moves it.
 */
export function listenError(err: unknown, what: string, address: string, hint: string): BerthError {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
  const reason =
    code === 'EADDRINUSE'
      ? 'another program (or another berth server) uses that port'
      : code === 'EADDRNOTAVAIL'
        ? 'this machine has no such address'
        : code === 'EACCES'
          ? 'a port below 1024 needs root'
          : errorMessage(err);
  return new BerthError('conflict', `${what} cannot listen on ${address}: ${reason}`, hint, undefined, { cause: err });
}
