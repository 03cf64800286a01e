/**
 * Giving an environment's hosts back: each released into its pool as the pool says (reset for the
 * next user, `onRelease: reuse`, or terminated), except hosts that may still be attached to a load
 * balancer, which are never reused; in `service` mode the environment's load balancing is removed
 * first. A host gone already is no error; any other failure is logged and the rest go on.
 */
import { BerthError, errorMessage } from '../core/errors.js';
import type { EnvHostRecord, EnvironmentRow, PoolRow } from '../store/schema.js';
import type { LoadBalancedServices } from './load-balancing.js';

export interface ReleaseDeps {
  pools: { get(tenantId: string, name: string): Promise<PoolRow | undefined> };
  release(tenantId: string, hostId: string, opts: { reuse: boolean }): Promise<unknown>;
  log: (line: string) => void;
}

export class HostRelease {
  constructor(
    private readonly deps: ReleaseDeps,
    private readonly balancing: LoadBalancedServices | undefined,
  ) {}

  /**
   * Gives back hosts of `row`, out of its load balancing first (service mode); `balanced`: the
   * services attached so far (default: all). A host that may still be attached is terminated.
   */
  async letGo(row: Pick<EnvironmentRow, 'tenant_id' | 'name' | 'pool' | 'mode'>, hosts: readonly EnvHostRecord[], why: string, balanced?: ReadonlySet<string>): Promise<void> {
    if (hosts.length === 0) return;
    const attached = balanced ? hosts.filter((h) => h.service !== null && balanced.has(h.service)) : hosts;
    const unbalanced = !this.balancing || row.mode !== 'service' || (await this.balancing.remove({ tenantId: row.tenant_id, name: row.name }, attached, why));
    await this.releaseAll(row.tenant_id, row.pool, hosts, why, unbalanced ? undefined : hosts);
  }

  /** `terminate`: hosts that may still be registered with a load balancer, never reset into the pool. */
  async releaseAll(tenantId: string, poolName: string, hosts: readonly EnvHostRecord[], why: string, terminate: readonly EnvHostRecord[] = []): Promise<void> {
    if (hosts.length === 0) return;
    const pool = await this.deps.pools.get(tenantId, poolName);
    const reuse = pool?.on_release === 'reuse';
    const noReuse = new Set(terminate.map((h) => h.hostId));
    await Promise.all(
      hosts.map((h) =>
        this.deps.release(tenantId, h.hostId, { reuse: reuse && !noReuse.has(h.hostId) }).catch((err: unknown) => {
          if (err instanceof BerthError && err.code === 'host_not_found') return;
          this.deps.log(`${why}: releasing ${h.hostId}: ${errorMessage(err)}`);
        }),
      ),
    );
  }
}
