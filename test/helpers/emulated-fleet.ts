/**
 * Stands in for the machines moto "launches": moto keeps the books of EC2 and Auto Scaling but
 * runs nothing. For every instance of the driver that moto shows running, this starts a real
 * berth agent (in this process, with its own state, tags and log directories) from the files the
 * instance's boot script would write — so a fleet instance enrols over HTTP exactly as on EC2,
 * with the instance id the metadata service would give it. An instance moto terminates loses its
 * agent, as a machine that is switched off does.
 *
 * Each machine's commands run in a UTS namespace of their own whose hostname is the host's (what
 * its boot script sets on EC2; an enrolled pool instance's is its instance id): `hostname` in a
 * command never names, or changes, the test machine's. A builder, and every machine booted from an
 * AMI a builder became, also has a root directory of its own (BERTH_MACHINE_ROOT); see below.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Buffer } from 'node:buffer';
import { DescribeImagesCommand, DescribeInstanceAttributeCommand, EC2Client, paginateDescribeInstances } from '@aws-sdk/client-ec2';
import { Agent } from '../../src/agent/agent.js';
import { enrol } from '../../src/agent/enrol.js';
import { filesFromUserData, hostnameFromUserData, shellQuote } from '../../src/drivers/aws/user-data.js';
import { agentBundleDir } from '../../src/cli/paths.js';
import { AGENT_ENROLMENT_PATH, AGENT_IDENTITY_PATH, agentEnrolment, agentIdentity, HOST_TAGS_PATH } from '../../src/protocol/messages.js';
import { MOTO_CREDENTIALS, MOTO_REGION } from './moto.js';

interface Machine {
  agent?: Agent;
  stop: AbortController;
  builder: boolean;
}

/** What an instance found in a scan boots as. */
interface Seen {
  builder: boolean;
  imageId: string | undefined;
}

const HOSTNAME = /^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/;

/**
 * The shell of a machine without a root directory: every command in a UTS namespace of its own,
 * named as the host. `hostname` runs only inside `unshare --uts` (if unshare fails, nothing runs).
 */
function hostShell(dir: string, hostname: string): string {
  const path = join(dir, 'bin', 'bash'); // named bash: the agent's status descriptor follows the shell's name
  mkdirSync(join(dir, 'bin'), { recursive: true });
  const inner = 'hostname "$0" && exec /bin/bash "$@"';
  writeFileSync(path, `#!/bin/sh\nexec unshare --uts /bin/sh -c ${shellQuote(inner)} ${shellQuote(hostname)} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/**
 * A machine with a root directory (a builder, or a machine of a baked AMI) runs commands as root
 * that act on a whole machine — a bake's steps and the identity strip. Here they must never reach
 * this machine's files: the root is a directory (`<dir>/<id>/fs`, BERTH_MACHINE_ROOT, which the
 * bake's commands act on), and its shell runs every command in a mount namespace where this
 * machine's root filesystem is read-only and only the machine's own directory is writable, and in a
 * UTS namespace named as the host. A command that ignored BERTH_MACHINE_ROOT would fail
 * (read-only), not change the test machine.
 */
function confinedShell(dir: string, hostname: string): string {
  const path = join(dir, 'bin', 'bash');
  mkdirSync(join(dir, 'bin'), { recursive: true });
  const inner = 'mount --bind "$0" "$0" && mount -o remount,bind,ro / && hostname "$1" && shift && exec /bin/bash "$@"';
  writeFileSync(path, `#!/bin/sh\nexec unshare --mount --uts --propagation private /bin/sh -c ${shellQuote(inner)} ${shellQuote(dir)} ${shellQuote(hostname)} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/** A builder's root on the driver's AMI, with the per-machine identity a real instance has, for the strip to remove. */
function builderRoot(fs: string, instanceId: string): void {
  mkdirSync(fs, { recursive: true });
  writeInside(fs, 'etc/machine-id', `${randomBytes(16).toString('hex')}\n`);
  writeInside(fs, 'etc/hostname', `${instanceId}\n`);
  writeInside(fs, 'etc/ssh/ssh_host_ed25519_key', 'builder host key\n');
  writeInside(fs, 'var/log/syslog', `${instanceId} booted\n`);
  mkdirSync(join(fs, 'run'), { recursive: true });
}

/**
 * Writes a file of a machine's root from this process (not confined): every directory on the way
 * must be a real one and the file absent or a regular file, never a link a command of the machine
 * made, which could point anywhere on this machine.
 */
function writeInside(fs: string, path: string, text: string, mode?: number): void {
  const parts = path.split('/').filter(Boolean);
  let at = fs;
  for (const [i, part] of parts.entries()) {
    at = join(at, part);
    const last = i === parts.length - 1;
    const st = lstatOrUndefined(at);
    if (st === undefined) {
      if (!last) mkdirSync(at);
      continue;
    }
    if (last ? !st.isFile() : !st.isDirectory()) throw new Error(`${relative(fs, at)} in the machine's root is not a plain ${last ? 'file' : 'directory'}; refusing to write through it`);
  }
  writeFileSync(at, text, mode === undefined ? {} : { mode });
}

function lstatOrUndefined(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/**
 * First boot of a machine of a baked AMI: the strip left /etc/machine-id empty, and on EC2 systemd
 * (or, without it, the berth agent's first boot, src/agent/firstboot.ts) writes a new one. Emulated
 * here, written only when empty, so a machine-id the bake failed to strip stays shared by clones.
 * Not emulated: SSH host keys (the AMI strip asks for none), D-Bus's machine-id link.
 */
function firstBootMachineId(fs: string): void {
  const st = lstatOrUndefined(join(fs, 'etc/machine-id'));
  if (st !== undefined && (!st.isFile() || readFileSync(join(fs, 'etc/machine-id'), 'utf8').trim() !== '')) return;
  writeInside(fs, 'etc/machine-id', `${randomBytes(16).toString('hex')}\n`, 0o444);
}

export class EmulatedFleet {
  private readonly ec2: EC2Client;
  private readonly machines = new Map<string, Machine>();
  private readonly boots = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  /** Every builder seen, and those whose AMI is captured (a builder makes one AMI at most). */
  private readonly builderIds = new Set<string>();
  private readonly imaged = new Set<string>();
  /** AMI id → a copy of its builder's root as it was when the AMI was made. */
  private readonly amiRoots = new Map<string, string>();
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
    rmSync(join(this.opts.dir, 'amis'), { recursive: true, force: true });
  }

  private async scan(): Promise<void> {
    const live = new Map<string, Seen>();
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
          const builder = i.Tags?.some((t) => t.Key === 'berth:role' && t.Value === 'builder') ?? false;
          live.set(i.InstanceId, { builder, imageId: i.ImageId });
          if (builder) this.builderIds.add(i.InstanceId);
        }
      }
    }
    // Before the boots: a machine of an AMI made since the last scan starts from its builder's root.
    await this.captureAmis([...live.entries()].filter(([id, m]) => m.builder && this.machines.has(id)).map(([id]) => id));
    for (const id of this.machines.keys()) if (!live.has(id)) this.switchOff(id);
    // Boots run on their own: a machine still enrolling must not hold up the next scan.
    for (const [id, seen] of [...live.entries()].filter(([i]) => !this.machines.has(i))) {
      const boot = this.boot(id, seen).catch((err: unknown) => {
        // A failed boot is forgotten, so the next scan boots the machine again.
        this.machines.delete(id);
        process.stderr.write(`emulated fleet: ${id}: ${String(err)}\n`);
      });
      this.boots.add(boot);
      void boot.finally(() => this.boots.delete(boot));
    }
  }

  /**
   * The AMIs these builders became (moto's DescribeImages filters by `source-instance-id`): each
   * gets a copy of its builder's root now, as it is when the AMI is made — a builder's commands have
   * all run by CreateImage. Links are copied as links, never followed.
   */
  private async captureAmis(builderIds: string[]): Promise<void> {
    for (const builderId of builderIds.filter((id) => !this.imaged.has(id))) {
      const from = this.builderRootOf(builderId);
      if (!existsSync(from)) continue;
      const out = await this.ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'source-instance-id', Values: [builderId] }] }));
      for (const image of out.Images ?? []) {
        if (!image.ImageId || this.amiRoots.has(image.ImageId)) continue;
        const to = join(this.opts.dir, 'amis', image.ImageId);
        cpSync(from, to, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
        // /run is a tmpfs on an instance: never in a snapshot.
        rmSync(join(to, 'run'), { recursive: true, force: true });
        mkdirSync(join(to, 'run'));
        this.amiRoots.set(image.ImageId, to);
        this.imaged.add(builderId);
      }
    }
  }

  /** What cloud-init would do with the instance's user data, and the agent it starts. */
  private async boot(instanceId: string, seen: Seen): Promise<void> {
    const { builder, imageId } = seen;
    const machine: Machine = { stop: new AbortController(), builder };
    this.machines.set(instanceId, machine);
    const attr = await this.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: 'userData' }));
    const userData = Buffer.from(attr.UserData?.Value ?? '', 'base64').toString('utf8');
    const files = filesFromUserData(userData);
    // The host's name, as its boot script sets it; an enrolled pool instance's host is named after the instance.
    const named = hostnameFromUserData(userData);
    const hostname = named !== undefined && HOSTNAME.test(named) ? named : instanceId;
    const root = join(this.opts.dir, instanceId);
    mkdirSync(join(root, 'etc'), { recursive: true });
    // An AMI made by a bake whose builder the last scans missed (it was quick): looked for now.
    if (imageId && !this.amiRoots.has(imageId)) await this.captureAmis([...this.builderIds]);
    const ami = imageId ? this.amiRoots.get(imageId) : undefined;
    // A root of its own: a builder's (on the driver's AMI, or on a baked parent), or a baked AMI's copy.
    const fs = builder || ami ? join(root, 'fs') : undefined;
    if (fs) {
      if (ami) cpSync(ami, fs, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
      else builderRoot(fs, instanceId);
      // What the boot script writes (on the instance's /), then the first boot's machine-id.
      for (const [path, text] of files) writeInside(fs, path, text, path === HOST_TAGS_PATH ? 0o644 : 0o600);
      writeInside(fs, 'etc/hostname', `${hostname}\n`, 0o644);
      if (ami) firstBootMachineId(fs);
    }
    const tagsPath = fs ? join(fs, HOST_TAGS_PATH) : join(root, 'etc', 'tags.json');
    if (!fs) writeFileSync(tagsPath, files.get(HOST_TAGS_PATH) ?? '{}');
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
    // An enrolled machine keeps its identity where its agent does on EC2 (the probe reads its host id there).
    if (fs && !files.has(AGENT_IDENTITY_PATH)) writeInside(fs, AGENT_IDENTITY_PATH, identityText, 0o600);
    // A builder fetches the bake's files with the agent's tool, whose path the agent's entry sets in its own process.
    const tools = (): Record<string, string> => ({ BERTH_NODE: process.execPath, BERTH_AGENT_BUNDLE: join(agentBundleDir(), 'berth-agent.cjs') });
    machine.agent = new Agent({
      identity: agentIdentity.parse(JSON.parse(identityText)),
      stateDir: join(root, 'run'),
      serviceLogDir: join(root, 'log'),
      tagsPath,
      log,
      ...(fs ? { shell: confinedShell(root, hostname), env: { ...tools(), BERTH_MACHINE_ROOT: fs } } : { shell: hostShell(root, hostname) }),
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
