/**
 * Commands this process sent and that are still open, held in memory with their rows: the last
 * invocation to settle completes the command without a count query, and a caller waiting on it gets
 * the finished command without reading it back. Commands sent before a restart are not here; for
 * them the store is asked instead.
 */
import { isTerminal, type InvocationStatus } from '../core/command-status.js';
import type { CommandRow, InvocationRow } from '../store/schema.js';

export interface FinishedCommand {
  command: CommandRow;
  invocations: InvocationRow[];
}

interface Entry {
  command: CommandRow;
  invocations: Map<string, InvocationRow>;
  remaining: number;
}

export class OpenCommands {
  private readonly entries = new Map<string, Entry>();

  track(command: CommandRow, invocations: InvocationRow[]): void {
    const remaining = invocations.filter((i) => !isTerminal(i.status as InvocationStatus)).length;
    if (remaining === 0) return;
    this.entries.set(command.id, { command, invocations: new Map(invocations.map((i) => [i.host_id, i])), remaining });
  }

  has(commandId: string): boolean {
    return this.entries.has(commandId);
  }

  /** Whether the command has rate control; undefined when it is not tracked here. */
  rateControlled(commandId: string): boolean | undefined {
    const entry = this.entries.get(commandId);
    return entry ? entry.command.rate_control !== null : undefined;
  }

  /** Replaces an open invocation's row (it was sent, and is still open). */
  update(row: InvocationRow): void {
    const entry = this.entries.get(row.command_id);
    if (entry?.invocations.has(row.host_id)) entry.invocations.set(row.host_id, row);
  }

  /**
   * Records a settled (terminal) invocation. Returns the finished command when this was the last
   * open one, null while others remain open, undefined when the command is not tracked here.
   */
  settle(row: InvocationRow): FinishedCommand | null | undefined {
    const entry = this.entries.get(row.command_id);
    if (!entry) return undefined;
    const previous = entry.invocations.get(row.host_id);
    entry.invocations.set(row.host_id, row);
    if (previous && !isTerminal(previous.status as InvocationStatus)) entry.remaining--;
    if (entry.remaining > 0) return null;
    this.entries.delete(row.command_id);
    return { command: entry.command, invocations: [...entry.invocations.values()].sort((a, b) => a.host_id.localeCompare(b.host_id)) };
  }
}
