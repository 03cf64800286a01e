/**
 * Following logs on hosts (`berth svc logs -f`, `berth env logs -f`): the agent's own follower runs
 * as a Run Command on each host (it loses no line across rotation, where `tail -F` polls on
 * overlayfs), and the CLI streams each command's output until it ends. Ctrl-C (or a TERM) cancels
 * the followers on their hosts, whose ends then end the streams.
 */
import { MAX_EXECUTION_TIMEOUT_SECONDS, type CommandView } from '../commands/views.js';
import type { ApiClient } from './client.js';

export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  data: string;
}

/** Starts the agent's follower of `file` on a host, from its last `lines` lines. */
export function startFollower(client: Pick<ApiClient, 'post'>, hostId: string, file: string, lines: number): Promise<CommandView> {
  const command = `exec "$BERTH_NODE" "$BERTH_AGENT_BUNDLE" follow -n ${lines} ${file}`;
  return client.post<CommandView>('/v1/commands', { targets: { hostIds: [hostId] }, parameters: { commands: [command], executionTimeout: MAX_EXECUTION_TIMEOUT_SECONDS } });
}

/** Streams the commands' output (`onOutput` gets the command's index) until every one has ended. */
export async function followCommands(client: ApiClient, commandIds: readonly string[], onOutput: (index: number, chunk: OutputChunk) => void): Promise<void> {
  const stop = () => {
    for (const id of commandIds) void client.post(`/v1/commands/${id}/cancel`, {}).catch(() => undefined);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await Promise.all(
      commandIds.map(async (id, index) => {
        for await (const raw of client.stream(`/v1/commands/${id}/output`)) {
          const event = raw as { type: string; stream?: string; data?: string };
          if (event.type === 'output' && event.data !== undefined) onOutput(index, { stream: event.stream === 'stderr' ? 'stderr' : 'stdout', data: event.data });
        }
      }),
    );
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
