/**
 * Notices when a pool's roll is complete (a new image or template made a new generation, and no
 * waiting host of an older one is left in it) and says so as an event, `pool NAME roll-complete`:
 * what a pipeline following `berth events` waits for, as `berth apply --wait` does through status.
 * In memory: after a restart a roll still under way is noticed again at the next pass.
 */
import { poolEvent } from '../events/changes.js';
import { NO_EVENTS, type EventSink } from '../events/types.js';
import type { PoolMember } from '../store/hosts-repo.js';
import type { PoolRow } from '../store/schema.js';

export class RollWatch {
  /** Pools with waiting hosts of an older generation at their last pass. */
  private readonly rolling = new Set<string>();

  constructor(private readonly events: EventSink = NO_EVENTS) {}

  /** One reconciler pass's view of the pool and its hosts. */
  observe(pool: Pick<PoolRow, 'tenant_id' | 'name' | 'generation'>, members: readonly PoolMember[]): void {
    const key = `${pool.tenant_id}/${pool.name}`;
    const old = members.filter((h) => h.generation !== pool.generation && (h.slot === 'ready' || h.slot === 'warming')).length;
    if (old > 0) {
      this.rolling.add(key);
      return;
    }
    if (!this.rolling.delete(key)) return;
    this.events.emit({ ...poolEvent(pool.tenant_id, pool.name, 'roll-complete'), reason: `no waiting host of a generation before ${pool.generation} is left` });
  }

  forget(tenantId: string, name: string): void {
    this.rolling.delete(`${tenantId}/${name}`);
  }
}
