/**
 * Reasons the agent gives in its reports that the server and the CLI act on (kept free of the
 * schemas' imports, so that the CLI can read them without loading them).
 */

/** A service stops with this reason when its host's service set no longer has it (a pool host taking one service of a stack). */
export const SERVICE_REMOVED_REASON = 'removed from the service set';
