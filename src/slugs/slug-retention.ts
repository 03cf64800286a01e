/**
 * The slug store's own collection: every `everyMs`, slugs no environment runs and none used for
 * `unusedForMs` go (slug-store.ts collect), with the fetched archives and half-made files. Without
 * it, a CI job deploying each push as a slug fills the server's disk a build at a time.
 */
import { errorMessage } from '../core/errors.js';
import type { SlugStore } from './slug-store.js';

export interface SlugRetentionDeps {
  slugs: Pick<SlugStore, 'collect'>;
  /** The digests of the slugs environments run (all tenants). */
  inUse: () => Promise<ReadonlySet<string>>;
  log: (line: string) => void;
}

/** Starts the timer; returns what stops it. */
export function startSlugRetention(deps: SlugRetentionDeps, opts: { unusedForMs: number; everyMs: number }): () => void {
  let running = false;
  const collect = async () => {
    if (running) return;
    running = true;
    try {
      const done = await deps.slugs.collect(await deps.inUse(), Date.now() - opts.unusedForMs);
      if (done.slugs > 0 || done.bytes > 0) deps.log(`slug gc: removed ${done.slugs} slug(s) no environment runs, ${done.bytes} bytes`);
    } catch (err) {
      deps.log(`slug gc failed: ${errorMessage(err)}`);
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void collect(), opts.everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
