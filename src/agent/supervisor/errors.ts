/** Errors the supervisor throws to its caller; each says plainly what was wrong. */

export class SupervisorError extends Error {
  override readonly name: string = 'SupervisorError';
}

/** converge() refused a set of services; nothing was changed. */
export class InvalidServiceSetError extends SupervisorError {
  override readonly name = 'InvalidServiceSetError';
  constructor(readonly problems: readonly string[]) {
    super(`invalid service set (nothing was changed): ${problems.join('; ')}`);
  }
}

export class UnknownServiceError extends SupervisorError {
  override readonly name = 'UnknownServiceError';
  constructor(readonly service: string) {
    super(`unknown service ${JSON.stringify(service)}`);
  }
}

/** The supervisor was detached (the agent is exiting); it no longer accepts commands. */
export class SupervisorDetachedError extends SupervisorError {
  override readonly name = 'SupervisorDetachedError';
  constructor() {
    super('the supervisor was detached from its services');
  }
}

/** A service's process could not be started at all (no such directory or user, exec failure). */
export class ServiceStartError extends SupervisorError {
  override readonly name = 'ServiceStartError';
}
