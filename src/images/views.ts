/** The shape of images as the API and the CLI show them. */
import type { ImageUsage } from '../store/images-repo.js';
import type { ImageRow } from '../store/schema.js';

export interface ImageView {
  name: string;
  id: string;
  parent: string;
  parentId: string | null;
  base: string;
  /** Every layer id, bottom to top (the parent's included). */
  layers: string[];
  /** Bytes of this image's own layers. */
  sizeBytes: number;
  createdAt: string;
  buildMs: number | null;
  usedBy: ImageUsage;
  /** inspect only: the manifest (own layers with timings and sizes, env, checks, source). */
  manifest?: Record<string, unknown>;
}

export function toImageView(row: ImageRow, usage: ImageUsage, withManifest = false): ImageView {
  const buildMs = row.manifest['buildMs'];
  return {
    name: row.name,
    id: row.id,
    parent: row.parent,
    parentId: row.parent_id,
    base: row.base,
    layers: row.layers,
    sizeBytes: row.size_bytes,
    createdAt: new Date(row.created_at).toISOString(),
    buildMs: typeof buildMs === 'number' ? buildMs : null,
    usedBy: usage,
    ...(withManifest ? { manifest: row.manifest } : {}),
  };
}
