/**
 * Counts the embedded store's statements while a measured operation runs (the PGlite dialect's
 * single entry, PGliteStatements.query, wrapped once per process): how many round trips to the store a create costs, beside its time.
 * A count is kept only between start() and stop(), so the server's background work outside
 * that window is not in it (work it does inside the window is: the store is shared).
 */
import { PGliteStatements } from '../src/store/pglite-statements.js';

let counting = 0;
let statements = 0;
let patched = false;

function patch(): void {
  if (patched) return;
  patched = true;
  const proto = PGliteStatements.prototype;
  const query = Reflect.get<PGliteStatements, 'query'>(proto, 'query');
  proto.query = function (this: PGliteStatements, ...args: Parameters<PGliteStatements['query']>) {
    if (counting > 0) statements += 1;
    return query.apply(this, args);
  } as PGliteStatements['query'];
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
