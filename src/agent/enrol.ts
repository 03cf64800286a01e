/**
 * A fleet host's first start (see AGENT_ENROLMENT_PATH): trade the pool's enrolment and the
 * machine's id for a host identity, then keep it in agent.json so a restarted agent is the same
 * host (a second enrolment of one machine is refused: a machine cannot become two hosts, and
 * nobody can enrol as a machine that already did).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { agentIdentity, type AgentEnrolment, type AgentIdentity, type EnrolRequest } from '../protocol/messages.js';

/** EC2's instance metadata service; IMDSv2 (a session token first), as the launch template requires. */
const IMDS = 'http://169.254.169.254/latest';
const IMDS_TIMEOUT_MS = 2_000;

export class EnrolmentRefused extends Error {}

export interface EnrolOptions {
  /** Where the identity goes (mode 0600, written atomically). */
  identityPath: string;
  signal?: AbortSignal;
  log: (line: string) => void;
  /** First delay between attempts while the control plane cannot be reached; doubles up to 5 s. */
  retryMs?: number;
}

export async function enrol(enrolment: AgentEnrolment, opts: EnrolOptions): Promise<AgentIdentity> {
  const machineId = enrolment.machineId ?? (await instanceId(opts.signal));
  const body: EnrolRequest = { tenantId: enrolment.tenantId, pool: enrolment.pool, token: enrolment.token, machineId, ...(enrolment.generation !== undefined ? { generation: enrolment.generation } : {}) };
  let delay = opts.retryMs ?? 200;
  for (;;) {
    opts.signal?.throwIfAborted();
    let res: { status: number; text: string } | undefined;
    try {
      res = await postJson(enrolment.enrolUrl, body, enrolment.ca, opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000));
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      opts.log(`enrolment: ${enrolment.enrolUrl} cannot be reached (${err instanceof Error ? err.message : String(err)}); retrying`);
    }
    if (res && res.status >= 200 && res.status < 300) {
      const identity = agentIdentity.parse(JSON.parse(res.text));
      keep(identity, opts.identityPath);
      opts.log(`enrolled as host ${identity.hostId} of pool ${enrolment.pool}`);
      return identity;
    }
    if (res) {
      const { text } = res;
      // Refused (not one of the pool's machines, enrolled already, wrong secret): retrying cannot help.
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) throw new EnrolmentRefused(`enrolment refused (${res.status}): ${text.slice(0, 500)}`);
      opts.log(`enrolment: ${res.status} ${text.slice(0, 200)}; retrying`);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 5_000);
  }
}

/**
 * POSTs JSON over http or https; over https trusting `ca` (PEM) when given (fetch cannot be told a
 * CA of its own), so the pool's secret goes only to a server the agent trusts.
 */
async function postJson(url: string, body: unknown, ca: string | undefined, signal: AbortSignal): Promise<{ status: number; text: string }> {
  const target = new URL(url);
  const { request } = target.protocol === 'https:' ? await import('node:https') : await import('node:http');
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(target, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }, signal, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

function keep(identity: AgentIdentity, path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(identity)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

async function instanceId(signal: AbortSignal | undefined): Promise<string> {
  const bound = (): AbortSignal => (signal ? AbortSignal.any([signal, AbortSignal.timeout(IMDS_TIMEOUT_MS)]) : AbortSignal.timeout(IMDS_TIMEOUT_MS));
  const token = await fetch(`${IMDS}/api/token`, { method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '60' }, signal: bound() });
  if (!token.ok) throw new EnrolmentRefused(`the instance metadata service refused a session token (${token.status})`);
  const res = await fetch(`${IMDS}/meta-data/instance-id`, { headers: { 'x-aws-ec2-metadata-token': await token.text() }, signal: bound() });
  if (!res.ok) throw new EnrolmentRefused(`the instance metadata service has no instance id (${res.status})`);
  return (await res.text()).trim();
}
