/**
 * Counts the embedded store's statements while a measured operation runs (PGlite's `query`
 * wrapped once per process): how many round trips to the store a create costs, beside its time.
 * A count is kept only between start() and stop(), so the server's background work outside
 * that window is not in it (work it does inside the window is: the store is shared).
 */
import { PGlite } from '@electric-sql/pglite';

let counting = 0;
let statements = 0;
let patched = false;

function patch(): void {
  if (patched) return;
  patched = true;
  const proto = PGlite.prototype;
  // Inherited from PGlite's base class; the wrapper goes on PGlite's own prototype, in front of it.
  const query = Reflect.get(proto, 'query') as PGlite['query'] | undefined;
  if (typeof query !== 'function') throw new Error('PGlite has no query method to count');
  proto.query = function (this: PGlite, ...args: Parameters<PGlite['query']>) {
    if (counting > 0) statements += 1;
    return query.apply(this, args);
  } as PGlite['query'];
}

export class StatementCount {
  private total = 0;
  private windows = 0;

  constructor() {
    patch();
  }

  /** Counts the statements `run` makes (and whatever else reaches the store meanwhile). */
  async during<T>(run: () => Promise<T>): Promise<T> {
    const before = statements;
    counting += 1;
    try {
      return await run();
    } finally {
      counting -= 1;
      this.total += statements - before;
      this.windows += 1;
    }
  }

  /** Statements per window so far. */
  mean(): number {
    return this.windows === 0 ? NaN : this.total / this.windows;
  }
}
