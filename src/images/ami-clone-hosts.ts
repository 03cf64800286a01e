/**
 * The berth side of an AMI bake's clone-uniqueness check (drivers/aws/ami-clone-check.ts launches
 * and terminates the two instances): each instance boots as a registered host of role
 * `bake-check` — its user data starts berth's agent with that host's identity, as the builder's
 * does — and the identity probe runs on it through berth's Run Command, then the image's test
 * steps on the first. Progress is shown as a local bake shows its check: a `[image check] check
 * clones differ` step (`… and run N test step(s)`).
 */
import { performance } from 'node:perf_hooks';
import { BerthError, errorMessage } from '../core/errors.js';
import type { CloneCheckHooks } from '../drivers/aws/ami-clone-check.js';
import type { AmiBackend } from '../drivers/aws/ami-backend.js';
import { agentBootstrap, type AgentChannel } from '../drivers/types.js';
import type { HostService } from '../hosts/host-service.js';
import type { HostsRepo } from '../store/hosts-repo.js';
import { AMI_PRELUDE, type AmiTest } from './ami-steps.js';
import { CommandFailed, type BakeHosts } from './bake-hosts.js';
import { checkTitle, type BakeEvent } from './builder.js';

export interface CloneHostsDeps {
  backend: AmiBackend;
  hosts: HostService;
  hostsRepo: HostsRepo;
  bakeHosts: BakeHosts;
  agentChannel: AgentChannel;
  /** How long an instance may take to boot and connect its agent. */
  bootTimeoutMs: number;
  log: (line: string) => void;
}


export class CloneCheckHosts implements CloneCheckHooks {
  /** Set when the check began (the AMI is available): the step's index, for progress lines. */
  started: number | undefined;

  constructor(
    private readonly deps: CloneHostsDeps,
    private readonly tenantId: string,
    private readonly image: string,
    /** The check's step index (after the image's steps and the AMI's). */
    readonly index: number,
    private readonly emit: (event: BakeEvent) => void,
    /** Called once, when the check begins: the AMI step is done by then. */
    private readonly onStart: () => void,
    /** The image's test steps, run on the first clone once the clones differ. */
    private readonly tests: readonly AmiTest[] = [],
  ) {}

  async runTests(hostId: string, _instanceId: string, opts: { signal: AbortSignal }): Promise<{ title: string; durationMs: number }[]> {
    const results: { title: string; durationMs: number }[] = [];
    for (const test of this.tests) {
      const started = performance.now();
      try {
        await this.deps.bakeHosts.run(this.tenantId, hostId, { commands: [AMI_PRELUDE, test.command], env: {}, timeoutSeconds: test.timeoutS }, undefined, opts.signal);
      } catch (err) {
        if (!(err instanceof CommandFailed)) throw err;
        // As a local bake says it (bake-hosts.ts); the AMI is removed by the bake.
        throw new BerthError('bake_failed', `${test.where}: test failed: ${err.message}\n${err.output}`, 'Fix the image or the test; the AMI was deregistered and its snapshots deleted.', { phase: 'clone-check', exitCode: err.exitCode, output: err.output });
      }
      results.push({ title: test.title, durationMs: Math.round(performance.now() - started) });
      this.emit({ type: 'log', image: this.image, index: this.index, line: `test passed: ${test.title}` });
    }
    return results;
  }

  async prepare(imageId: string): Promise<{ hostId: string; userData: string }> {
    if (this.started === undefined) {
      this.onStart();
      this.started = performance.now();
      this.step('running');
    }
    // No hostname given: the host's is its id, so two clones' hostnames differ as two hosts' do.
    const host = await this.deps.hosts.register(this.tenantId, { tags: { 'berth:role': 'bake-check', 'berth:image': this.image } }, undefined, { image: `${this.image} (bake check)`, imageId: null, base: imageId, layers: [] });
    return { hostId: host.id, userData: this.deps.backend.builderUserData(host.hostname, host.tags, agentBootstrap(this.deps.agentChannel, host.id, host.token)) };
  }

  async run(hostId: string, instanceId: string, commands: string[], opts: { signal: AbortSignal; timeoutS: number }): Promise<string> {
    // Not `instanceId`, as for the builder: the check terminates its instances itself (the driver
    // still finds one by its berth:host-id tag when the record of a check that died is cleaned up).
    await this.deps.hostsRepo.setDriverData(hostId, { bakeCheckInstanceId: instanceId });
    await this.deps.hosts.awaitEnrolled(hostId, this.deps.bootTimeoutMs, opts.signal);
    try {
      const inv = await this.deps.bakeHosts.run(this.tenantId, hostId, { commands: [AMI_PRELUDE, ...commands], env: {}, timeoutSeconds: opts.timeoutS }, undefined, opts.signal);
      return inv.stdout;
    } catch (err) {
      if (!(err instanceof CommandFailed)) throw err;
      throw new Error(`the probe ended ${err.message}\n${err.output}`, { cause: err });
    }
  }

  async release(hostIds: string[]): Promise<void> {
    await Promise.all(hostIds.map((id) => this.deps.hosts.terminate(this.tenantId, id, 'its bake check ended').catch((err: unknown) => this.deps.log(`bake check host ${id}: ${errorMessage(err)}`))));
  }

  /** The check's step line, as a local bake prints it (kind `check`). */
  step(state: 'running' | 'done' | 'failed', tail?: string): void {
    const elapsedMs = this.started === undefined ? 0 : Math.round(performance.now() - this.started);
    this.emit({ type: 'step', image: this.image, index: this.index, total: this.index, kind: 'check', title: checkTitle(this.tests.length), state, elapsedMs, ...(tail !== undefined ? { tail } : {}) });
  }
}
