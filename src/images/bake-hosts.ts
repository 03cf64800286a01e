/**
 * What a bake does on hosts: `run` steps run by Run Command in a build host launched from the image
 * so far, whose writable layer then becomes the step's layer; and before publishing, the
 * clone-uniqueness check and the `test` steps on two hosts launched from the finished image.
 * Every host a bake launches is terminated whatever happens (they are tagged `berth:role`, so a
 * server that dies mid-bake leaves hosts that are plainly bake hosts, cleaned up at restart).
 */
import { BerthError, errorMessage } from '../core/errors.js';
import type { CommandService } from '../commands/command-service.js';
import type { LiveOutput } from '../commands/live-output.js';
import type { CommandView, InvocationView } from '../commands/views.js';
import type { BootImage, HostService } from '../hosts/host-service.js';
import { compareIdentities, formatUniquenessReport, IDENTITY_PROBE, parseIdentityProbe, type UniquenessReport } from './uniqueness.js';

export interface BakeHostsDeps {
  hosts: HostService;
  commands: CommandService;
  live: LiveOutput;
  log: (line: string) => void;
  /** How long a bake host may take to come up. */
  bootTimeoutMs?: number;
}

export interface CommandRun {
  commands: string[];
  env: Record<string, string>;
  cwd?: string | undefined;
  timeoutSeconds: number;
}

export class CommandFailed extends Error {
  constructor(
    readonly status: string,
    readonly exitCode: number | undefined,
    readonly output: string,
    detail: string,
  ) {
    super(detail);
  }
}

export type OutputSink = (stream: 'stdout' | 'stderr', data: string) => void;

/** Last lines of an invocation's output, stderr after stdout, for error messages. */
export function outputTail(inv: Pick<InvocationView, 'stdout' | 'stderr'>, lines = 20): string {
  const text = [inv.stdout.trimEnd(), inv.stderr.trimEnd()].filter(Boolean).join('\n');
  return text.split('\n').slice(-lines).join('\n');
}

export class BakeHosts {
  constructor(private readonly deps: BakeHostsDeps) {}

  /** Launches a host from `boot` and waits until its agent is connected. */
  async launch(tenantId: string, boot: BootImage, role: string, signal?: AbortSignal, opts: { egress?: boolean; egressAllow?: string[] } = {}): Promise<string> {
    const host = await this.deps.hosts.launch(
      tenantId,
      { tags: { 'berth:role': role, 'berth:image': boot.image }, ...(opts.egress ? { resources: { egress: true, ...(opts.egressAllow ? { egressAllow: opts.egressAllow } : {}) } } : {}) },
      { waitMs: this.deps.bootTimeoutMs ?? 30_000, boot, ...(signal ? { signal } : {}) },
    );
    return host.id;
  }

  /** Stops the host, moves its writable layer to `dest` and terminates it. */
  async captureAndTerminate(tenantId: string, hostId: string, dest: string): Promise<void> {
    await this.deps.hosts.captureLayer(tenantId, hostId, dest, { stop: true });
  }

  async terminate(tenantId: string, hostId: string, why: string): Promise<void> {
    await this.deps.hosts.terminate(tenantId, hostId, why).catch((err: unknown) => this.deps.log(`bake host ${hostId}: ${errorMessage(err)}`));
  }

  /** Runs commands on a host; resolves with its invocation, throws CommandFailed unless it succeeded. */
  async run(tenantId: string, hostId: string, run: CommandRun, sink?: OutputSink, signal?: AbortSignal): Promise<InvocationView> {
    const sent = await this.deps.commands.send(tenantId, {
      targets: { hostIds: [hostId] },
      parameters: { commands: run.commands, env: run.env, executionTimeout: run.timeoutSeconds, ...(run.cwd ? { workingDirectory: run.cwd } : {}) },
    });
    const unsubscribe = sink ? this.deps.live.subscribe(sent.id, (event) => event.type === 'output' && sink(event.stream, event.data)) : () => undefined;
    let view: CommandView;
    try {
      // The command's own timeout ends it; the extra minute only covers delivery and reporting.
      view = await this.deps.commands.wait(tenantId, sent.id, (run.timeoutSeconds + 60) * 1000, signal);
    } finally {
      unsubscribe();
    }
    const inv = view.invocations[0];
    if (!inv) throw new CommandFailed(view.status, undefined, '', `command ${view.id} has no invocation`);
    if (inv.status !== 'Success') {
      const exitCode = inv.exitCodes.at(-1);
      const detail = `${inv.status}${exitCode !== undefined ? ` with exit code ${exitCode}` : ''}${inv.statusDetail ? ` (${inv.statusDetail})` : ''}`;
      throw new CommandFailed(inv.status, exitCode, outputTail(inv), detail);
    }
    return inv;
  }

  /**
   * Launches two hosts from the candidate image, compares their identities and runs the tests on
   * the first. Throws bake_failed with the report when the hosts cannot be told apart.
   */
  async check(
    tenantId: string,
    boot: BootImage,
    tests: { run: CommandRun; title: string; where: string }[],
    progress: (line: string) => void,
    signal?: AbortSignal,
  ): Promise<{ uniqueness: UniquenessReport; tests: { title: string; durationMs: number }[] }> {
    const launched = await Promise.allSettled([this.launch(tenantId, boot, 'bake-check', signal), this.launch(tenantId, boot, 'bake-check', signal)]);
    const hostIds = launched.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      const failedLaunch = launched.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failedLaunch) throw failedLaunch.reason;
      const [a, b] = hostIds as [string, string];
      const probe: CommandRun = { commands: IDENTITY_PROBE, env: {}, timeoutSeconds: 60 };
      const [pa, pb] = await Promise.all([this.run(tenantId, a, probe, undefined, signal), this.run(tenantId, b, probe, undefined, signal)]);
      const uniqueness = compareIdentities(parseIdentityProbe(pa.stdout), parseIdentityProbe(pb.stdout));
      if (!uniqueness.ok) {
        throw new BerthError('bake_failed', `clone-uniqueness check failed for image ${boot.image}:\n${formatUniquenessReport(uniqueness)}`, 'Strip what the report names (identity.strip in the image spec), or stop keeping it (identity.keep); see docs/images-identity.md.', { uniqueness });
      }
      progress(`clones differ: machine-id, hostname, agent identity${uniqueness.items.some((i) => i.item === 'ssh-host-keys' && i.verdict === 'differ') ? ', SSH host keys' : ''}`);
      const results: { title: string; durationMs: number }[] = [];
      for (const test of tests) {
        const started = performance.now();
        try {
          await this.run(tenantId, a, test.run, undefined, signal);
        } catch (err) {
          if (!(err instanceof CommandFailed)) throw err;
          throw new BerthError('bake_failed', `${test.where}: test failed: ${err.message}\n${err.output}`, 'Fix the image or the test; the image was not published.', { exitCode: err.exitCode, output: err.output });
        }
        results.push({ title: test.title, durationMs: Math.round(performance.now() - started) });
        progress(`test passed: ${test.title}`);
      }
      return { uniqueness, tests: results };
    } finally {
      // Once checked, the hosts are of no use: the bake goes on (publishing) while they are removed.
      for (const id of hostIds) void this.terminate(tenantId, id, 'bake check done');
    }
  }
}
