export { runShellScript, buildScript, defaultShell, DEFAULT_KILL_GRACE_MS, OUTPUT_DRAIN_MS } from './execute.js';
export { OutputCapture, DEFAULT_OUTPUT_LIMIT_BYTES } from './output.js';
export { findInvocationProcesses, killInvocationProcesses, MARKER_ENV } from './sweep.js';
export type * from './types.js';
export { WarmShellPool } from './warm-shell.js';
