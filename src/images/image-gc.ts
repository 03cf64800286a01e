/**
 * An image store's garbage: builds that are no longer current and that no live host runs, then the
 * layers no remaining build uses (a failed bake's among them), and the cached artifacts of `fetch`
 * steps no bake used lately (a bake that needs one again fetches it again, by its checksum). `berth image gc` collects it at once;
 * the server also collects it on its own (`--image-gc-after`, ImageService's timer) with a grace: a
 * layer no build uses goes only once it is older than that, so a failed bake's layers still serve
 * its next try, and a step cached a moment ago is not taken from a bake about to use it.
 */
import type { ImagesRepo } from '../store/images-repo.js';
import type { ArtifactCache } from './artifacts.js';
import type { LayerStore } from './layer-store.js';

export interface GcResult {
  builds: number;
  layers: number;
  /** Cached artifacts of fetch steps. */
  artifacts: number;
  bytes: number;
}

/** `artifactsUnusedBefore` (ms since the epoch): artifacts last used before it go; default none. */
export async function collectGarbage(
  deps: { images: ImagesRepo; layers: LayerStore; artifacts?: ArtifactCache },
  tenantIds: readonly string[],
  opts: { layersCreatedBefore?: number; artifactsUnusedBefore?: number } = {},
): Promise<GcResult> {
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
  const artifacts = deps.artifacts && opts.artifactsUnusedBefore !== undefined ? await deps.artifacts.collect(opts.artifactsUnusedBefore) : { files: 0, bytes: 0 };
  return { builds, layers: removed.layers, artifacts: artifacts.files, bytes: removed.bytes + artifacts.bytes };
}
