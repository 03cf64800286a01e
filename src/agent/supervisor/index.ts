export { Supervisor, SERVICE_MARKER_ENV, type SupervisorOptions, type WaitOptions } from './supervisor.js';
export type { LogReadOptions } from './log-read.js';
export {
  InvalidServiceSetError,
  ServiceStartError,
  SupervisorDetachedError,
  SupervisorError,
  UnknownServiceError,
} from './errors.js';
