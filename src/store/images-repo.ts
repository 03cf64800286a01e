/**
 * Image records. Every build of a name is a row keyed by its content id; exactly one row per name is
 * current (what new hosts of that name boot from). Older rows stay while hosts still run them and
 * are removed by `image gc`. Layers live on disk (see images/layer-store.ts); rows only name them.
 */
import { sql, type Kysely } from 'kysely';
import type { Database, ImageRow } from './schema.js';
import { LIVE_HOST_STATES } from '../core/host-state.js';

export interface NewImage {
  tenantId: string;
  name: string;
  id: string;
  parent: string;
  parentId: string | null;
  base: string;
  layers: string[];
  manifest: Record<string, unknown>;
  sizeBytes: number;
}

export interface ImageUsage {
  /** Pools whose spec names the image. */
  pools: string[];
  /** Live hosts booted from any build of the image. */
  hosts: number;
}

export class ImagesRepo {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Makes `image` the current build of its name, in one transaction: the previous current build
   * stays as a row (hosts may run it), and every pool using the name starts a new generation, so
   * its hosts of the old build are replaced and never handed to a new claim. Returns those pools.
   */
  async publish(image: NewImage): Promise<{ rolledPools: string[] }> {
    return this.db.transaction().execute(async (tx) => {
      const previous = await tx
        .updateTable('images')
        .set({ current: false })
        .where('tenant_id', '=', image.tenantId)
        .where('name', '=', image.name)
        .where('current', '=', true)
        .returning('id')
        .execute();
      await tx
        .insertInto('images')
        .values({
          tenant_id: image.tenantId,
          name: image.name,
          id: image.id,
          current: true,
          parent: image.parent,
          parent_id: image.parentId,
          base: image.base,
          layers: JSON.stringify(image.layers),
          manifest: JSON.stringify(image.manifest),
          size_bytes: image.sizeBytes,
        })
        .onConflict((oc) =>
          oc.columns(['tenant_id', 'name', 'id']).doUpdateSet({ current: true, manifest: JSON.stringify(image.manifest), created_at: new Date() }),
        )
        .execute();
      if (previous.length === 1 && previous[0]?.id === image.id) return { rolledPools: [] };
      const rolled = await tx
        .updateTable('pools')
        .set({ generation: sql`generation + 1`, updated_at: new Date() })
        .where('tenant_id', '=', image.tenantId)
        .where('image', '=', image.name)
        .returning('name')
        .execute();
      return { rolledPools: rolled.map((r) => r.name) };
    });
  }

  async current(tenantId: string, name: string): Promise<ImageRow | undefined> {
    return this.db.selectFrom('images').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).where('current', '=', true).executeTakeFirst();
  }

  /** Any build with this id (the same content may be published under several names). */
  async byId(tenantId: string, id: string): Promise<ImageRow | undefined> {
    return this.db.selectFrom('images').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).orderBy('current', 'desc').executeTakeFirst();
  }

  async listCurrent(tenantId: string): Promise<ImageRow[]> {
    return this.db.selectFrom('images').selectAll().where('tenant_id', '=', tenantId).where('current', '=', true).orderBy('name').execute();
  }

  async builds(tenantId: string, name: string): Promise<ImageRow[]> {
    // Two builds published within one clock tick tie on created_at: the current one goes first.
    return this.db.selectFrom('images').selectAll().where('tenant_id', '=', tenantId).where('name', '=', name).orderBy('created_at', 'desc').orderBy('current', 'desc').execute();
  }

  /** Every build of every tenant: layers referenced by any of them are kept by gc. */
  async all(): Promise<ImageRow[]> {
    return this.db.selectFrom('images').selectAll().execute();
  }

  /** Who uses an image name: pools by name, live hosts by any of its builds' ids. */
  async usage(tenantId: string, name: string): Promise<ImageUsage> {
    const pools = await this.db.selectFrom('pools').select('name').where('tenant_id', '=', tenantId).where('image', '=', name).orderBy('name').execute();
    const hosts = await this.db
      .selectFrom('hosts')
      .select(sql<number>`count(*)::int`.as('n'))
      .where('tenant_id', '=', tenantId)
      .where('state', 'in', [...LIVE_HOST_STATES])
      .where('image_id', 'in', this.db.selectFrom('images').select('id').where('tenant_id', '=', tenantId).where('name', '=', name))
      .executeTakeFirst();
    return { pools: pools.map((p) => p.name), hosts: hosts?.n ?? 0 };
  }

  /** Image ids live hosts boot from (their builds must be kept). */
  async idsInUse(tenantId: string): Promise<Set<string>> {
    const rows = await this.db
      .selectFrom('hosts')
      .select('image_id')
      .distinct()
      .where('tenant_id', '=', tenantId)
      .where('state', 'in', [...LIVE_HOST_STATES])
      .where('image_id', 'is not', null)
      .execute();
    return new Set(rows.map((r) => r.image_id).filter((id): id is string => id !== null));
  }

  async remove(tenantId: string, name: string, id?: string): Promise<number> {
    let q = this.db.deleteFrom('images').where('tenant_id', '=', tenantId).where('name', '=', name);
    if (id !== undefined) q = q.where('id', '=', id);
    const result = await q.executeTakeFirst();
    return Number(result.numDeletedRows);
  }
}
