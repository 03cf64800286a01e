/** What an AMI bake is asked to make, and the checks it passes before any EC2 call. */
import { BerthError } from '../../core/errors.js';
import { isAmiId } from './config.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const DIGEST_RE = /^(?:sha256:)?([0-9a-f]{12,128})$/;

export interface AmiBakeSpec {
  name: string;
  parentImageId: string;
  /** Shell commands, run as root on the builder in this order. */
  steps: string[];
  specDigest: string;
  layerDigests?: string[];
  /** Default: the driver's instance type. */
  instanceType?: string;
}

/** Refuses a spec EC2 could not take (its AMI name, parent, digest and steps); `name` is the AMI's name. */
export function checkSpec(spec: AmiBakeSpec, name: string): void {
  const bad = (message: string, hint: string): BerthError => new BerthError('validation_failed', message, hint);
  if (!NAME_RE.test(spec.name)) throw bad(`image name ${JSON.stringify(spec.name)} cannot name an AMI`, 'Use 1-128 letters, digits, dots, hyphens or underscores.');
  if (name.length > 128) throw bad(`AMI name ${name} is longer than EC2's 128 characters`, 'Use a shorter image or driver name.');
  if (!isAmiId(spec.parentImageId)) throw bad(`parent image ${JSON.stringify(spec.parentImageId)} is not an AMI id`, "Give the id of an AMI in the driver's region, e.g. ami-0123456789abcdef0.");
  if (!DIGEST_RE.test(spec.specDigest)) throw bad(`spec digest ${JSON.stringify(spec.specDigest)} is not a hex digest`, "Pass the image spec's sha256 (src/images/digests.ts).");
  if (!Array.isArray(spec.steps) || spec.steps.some((s) => typeof s !== 'string')) throw bad('the steps of an AMI bake must be shell commands (strings)', 'Pass steps as a list of commands.');
  if ((spec.layerDigests ?? []).some((d) => d.includes(','))) throw bad('a layer digest contains a comma', 'Layer digests are joined with commas in a tag.');
}

/** The hex of a digest, without its `sha256:` prefix (as given when it is not one). */
export function digestHex(digest: string): string {
  return DIGEST_RE.exec(digest)?.[1] ?? digest;
}
