/**
 * The agent's invocation journal: one small JSON file per invocation in the agent's state dir (inside
 * the host's own writable layer). Written before an invocation starts, so a repeated `run` after a
 * reconnect or an agent restart is recognised and never executed twice; and after it ends, so its
 * result survives until the server acknowledges it.
 */
import { mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { InvocationResult, KnownInvocation } from '../protocol/messages.js';

export interface JournalEntry {
  invocationId: string;
  state: 'running' | 'finished';
  startedAt: string;
  /**
   * The warm shell it was to run in (pid = process group, and its start time against pid reuse):
   * that shell got its marker variable only by `export`, so after an agent restart the shell itself
   * is found by its group, not by its environment.
   */
  shell?: { pid: number; startTime: number };
  result?: InvocationResult;
}

export class InvocationJournal {
  private readonly entries = new Map<string, JournalEntry>();

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      if (!name.endsWith('.json')) continue;
      try {
        const entry = JSON.parse(readFileSync(join(dir, name), 'utf8')) as JournalEntry;
        this.entries.set(entry.invocationId, entry);
      } catch {
        removeFile(join(dir, name));
      }
    }
  }

  get(id: string): JournalEntry | undefined {
    return this.entries.get(id);
  }

  all(): JournalEntry[] {
    return [...this.entries.values()];
  }

  /** Synchronous on purpose: the entry must be on disk before the command starts. */
  put(entry: JournalEntry): void {
    this.entries.set(entry.invocationId, entry);
    const file = join(this.dir, `${safeName(entry.invocationId)}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(entry));
    renameSync(`${file}.tmp`, file);
  }

  /** The server has stored the result: keep only a tombstone id so a late duplicate `run` is refused. */
  forget(id: string): void {
    const entry = this.entries.get(id);
    if (!entry || entry.state !== 'finished') return;
    this.entries.delete(id);
    removeFile(join(this.dir, `${safeName(id)}.json`));
    this.acknowledged.add(id);
    if (this.acknowledged.size > 10_000) {
      const oldest = this.acknowledged.values().next().value;
      if (oldest !== undefined) this.acknowledged.delete(oldest);
    }
  }

  wasAcknowledged(id: string): boolean {
    return this.acknowledged.has(id);
  }

  private readonly acknowledged = new Set<string>();

  known(): KnownInvocation[] {
    return this.all().map((e) => ({
      invocationId: e.invocationId,
      state: e.state,
      startedAt: e.startedAt,
      ...(e.result ? { result: e.result } : {}),
    }));
  }
}

function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9_.-]/g, '_');
}

/**
 * unlink, a missing file being fine. Not rmSync: on node 20 it loads a module of its own on first
 * use (rimraf), which the agent, its V8 flags set by then, would compile from source on every host.
 */
function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
