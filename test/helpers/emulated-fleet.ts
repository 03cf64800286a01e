/**
 * Stands in for the machines moto "launches": moto keeps the books of EC2 and Auto Scaling but
 * runs nothing. For every instance of the driver that moto shows running, this starts a real
 * berth agent (in this process, with its own state, tags and log directories) from the files the
 * instance's boot script would write — so a fleet instance enrols over HTTP exactly as on EC2,
 * with the instance id the metadata service would give it. An instance moto terminates loses its
 * agent, as a machine that is switched off does.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Buffer } from 'node:buffer';
import { DescribeInstanceAttributeCommand, EC2Client, paginateDescribeInstances } from '@aws-sdk/client-ec2';
import { Agent } from '../../src/agent/agent.js';
import { enrol } from '../../src/agent/enrol.js';
import { filesFromUserData, shellQuote } from '../../src/drivers/aws/user-data.js';
import { agentBundleDir } from '../../src/cli/paths.js';
import { AGENT_ENROLMENT_PATH, AGENT_IDENTITY_PATH, agentEnrolment, agentIdentity, HOST_TAGS_PATH } from '../../src/protocol/messages.js';
import { MOTO_CREDENTIALS, MOTO_REGION } from './moto.js';

interface Machine {
  agent?: Agent;
  stop: AbortController;
  builder: boolean;
}

/**
 * An AMI builder (tag berth:role=builder) runs commands as root that act on a whole machine — the
 * bake's steps and the identity strip. Here they must never reach this machine's files: the
 * builder's root is a directory (`<dir>/<id>/fs`, BERTH_MACHINE_ROOT, which the bake's commands
 * act on), and its shell runs every command in a mount namespace where this machine's root
 * filesystem is read-only and only the builder's own directory is writable. A command that
 * ignored BERTH_MACHINE_ROOT would fail (read-only), not change the test machine.
 */
function confinedShell(root: string): string {
  const path = join(root, 'bin', 'bash'); // named bash: the agent's status descriptor follows the shell's name
  mkdirSync(join(root, 'bin'), { recursive: true });
  const inner = 'mount --bind "$0" "$0" && mount -o remount,bind,ro / && exec /bin/bash "$@"';
  writeFileSync(path, `#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c ${shellQuote(inner)} ${shellQuote(root)} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/** A builder's root, with the per-machine identity a real instance has, for the strip to remove. */
function builderRoot(root: string, instanceId: string): string {
  const fs = join(root, 'fs');
  const put = (path: string, text: string): void => {
    mkdirSync(join(fs, path, '..'), { recursive: true });
    writeFileSync(join(fs, path), text);
  };
  put('etc/machine-id', `${randomBytes(16).toString('hex')}\n`);
  put('etc/hostname', `${instanceId}\n`);
  put('etc/ssh/ssh_host_ed25519_key', 'builder host key\n');
  put('var/log/syslog', `${instanceId} booted\n`);
  mkdirSync(join(fs, 'run'), { recursive: true });
  return fs;
}

export class EmulatedFleet {
  private readonly ec2: EC2Client;
  private readonly machines = new Map<string, Machine>();
  private readonly boots = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  /** Enrolments refused by the control plane, by instance id (tests assert there are none, or some). */
  readonly refused = new Map<string, string>();

  constructor(private readonly opts: { endpoint: string; driverName: string; dir: string; pollMs?: number }) {
    // Bounded calls: one lost answer must not stall the whole fleet's scans.
    this.ec2 = new EC2Client({ region: MOTO_REGION, endpoint: opts.endpoint, credentials: MOTO_CREDENTIALS, maxAttempts: 5, requestHandler: { connectionTimeout: 2_000, requestTimeout: 10_000 } });
  }

  start(): void {
    const tick = (): void => {
      this.scanning = this.scan()
        .catch((err: unknown) => void process.stderr.write(`emulated fleet: ${String(err)}\n`))
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.opts.pollMs ?? 100);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  /** The root directory an emulated builder's commands act on (kept after it is switched off). */
  builderRootOf(instanceId: string): string {
    return join(this.opts.dir, instanceId, 'fs');
  }

  /** Instance ids with a connected-or-connecting agent. */
  running(): string[] {
    return [...this.machines.entries()].filter(([, m]) => m.agent).map(([id]) => id);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.scanning;
    for (const id of [...this.machines.keys()]) this.switchOff(id);
    await Promise.allSettled([...this.boots]);
    this.ec2.destroy();
  }

  private async scan(): Promise<void> {
    const live = new Set<string>();
    const builders = new Set<string>();
    // Every page: EC2 (and moto) answer at most 100 reservations at a time.
    const pages = paginateDescribeInstances(
      { client: this.ec2 },
      {
        Filters: [
          { Name: 'tag:berth:managed-by', Values: [this.opts.driverName] },
          { Name: 'instance-state-name', Values: ['pending', 'running'] },
        ],
      },
    );
    for await (const page of pages) {
      for (const r of page.Reservations ?? []) {
        for (const i of r.Instances ?? []) {
          if (!i.InstanceId) continue;
          live.add(i.InstanceId);
          if (i.Tags?.some((t) => t.Key === 'berth:role' && t.Value === 'builder')) builders.add(i.InstanceId);
        }
      }
    }
    for (const id of this.machines.keys()) if (!live.has(id)) this.switchOff(id);
    // Boots run on their own: a machine still enrolling must not hold up the next scan.
    for (const id of [...live].filter((i) => !this.machines.has(i))) {
      const boot = this.boot(id, builders.has(id)).catch((err: unknown) => {
        // A failed boot is forgotten, so the next scan boots the machine again.
        this.machines.delete(id);
        process.stderr.write(`emulated fleet: ${id}: ${String(err)}\n`);
      });
      this.boots.add(boot);
      void boot.finally(() => this.boots.delete(boot));
    }
  }

  /** What cloud-init would do with the instance's user data, and the agent it starts. */
  private async boot(instanceId: string, builder: boolean): Promise<void> {
    const machine: Machine = { stop: new AbortController(), builder };
    this.machines.set(instanceId, machine);
    const attr = await this.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: 'userData' }));
    const files = filesFromUserData(Buffer.from(attr.UserData?.Value ?? '', 'base64').toString('utf8'));
    const root = join(this.opts.dir, instanceId);
    mkdirSync(join(root, 'etc'), { recursive: true });
    const tagsPath = join(root, 'etc', 'tags.json');
    writeFileSync(tagsPath, files.get(HOST_TAGS_PATH) ?? '{}');
    const log = (line: string): void => void (process.env['BERTH_TEST_VERBOSE'] && process.stderr.write(`[${instanceId}] ${line}\n`));
    let identityText = files.get(AGENT_IDENTITY_PATH);
    const enrolmentText = files.get(AGENT_ENROLMENT_PATH);
    try {
      if (!identityText && enrolmentText) {
        const enrolment = { ...agentEnrolment.parse(JSON.parse(enrolmentText)), machineId: instanceId };
        identityText = JSON.stringify(await enrol(enrolment, { identityPath: join(root, 'etc', 'agent.json'), log, signal: machine.stop.signal, retryMs: 50 }));
      }
      if (!identityText) throw new Error('its user data gives the agent neither an identity nor an enrolment');
    } catch (err) {
      if (!machine.stop.signal.aborted) this.refused.set(instanceId, err instanceof Error ? err.message : String(err));
      return;
    }
    if (machine.stop.signal.aborted) return;
    // A builder fetches the bake's files with the agent's tool, whose path the agent's entry sets in its own process.
    const tools = (): Record<string, string> => ({ BERTH_NODE: process.execPath, BERTH_AGENT_BUNDLE: join(agentBundleDir(), 'berth-agent.cjs') });
    machine.agent = new Agent({
      identity: agentIdentity.parse(JSON.parse(identityText)),
      stateDir: join(root, 'run'),
      serviceLogDir: join(root, 'log'),
      tagsPath,
      log,
      ...(builder ? { shell: confinedShell(root), env: { ...tools(), BERTH_MACHINE_ROOT: builderRoot(root, instanceId) } } : {}),
    });
    machine.agent.start();
  }

  private switchOff(instanceId: string): void {
    const machine = this.machines.get(instanceId);
    if (!machine) return;
    machine.stop.abort();
    machine.agent?.stop();
    this.machines.delete(instanceId);
    // A builder's root stays for the test to see what its bake did (the test's directory goes at its end).
    if (!machine.builder) rmSync(join(this.opts.dir, instanceId), { recursive: true, force: true });
  }
}
