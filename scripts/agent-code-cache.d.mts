/** See agent-code-cache.mjs. */
export function writeAgentCodeCache(outDir: string, nodeFlags: readonly string[], nodePath?: string): Promise<{ rehearsed: boolean; error?: string }>;
