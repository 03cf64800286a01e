/**
 * The steps that only put files into an image: copy, fetch, slug, env, and the agent. Each works on
 * a writable view of the image so far (see builder.ts), with every image path resolved inside the
 * view (root-path.ts): a symlink in the image never leads a step to the machine's own files.
 */
import { chmod, cp, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { IMAGE_ENV_PATH } from '../protocol/messages.js';
import { ArtifactCache } from './artifacts.js';
import { resolveInRoot } from './root-path.js';
import type { ImageStep } from './spec.js';
import { unpackTarSafely } from './unpack.js';

/** Where images keep the agent they were baked with (the local driver mounts the server's own over /.berth/agent). */
export const IMAGE_AGENT_DIR = '/usr/local/lib/berth/agent';

export interface FileStepContext {
  /** The view of the image, mounted writable. */
  root: string;
  projectDir: string;
  artifacts: ArtifactCache;
  /** The image's environment including this step's (env steps). */
  env: Record<string, string>;
  signal?: AbortSignal;
  progress: (line: string) => void;
}

type FileStep = Extract<ImageStep, { kind: 'copy' | 'fetch' | 'slug' | 'env' }>;

export async function applyFileStep(step: FileStep, ctx: FileStepContext): Promise<void> {
  switch (step.kind) {
    case 'copy':
      return copyStep(step, ctx);
    case 'fetch':
      return fetchStep(step, ctx);
    case 'slug':
      return slugStep(step, ctx);
    case 'env':
      return writeImageEnv(ctx.root, ctx.env);
  }
}

/** The machine path of an image path in the view, its missing parent directories created. */
async function target(root: string, imagePath: string, isDir: boolean): Promise<string> {
  const resolved = resolveInRoot(root, imagePath);
  await mkdir(isDir ? resolved : dirname(resolved), { recursive: true, mode: 0o755 });
  return resolved;
}

async function copyStep(step: Extract<ImageStep, { kind: 'copy' }>, ctx: FileStepContext): Promise<void> {
  const src = posix.resolve(ctx.projectDir, step.src);
  const isDir = (await stat(src)).isDirectory();
  // Like `cp src dest`: a directory's contents land in dest; a file lands at dest, or in it when
  // dest ends with '/'.
  const destPath = !isDir && step.dest.endsWith('/') ? posix.join(step.dest, basename(src)) : step.dest;
  const dest = await target(ctx.root, destPath, isDir);
  await cp(src, dest, { recursive: true, force: true, preserveTimestamps: true, verbatimSymlinks: true });
  if (step.mode !== undefined) await chmodFiles(dest, step.mode);
  ctx.progress(`copied ${step.src} to ${destPath}`);
}

async function fetchStep(step: Extract<ImageStep, { kind: 'fetch' }>, ctx: FileStepContext): Promise<void> {
  const artifact = await fetchArtifact(step, ctx);
  ctx.progress(`${artifact.cached ? 'cached' : 'fetched'} ${describeSource(step.source)} (${artifact.bytes} bytes, sha256 ${artifact.sha256.slice(0, 12)})`);
  if (step.extract) {
    const dest = await target(ctx.root, step.dest, true);
    const result = await unpackTarSafely(artifact.path, dest, { maxBytes: step.maxBytes }, ctx.signal);
    ctx.progress(`unpacked ${result.files} files (${result.bytes} bytes) into ${step.dest}`);
    return;
  }
  const dest = await target(ctx.root, step.dest, false);
  await cp(artifact.path, dest, { force: true });
  await chmod(dest, step.mode ?? 0o644);
}

async function slugStep(step: Extract<ImageStep, { kind: 'slug' }>, ctx: FileStepContext): Promise<void> {
  const artifact = await fetchArtifact(step, ctx);
  const dest = await target(ctx.root, step.dest, true);
  const result = await unpackTarSafely(artifact.path, dest, { maxBytes: step.maxBytes }, ctx.signal);
  ctx.progress(`unpacked slug ${describeSource(step.source)} into ${step.dest}: ${result.files} files, ${result.bytes} bytes`);
}

/** The step's artifact, from the cache by digest or fetched and checked. */
function fetchArtifact(step: Extract<ImageStep, { kind: 'fetch' | 'slug' }>, ctx: FileStepContext): ReturnType<ArtifactCache['get']> {
  return ctx.artifacts.get(sourceOf(step.source, ctx.projectDir), {
    ...(step.sha256 ? { sha256: step.sha256 } : {}),
    maxBytes: step.maxBytes,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    onProgress: progressReporter(ctx.progress),
  });
}

/** Copies the agent bundle into the image, so the image is complete without berth's own files. */
export async function writeAgent(root: string, agentDir: string): Promise<void> {
  const dest = await target(root, IMAGE_AGENT_DIR, true);
  await cp(agentDir, dest, { recursive: true, force: true });
}

export async function writeImageEnv(root: string, env: Record<string, string>): Promise<void> {
  const lines = Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  const file = await target(root, IMAGE_ENV_PATH, false);
  await writeFile(file, lines.length ? `${lines.join('\n')}\n` : '', { mode: 0o644 });
}

export function sourceOf(source: { url: string } | { path: string }, projectDir: string): { url: string } | { path: string } {
  return 'url' in source ? source : { path: posix.resolve(projectDir, source.path) };
}

export function describeSource(source: { url: string } | { path: string }): string {
  return 'url' in source ? source.url : source.path;
}

function progressReporter(progress: (line: string) => void): (bytes: number, total?: number) => void {
  let nextReport = 64 * 1024 * 1024;
  return (bytes, total) => {
    if (bytes < nextReport) return;
    nextReport += 64 * 1024 * 1024;
    progress(`downloaded ${Math.round(bytes / 1048576)} MiB${total ? ` of ${Math.round(total / 1048576)} MiB` : ''}`);
  };
}

async function chmodFiles(path: string, mode: number): Promise<void> {
  const st = await stat(path);
  if (!st.isDirectory()) return chmod(path, mode);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) await chmodFiles(full, mode);
    else if (entry.isFile()) await chmod(full, mode);
  }
}
