/**
 * Who a state change is for: the API token whose request made it. The HTTP layer runs each route
 * handler inside `actorContext`, and the event bus stamps every event emitted in it with the
 * token's name — so `berth events` says who terminated a host or removed an environment, not only
 * that it happened. Berth's own work (the pool reconciler's refills and retirements, monitors,
 * sweeps) runs outside any request, or leaves it with `asSystem`: its events carry no actor.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

export interface Actor {
  tokenId: string;
  /** The token's name, as `berth token ls` shows it. */
  name: string;
}

export const actorContext = new AsyncLocalStorage<Actor>();

/** The token behind the work running now, if a request started it. */
export function currentActor(): Actor | undefined {
  return actorContext.getStore();
}

/** Runs `fn` (and whatever it starts) as berth's own work: a refill a claim kicked is not the claimer's. */
export function asSystem<T>(fn: () => T): T {
  return actorContext.exit(fn);
}
