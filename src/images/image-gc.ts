/**
 * An image store's garbage: builds that are no longer current and that no live host runs, then the
 * layers no remaining build uses (a failed bake's among them). `berth image gc` collects it at once;
 * the server also collects it on its own (`--image-gc-after`, ImageService's timer) with a grace: a
 * layer no build uses goes only once it is older than that, so a failed bake's layers still serve
 * its next try, and a step cached a moment ago is not taken from a bake about to use it.
 */
import type { ImagesRepo } from '../store/images-repo.js';
import type { LayerStore } from './layer-store.js';

export interface GcResult {
  builds: number;
  layers: number;
  bytes: number;
}

export async function collectGarbage(deps: { images: ImagesRepo; layers: LayerStore }, tenantIds: readonly string[], opts: { layersCreatedBefore?: number } = {}): Promise<GcResult> {
  let builds = 0;
  for (const tenantId of tenantIds) {
    const inUse = await deps.images.idsInUse(tenantId);
    for (const row of await deps.images.all()) {
      if (row.tenant_id !== tenantId || row.current || inUse.has(row.id)) continue;
      builds += await deps.images.remove(tenantId, row.name, row.id);
    }
  }
  // Layers are shared by every tenant's builds: one that any build uses stays.
  const keep = new Set((await deps.images.all()).flatMap((row) => row.layers));
  const removed = await deps.layers.removeExcept(keep, opts.layersCreatedBefore === undefined ? {} : { createdBefore: opts.layersCreatedBefore });
  return { builds, ...removed };
}
