/**
 * An image spec as the shell steps of an AMI bake (ami-builds.ts): each step of berth.yaml becomes
 * one command run as root on the builder. Files a step puts into the image (copy, fetch, slug) are
 * checked and packed on the server, served by the agent gateway (the slug store's files), and the
 * builder's agent fetches and unpacks them. What an AMI bake cannot do is refused before anything
 * is launched.
 *
 * Every image path is written under `$R`, the builder's root: empty on an instance (its own `/`),
 * a directory when the machine is one (tests' emulated machines set BERTH_MACHINE_ROOT). The
 * runner's prelude (AMI_PRELUDE) sets it, and `$1` to it, which the identity strip and check take.
 */
import { chmod, cp, mkdir, readdir, stat } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { c as createTar } from 'tar';
import { IMAGE_ENV_PATH } from '../protocol/messages.js';
import type { ArtifactCache } from './artifacts.js';
import { DEFAULT_TEST_TIMEOUT_S, stepTitle } from './builder.js';
import { baseChainId, canonicalJson, fileDigest, layerId, sha256, treeDigest } from './digests.js';
import { sourceOf } from './file-steps.js';
import { ImageSpecError, stepDefinition, type ImageSpec, type ImageStep } from './spec.js';
import { unpackTarSafely } from './unpack.js';

/** Set on machines whose root is a directory (tests' emulated ones); unset on an instance. */
export const MACHINE_ROOT_ENV = 'BERTH_MACHINE_ROOT';
/** First command of every invocation on a builder: `$R` and `$1` = the machine's root ('' = `/`). */
export const AMI_PRELUDE = `R="\${${MACHINE_ROOT_ENV}:-}"; R="\${R%/}"; set -- "$R"`;
const AGENT_TOOL = '"${BERTH_NODE:-node}" "${BERTH_AGENT_BUNDLE:-/usr/local/lib/berth/agent/berth-agent.cjs}"';
const DEFAULT_RUN_TIMEOUT_S = 3600;
const FILE_TIMEOUT_S = 1800;

export interface AmiStep {
  /** 1-based, as the CLI numbers steps. */
  index: number;
  title: string;
  command: string;
  timeoutS: number;
}

/** A test step: run on an instance of the new AMI (the first of the clone check's) before the AMI is published. */
export interface AmiTest {
  title: string;
  /** Where the step is written (`file:line:col: images.NAME.steps[i]`), for its failure. */
  where: string;
  command: string;
  timeoutS: number;
}

/** A step whose files the server packs before the bake: `stage` fills `dir`, unpacked at `dest`. */
interface FileInput {
  index: number;
  dest: string;
  stage: (dir: string, artifacts: ArtifactCache, signal?: AbortSignal) => Promise<void>;
}

export interface AmiPlan {
  specDigest: string;
  layerDigests: string[];
  definitions: Record<string, unknown>[];
  env: Record<string, string>;
  /** The steps, once each file input's URL is known. */
  steps: (urls: Map<number, string>) => AmiStep[];
  inputs: FileInput[];
  tests: AmiTest[];
}

type Step = Exclude<ImageStep, { kind: 'test' }>;

/** What an AMI bake cannot do, said where it is written; throws before anything runs. */
export function checkAmiSpec(spec: ImageSpec): void {
  if (spec.identity.strip.length > 0 || spec.identity.keep.length > 0) {
    throw new ImageSpecError([{ ...spec.at, path: `images.${spec.name}.identity`, message: 'identity strip/keep lists are not applied to AMIs: the builder is stripped by a fixed script', hint: 'Remove identity: for AWS images, or remove the files in a run step.' }]);
  }
  if (spec.parent.startsWith('/') && spec.parent !== '/') {
    throw new ImageSpecError([{ ...spec.at, path: `images.${spec.name}.parent`, message: `parent ${JSON.stringify(spec.parent)} is a directory, which cannot be booted on AWS`, hint: "Use parent: / (the driver's AMI) or another image baked on this driver." }]);
  }
}

/** Digests and commands of a bake of `spec` on `parentImageId`; reads the inputs' digests, runs nothing. */
export async function planAmiSteps(spec: ImageSpec, parentImageId: string, parentEnv: Record<string, string>, projectDir: string, identityDigest: string): Promise<AmiPlan> {
  checkAmiSpec(spec);
  const steps = spec.steps.filter((s): s is Step => s.kind !== 'test');
  let env = { ...parentEnv };
  let chain = baseChainId(parentImageId);
  const layerDigests: string[] = [];
  const definitions: Record<string, unknown>[] = [];
  const inputs: FileInput[] = [];
  const makers: ((urls: Map<number, string>) => AmiStep)[] = [];
  for (const [i, step] of steps.entries()) {
    const index = i + 1;
    if (step.kind === 'env') env = { ...env, ...step.env };
    const definition = { ...stepDefinition(step), ...(await inputDigests(step, projectDir)), ...(step.kind === 'env' ? { imageEnv: env } : {}) };
    definitions.push(definition);
    chain = layerId(chain, definition);
    layerDigests.push(chain);
    const title = stepTitle(step);
    const stepEnv = env;
    if (step.kind === 'run') {
      makers.push(() => ({ index, title, command: runCommand(step, stepEnv), timeoutS: step.timeoutSeconds ?? DEFAULT_RUN_TIMEOUT_S }));
    } else if (step.kind === 'env') {
      makers.push(() => ({ index, title, command: envCommand(stepEnv), timeoutS: 60 }));
    } else {
      const input = await fileInput(step, index, projectDir);
      inputs.push(input);
      makers.push((urls) => ({ index, title, command: unpackCommand(urls.get(index) ?? '', input.dest, index), timeoutS: FILE_TIMEOUT_S }));
    }
  }
  // The tests are part of what an AMI of this digest passed: a changed test is a new bake (an AMI
  // is reused, unchecked, only for the very spec it was checked for). Without tests, the digest is
  // what it was before test steps ran on AWS, so AMIs baked then are still reused.
  const testSteps = spec.steps.flatMap((step, i) => (step.kind === 'test' ? [{ step, i }] : []));
  const testDefinitions = testSteps.map(({ step }) => stepDefinition(step));
  const specDigest = `sha256:${sha256(canonicalJson({ kind: 'ami', parent: parentImageId, layers: chain, identity: identityDigest, ...(testDefinitions.length ? { tests: testDefinitions } : {}) }))}`;
  const tests = testSteps.map(({ step, i }) => ({
    title: stepTitle(step),
    where: `${step.at.file}:${step.at.line}:${step.at.column}: images.${spec.name}.steps[${i}]`,
    command: testCommand(step.commands, env),
    timeoutS: step.timeoutSeconds ?? DEFAULT_TEST_TIMEOUT_S,
  }));
  return { specDigest, layerDigests, definitions, env, inputs, tests, steps: (urls) => makers.map((make) => make(urls)) };
}

/** A test runs as a host of the image would run a command: the image's env, in its `/`, stopping at the first failure. */
function testCommand(commands: string[], imageEnv: Record<string, string>): string {
  return ['(', ...exports(imageEnv), 'cd "$R"/ || exit 1', ...commands.map((c) => `eval ${q(c)} || exit $?`), ')'].join('\n');
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function exports(env: Record<string, string>): string[] {
  return Object.entries(env).map(([k, v]) => `export ${k}=${q(v)}`);
}

/** In a subshell of its own: its cwd and variables end with it, as a local bake step's host does. */
function runCommand(step: Extract<ImageStep, { kind: 'run' }>, imageEnv: Record<string, string>): string {
  return ['(', ...exports({ ...imageEnv, ...step.env }), `cd "$R"${q(step.cwd ?? '/')} || exit 1`, ...step.commands.map((c) => `eval ${q(c)} || exit $?`), ')'].join('\n');
}

/** The image's environment file, which the agent loads at boot (as file-steps.ts writes it locally). */
function envCommand(env: Record<string, string>): string {
  const file = `"$R"${q(IMAGE_ENV_PATH)}`;
  const lines = Object.entries(env).map(([k, v]) => q(`${k}=${JSON.stringify(v)}`));
  return `mkdir -p "$R"${q(posix.dirname(IMAGE_ENV_PATH))} && printf '%s\\n' ${lines.join(' ')} > ${file}${lines.length ? '' : ` && : > ${file}`}`;
}

/** Fetches the step's packed files from the control plane and unpacks them at `dest` (a directory). */
function unpackCommand(url: string, dest: string, index: number): string {
  return [
    '(',
    `d="$R"${q(dest)}; t="$R/run/berth-bake-input-${index}.tar"`,
    'mkdir -p "$d" "$R/run" || exit 1',
    `${AGENT_TOOL} fetch ${q(url)} > "$t" || { rm -f "$t"; exit 1; }`,
    'tar -x -f "$t" -C "$d" --no-same-owner; rc=$?; rm -f "$t"; exit $rc',
    ')',
  ].join('\n');
}

/** Where a file step's staged tree is unpacked, and how it is staged (checked, as a local bake does). */
async function fileInput(step: Extract<ImageStep, { kind: 'copy' | 'fetch' | 'slug' }>, index: number, projectDir: string): Promise<FileInput> {
  if (step.kind === 'copy') {
    const src = posix.resolve(projectDir, step.src);
    // Like `cp src dest`: a directory's contents land in dest; a file at dest, or in it when dest ends with '/'.
    if ((await stat(src)).isDirectory()) {
      return { index, dest: step.dest, stage: async (dir) => copyInto(src, dir, step.mode) };
    }
    const destPath = step.dest.endsWith('/') ? posix.join(step.dest, basename(src)) : step.dest;
    return { index, dest: posix.dirname(destPath), stage: async (dir) => copyInto(src, join(dir, posix.basename(destPath)), step.mode) };
  }
  const fetched = (artifacts: ArtifactCache, signal?: AbortSignal) =>
    artifacts.get(sourceOf(step.source, projectDir), { ...(step.sha256 ? { sha256: step.sha256 } : {}), maxBytes: step.maxBytes, ...(signal ? { signal } : {}) });
  if (step.kind === 'slug' || step.extract) {
    // Unpacked here, with every safety check of a local bake; the builder unpacks berth's own tarball.
    return { index, dest: step.dest, stage: async (dir, artifacts, signal) => void (await unpackTarSafely((await fetched(artifacts, signal)).path, dir, { maxBytes: step.maxBytes }, signal)) };
  }
  const mode = step.mode ?? 0o644;
  return { index, dest: posix.dirname(step.dest), stage: async (dir, artifacts, signal) => copyInto((await fetched(artifacts, signal)).path, join(dir, posix.basename(step.dest)), mode) };
}

async function copyInto(src: string, target: string, mode: number | undefined): Promise<void> {
  await cp(src, target, { recursive: true, force: true, preserveTimestamps: true, verbatimSymlinks: true });
  if (mode !== undefined) await chmodTree(target, mode);
}

async function chmodTree(path: string, mode: number): Promise<void> {
  const st = await stat(path);
  if (!st.isDirectory()) return chmod(path, mode);
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) await chmodTree(full, mode);
    else if (entry.isFile()) await chmod(full, mode);
  }
}

/** Digests of what a step reads, so a changed input changes the spec digest (as builder.ts does). */
async function inputDigests(step: Step, projectDir: string): Promise<Record<string, unknown>> {
  if (step.kind === 'copy') return { srcDigest: await treeDigest(posix.resolve(projectDir, step.src)) };
  if (step.kind === 'fetch' || step.kind === 'slug') {
    const source = sourceOf(step.source, projectDir);
    return { sha256: step.sha256 ?? ('path' in source ? await fileDigest(source.path) : undefined) };
  }
  return {};
}

/** Packs a staged tree into a tarball (portable: no owners, which the builder's tar sets to root). */
export async function packTree(dir: string, tarPath: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await createTar({ cwd: dir, file: tarPath, portable: true }, ['.']);
}
