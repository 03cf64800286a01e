/**
 * The local driver: each host is a set of Linux namespaces (pid, mount, uts, ipc, net, cgroup) with an
 * overlayfs copy-on-write root, its own address on a bridge and cgroup limits. See host-scripts.ts for
 * how a host is brought up, and config.ts for how every resource's name derives from the host id.
 */
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { assertSameNetwork, recordNetwork } from './network-record.js';
import { BerthError, errorMessage, isBerthError } from '../../core/errors.js';
import type { DescribedHost, DriverInfo, FoundHost, GroupMember, HostDriver, HostSpec, HostStats, LaunchedHost, NameServiceCounts, OperationOptions } from '../types.js';
import {
  devTemplateDir, hostNames, hostToolsDir, isValidHostId, resolveLocalConfig,
  type HostNames, type LocalDriverConfig, type ResolvedLocalConfig,
} from './config.js';
import {
  createHostCgroups,
  setHostStandby,
  destroyHostCgroups,
  detectCgroupLayout,
  ensureCgroupParents,
  hostCgroupDirs,
  parentDirs,
  readMountinfo,
  type CgroupLayout,
} from './cgroups.js';
import { captureUpperDir } from './capture.js';
import { buildFstab, buildLauncherScript, buildSetupScript, type SystemTools } from './host-scripts.js';
import { hasSysrqTrigger, prepareCapabilityTool, type CapabilityTool } from './confinement.js';
import { BaseViews, lowerDirOption } from './overlay.js';
import { cancelled, consoleTail, createHostDir, launchError, LaunchProcessError, spawnLocally, startLauncher, writeHostFiles } from './host-launch.js';
import { Spawner, type LaunchRequest, type LauncherChild } from './spawner.js';
import { knownRecord, liveAddress, readStateFile, recordToDriverData, STATE_VERSION, writeStateFile, type HostRecord } from './host-state.js';
import { assertSubnetFree, ensureBridge, innerNetworkBatch, outerNetworkBatch, removeHostNetwork } from './network.js';
import { HostReachability } from './reachability.js';
import { accessRecord, HostAccess } from './host-access.js';
import { parseEgressAllow } from '../../core/egress-allow.js';
import { createHostDisk, diskPaths, hasOwnDisk, removeHostDisk } from './disk.js';
import { readHostStats } from './host-stats.js';
import { checkHostSpec, describeHost, foundHostIds, stopHostProcesses } from './host-lifecycle.js';
import { checkAgentDir, checkPlatform, findTool, prepareDevTemplate, probeNamespacesAndOverlay, resolveTools } from './preflight.js';
import { describeFailure, isSameLiveProcess, readProcessStat, runCommand, SYSTEM_PATH, type CommandRunner } from './proc.js';
import { IpAllocator } from './subnet.js';


interface Prepared {
  tools: SystemTools;
  layout: CgroupLayout;
  capTool: CapabilityTool;
  reachability: HostReachability;
  access: HostAccess;
  info: DriverInfo;
}

export class LocalDriver implements HostDriver {
  readonly name = 'local';
  private readonly cfg: ResolvedLocalConfig;
  private readonly addresses: IpAllocator;
  /** The kernel is the machine's: whether its /proc has sysrq-trigger does not change. */
  private readonly sysrqTrigger = hasSysrqTrigger();
  private preparing: Promise<Prepared> | undefined;
  /** What `preparing` gave, once it has (for synchronous readers such as nameServiceCounts). */
  private ready: Prepared | undefined;
  /** Spawns on behalf of this process (see spawner.ts); started by init(), before the store opens. */
  private spawner: Spawner | undefined;
  private tools: SystemTools | undefined;
  /** Views of bases that contain image layers (see overlay.ts); under stateDir, hidden from hosts. */
  private readonly baseViews: BaseViews;

  constructor(config: LocalDriverConfig) {
    this.cfg = resolveLocalConfig(config);
    this.addresses = new IpAllocator(this.cfg.subnet);
    this.baseViews = new BaseViews(join(this.cfg.stateDir, '.bases'), () => {
      if (!this.tools) throw new Error('local driver used before init()');
      return this.tools;
    }, this.run);
  }

  /**
   * Runs a tool through the spawn helper while it lives, else from this process. Public for the
   * local image store's mounts: a spawn from the server itself costs ~18 ms once the store is loaded.
   */
  readonly run: CommandRunner = (file, args, input) =>
    this.spawner?.alive ? this.spawner.run(file, args, input, { PATH: SYSTEM_PATH, LC_ALL: 'C' }) : runCommand(file, args, input);

  private readonly spawnLauncher = (req: LaunchRequest): Promise<LauncherChild> => (this.spawner?.alive ? this.spawner.launch(req) : spawnLocally(req));

  /** The cgroups in use, once init() has run: a host's CPU share is set without waiting on anything. */
  private layout: CgroupLayout | undefined;

  /** Preflight, bridge, cgroup parents, /dev template, address seeding. Safe to call repeatedly. */
  async init(_opts?: OperationOptions): Promise<DriverInfo> {
    return (await this.prepared()).info;
  }

  private prepared(): Promise<Prepared> {
    this.preparing ??= this.prepare().then(
      (prepared) => (this.ready = prepared),
      (err: unknown) => {
        this.preparing = undefined; // let a later call retry once the user fixed the machine
        throw err;
      },
    );
    return this.preparing;
  }

  private async prepare(): Promise<Prepared> {
    checkPlatform();
    this.spawner ??= Spawner.start();
    const tools = resolveTools();
    this.tools = tools;
    checkAgentDir(this.cfg.agentDir);
    mkdirSync(this.cfg.stateDir, { recursive: true, mode: 0o700 });
    const network = { bridge: this.cfg.bridge, subnet: this.cfg.subnet.cidr, name: this.cfg.cgroupName };
    assertSameNetwork(this.cfg.stateDir, network);
    await assertSubnetFree(tools.ip, this.cfg.subnet, this.cfg.bridge, (message) => this.cfg.logger.warn({ bridge: this.cfg.bridge }, message));
    recordNetwork(this.cfg.stateDir, network);
    const layout = detectCgroupLayout(readMountinfo());
    this.layout = layout;
    if (layout.hierarchies.length === 0) {
      throw new BerthError('driver_unavailable', 'no cgroup filesystem is mounted', 'Mount cgroup2 at /sys/fs/cgroup (or the v1 cpu, memory and pids hierarchies) and run berth server as root.');
    }
    if (layout.missing.length > 0) this.cfg.logger.warn({ missing: layout.missing }, 'cgroup controllers unavailable; hosts asking for those limits will fail to launch');
    if (layout.slowJoin) {
      this.cfg.logger.info({}, 'cgroup v2 is mounted without favordynmods: every launch waits ~10 ms for the kernel when joining cgroups (mount -o remount,favordynmods /sys/fs/cgroup avoids it)');
    }
    await probeNamespacesAndOverlay(tools, this.cfg.stateDir);
    await prepareDevTemplate(tools, devTemplateDir(this.cfg));
    const capTool = await prepareCapabilityTool(hostToolsDir(this.cfg));
    ensureCgroupParents(layout, this.cfg.cgroupName);
    await ensureBridge(tools.ip, this.cfg.bridge, this.cfg.subnet);
    const reachability = new HostReachability(tools.ip, this.cfg.bridge, this.cfg.subnet, this.run, (message) => this.cfg.logger.warn({ bridge: this.cfg.bridge }, message));
    await reachability.prepare();
    const { bridge, subnet, egressDeny, agentPort, nameServers, logger } = this.cfg;
    const access = new HostAccess({ tools: { ip: tools.ip, nft: findTool('nft') }, bridge, subnet, egressDeny, agentPort, nameServers, run: this.run, logger });
    const prepared: Prepared = { tools, layout, capTool, reachability, access, info: { name: this.name, agentListenHost: this.cfg.subnet.gateway } };
    // Addresses of hosts that survived a restart stay taken, and they keep what they may reach.
    const records = foundHostIds(this.cfg, layout).map((id) => readStateFile(hostNames(this.cfg, id).stateFile) ?? {});
    for (const { ip } of records) if (ip) this.addresses.reserve(ip);
    await access.prepare(records);
    this.cfg.logger.info({ bridge: this.cfg.bridge, subnet: this.cfg.subnet.cidr, cgroups: layout.hierarchies.map((h) => `${h.mountPoint} (v${h.version})`) }, 'local driver ready');
    return prepared;
  }

  async launch(spec: HostSpec, opts?: OperationOptions): Promise<LaunchedHost> {
    const started = performance.now();
    await this.prepared();
    const names = hostNames(this.cfg, spec.id);
    checkHostSpec(spec);
    if (opts?.signal?.aborted) throw cancelled(spec.id);
    const ip = this.addresses.allocate();
    let claimedDir = false;
    try {
      createHostDir(names);
      claimedDir = true;
      return await this.boot(spec, names, ip, { reset: false, started, ...(opts?.signal ? { signal: opts.signal } : {}) });
    } catch (err) {
      const output = consoleTail(names.consoleLog);
      // The grant may be in place before the state file that names it (both are written at once).
      const known = { ...(readStateFile(names.stateFile) ?? {}), ip, ...accessRecord(spec.agent.serverUrl, spec.resources, this.cfg.subnet.gateway) };
      const cleaned = !claimedDir || (await this.destroy(names, known).then(() => true, (cleanupErr: unknown) => (this.cfg.logger.warn({ hostId: spec.id, err: errorMessage(cleanupErr) }, 'cleanup after failed launch failed'), false)));
      // An address whose host could not be taken down may still be on its network namespace: not
      // another host's until this server starts again (and finds what is left of it).
      if (cleaned) this.addresses.release(ip);
      throw launchError(spec, err, output);
    }
  }

  /**
   * Resets a running host to a fresh one from `spec` (same id and address): every process is
   * stopped; the writable layer, cgroups, files and network namespace are made anew; and the host
   * boots again with the new agent credentials. The network namespace is not kept: whatever its
   * previous user could change in it (its sysctls and addresses when hosts had NET_ADMIN; whatever
   * a future capability set allows) would greet the next user, and a new one costs a few ms.
   * Cheaper than terminate + launch all the same: no new address, no store work.
   */
  async reset(spec: HostSpec, driverData: Record<string, unknown>, opts?: OperationOptions): Promise<LaunchedHost> {
    const started = performance.now();
    const { layout, tools, reachability, access } = await this.prepared();
    const names = hostNames(this.cfg, spec.id);
    checkHostSpec(spec);
    const record = knownRecord(names.stateFile, driverData);
    const ip = record.ip;
    if (!ip || !existsSync(names.hostDir)) {
      throw new BerthError('invalid_state', `host ${spec.id} cannot be reset: it is not fully present on this machine`, 'Terminate it and launch a new one.', { hostId: spec.id });
    }
    try {
      await this.stopProcesses(record, hostCgroupDirs(layout, this.cfg.cgroupName, spec.id));
      // Its next user is not of its group. After the stop: a member listed from now on is stale.
      await reachability.remove(ip);
      await access.revoke(ip, record);
      await destroyHostCgroups(hostCgroupDirs(layout, this.cfg.cgroupName, spec.id));
      // The overlay died with the host's mount namespace: its layers are plain directories now (or on
      // its own disk, which goes; the boot makes a new one).
      await removeHostDisk(names, this.run);
      await Promise.all([
        // The console log too: what the previous user's programs printed there is not the next one's to read.
        ...[names.upperDir, names.workDir, names.rootDir, names.consoleLog].map((dir) => rm(dir, { recursive: true, force: true, maxRetries: 3 })),
        removeHostNetwork(tools.ip, names, this.run),
      ]);
      return await this.boot(spec, names, ip, { reset: true, started, ...(opts?.signal ? { signal: opts.signal } : {}) });
    } catch (err) {
      const output = consoleTail(names.consoleLog);
      throw launchError(spec, err, output);
    }
  }

  /** Starts a host in its (claimed, empty) directory, with a new netns and veth; `reset` is for the log. */
  private async boot(spec: HostSpec, names: HostNames, ip: string, how: { reset: boolean; started: number; signal?: AbortSignal }): Promise<LaunchedHost> {
    const { tools, layout, capTool, access } = await this.prepared();
    const { subnet } = this.cfg;
    const reach = accessRecord(spec.agent.serverUrl, spec.resources, subnet.gateway);
    const record: HostRecord = {
      version: STATE_VERSION, id: spec.id, hostname: spec.hostname, ip, prefixLength: subnet.prefixLength, gateway: subnet.gateway,
      image: spec.image, netns: names.netns, veth: names.veth, hostDir: names.hostDir, consoleLog: names.consoleLog,
      cgroupDirs: hostCgroupDirs(layout, this.cfg.cgroupName, spec.id), launchedAt: new Date().toISOString(),
      ...reach,
    };
    const cgroupJoins = createHostCgroups(layout, this.cfg.cgroupName, spec.id, spec.resources, spec.standby ?? false);
    const setupScript = buildSetupScript({
      tools, names, hostname: spec.hostname, innerNetworkBatch: innerNetworkBatch(ip, subnet),
      devTemplateDir: devTemplateDir(this.cfg), agentCommand: this.cfg.agentCommand, confine: capTool.prefix,
    });
    const launcherScript = buildLauncherScript({ tools, names, cgroupJoins, outerNetworkBatch: outerNetworkBatch(names, this.cfg.bridge), setupScript });
    const env = { HOME: '/root', HOSTNAME: spec.hostname, container: 'berth' };
    // Mounted before the launcher makes the host's mount namespace, which copies it (see disk.ts).
    if (spec.resources.diskMiB !== undefined) await createHostDisk(names, spec.resources.diskMiB, tools.sh, this.run);
    const launcher = await startLauncher(this.spawnLauncher, tools.sh, launcherScript, names, env, this.cfg.launchTimeoutMs, how.signal);
    try {
      // The state file is in place before the host runs (the launcher waits for us), so a crash
      // mid-launch leaves a host that list() finds with its address.
      const stack = { base: spec.image, layers: spec.layers ?? [] };
      const lowerDir = lowerDirOption(stack, await this.baseViews.basePathFor(stack));
      const fstab = buildFstab({ image: spec.image, lowerDir, names, agentDir: this.cfg.agentDir, toolsDir: capTool.dir, sysrqTrigger: this.sysrqTrigger, hiddenPaths: this.cfg.hiddenPaths });
      // Hosts resolve names at the gateway (group mates'; with egress, any): the relay starts with the first.
      const nameServer = await access.nameService();
      if (reach.egressAllow && !(nameServer && access.forwardsNames) && parseEgressAllow(reach.egressAllow).names.length > 0) {
        throw new BerthError('driver_unavailable', `host ${spec.id} may reach names, but hosts get no name service on this machine (see the server's log)`, 'Give berth server name servers (--dns IP[,IP...]), or allow the host ranges only.');
      }
      writeHostFiles(names, spec, ip, fstab, nameServer);
      writeStateFile(names.stateFile, record);
      await access.admit(ip, reach);
    } catch (err) {
      launcher.abort();
      await launcher.ready.catch(() => undefined);
      throw err;
    }
    launcher.proceed();
    const prepMs = performance.now() - how.started;
    const host = await launcher.ready;
    const outer = readProcessStat(host.outerPid);
    const init = readProcessStat(host.initPid);
    if (!init) throw new LaunchProcessError(`init process ${host.initPid} exited right after starting`, host.outerPid);
    Object.assign(record, { initPid: host.initPid, initStartTime: init.startTime });
    if (outer) Object.assign(record, { outerPid: host.outerPid, outerStartTime: outer.startTime });
    writeStateFile(names.stateFile, record);
    const totalMs = performance.now() - how.started;
    this.cfg.logger.debug({ hostId: spec.id, ip, initPid: host.initPid, prepMs: round(prepMs), totalMs: round(totalMs), reset: how.reset }, 'host launched');
    return { id: spec.id, hostname: spec.hostname, ip, driverData: recordToDriverData(record) };
  }

  /**
   * Copies (or, with `stop`, moves) the host's writable layer to `dest`; see HostDriver.captureLayer.
   * A stopped host's overlay is gone with its mount namespace, so its upper dir is a plain directory.
   */
  async captureLayer(id: string, driverData: Record<string, unknown>, dest: string, opts: OperationOptions & { stop: boolean }): Promise<void> {
    const { tools, layout } = await this.prepared();
    const names = hostNames(this.cfg, id);
    const record = knownRecord(names.stateFile, driverData);
    if (!record.ip || !record.hostname) throw new BerthError('invalid_state', `host ${id} is not fully present on this machine`, 'Capture a running host.', { hostId: id });
    if (opts.stop) await this.stopProcesses(record, hostCgroupDirs(layout, this.cfg.cgroupName, id));
    await captureUpperDir({ names, hostname: record.hostname, ip: record.ip, gateway: this.cfg.subnet.gateway, dest, move: opts.stop, cp: tools.cp, run: this.run });
  }

  /**
   * See HostDriver.setNetworkGroups and reachability.ts. A member counts only while the init its
   * driverData names runs: one reset or terminated since is left out, so a late call cannot give a
   * host's address back to a group it left (the reset and terminate took it out already).
   */
  async setNetworkGroups(groups: GroupMember[][], opts: OperationOptions & { all?: boolean } = {}): Promise<void> {
    const { reachability, access } = await this.prepared();
    const addressOf = (member: GroupMember) => (isValidHostId(member.id) ? liveAddress(hostNames(this.cfg, member.id).stateFile, member.driverData) : undefined);
    const named = groups.map((members) => members.flatMap((m) => ((ip) => (ip ? [{ ip, names: m.names ?? [] }] : []))(addressOf(m))));
    await reachability.setGroups(named.map((members) => members.map((m) => m.ip)), { all: opts.all ?? false });
    access.setGroupNames(named, opts.all ?? false);
  }

  /** See HostDriver.stats and host-stats.ts. */
  async stats(id: string, driverData: Record<string, unknown>, _opts?: OperationOptions): Promise<HostStats> {
    const { layout } = await this.prepared();
    const names = hostNames(this.cfg, id);
    const record = knownRecord(names.stateFile, driverData);
    if (!isSameLiveProcess(record.initPid, record.initStartTime)) throw new BerthError('invalid_state', `host ${id} is not running on this machine`, 'Ask for the stats of a running host.', { hostId: id });
    return readHostStats(layout, this.cfg.cgroupName, id, hasOwnDisk(names) ? diskPaths(names).mountPoint : undefined);
  }

  setStandby(id: string, _driverData: Record<string, unknown>, standby: boolean): void {
    if (this.layout) setHostStandby(this.layout, this.cfg.cgroupName, id, standby);
  }

  async terminate(id: string, driverData: Record<string, unknown>, _opts?: OperationOptions): Promise<void> {
    const { reachability } = await this.prepared();
    const names = hostNames(this.cfg, id);
    const record = knownRecord(names.stateFile, driverData);
    try {
      await this.destroy(names, record);
      // Only once it is gone (a member listed from now on is stale), and before its address is free.
      if (record.ip) await reachability.remove(record.ip);
    } catch (err) {
      if (isBerthError(err)) throw err;
      throw new BerthError('internal', `terminating host ${id} failed: ${errorMessage(err)}`, 'Terminate the host again; if it keeps failing, check the machine for leftovers of it (ip netns, cgroups, its state dir).', { hostId: id }, { cause: err });
    }
    if (record.ip) this.addresses.release(record.ip);
    this.cfg.logger.debug({ hostId: id }, 'host terminated');
  }

  /**
   * Stops the host and removes every trace of it. Names and paths come from the id; the record only
   * contributes pids, each checked against its start time before it is signalled.
   */
  private async destroy(names: HostNames, record: Partial<HostRecord>): Promise<void> {
    const { tools, layout, access } = await this.prepared();
    const cgroupDirs = hostCgroupDirs(layout, this.cfg.cgroupName, names.id);
    await this.stopProcesses(record, cgroupDirs);
    await destroyHostCgroups(cgroupDirs);
    await removeHostNetwork(tools.ip, names, this.run);
    // Before its address can be reused by another host.
    if (record.ip) await access.revoke(record.ip, record);
    // Only now: the overlay lived in the host's mount namespace, which died with its last process.
    await removeHostDisk(names, this.run);
    await rm(names.hostDir, { recursive: true, force: true, maxRetries: 3 });
  }

  /** Stops every process of a host: TERM to its PID 1 (the kernel kills the rest), KILL after the grace. */
  private stopProcesses(record: Partial<HostRecord>, cgroupDirs: string[]): Promise<void> {
    return stopHostProcesses(record, cgroupDirs, this.cfg.stopGraceMs);
  }

  async describe(id: string, driverData: Record<string, unknown>, _opts?: OperationOptions): Promise<DescribedHost> {
    const { layout } = await this.prepared();
    const names = hostNames(this.cfg, id);
    return describeHost(names, knownRecord(names.stateFile, driverData), hostCgroupDirs(layout, this.cfg.cgroupName, id));
  }

  async list(_opts?: OperationOptions): Promise<FoundHost[]> {
    const { layout } = await this.prepared();
    return foundHostIds(this.cfg, layout).map((id) => {
      const names = hostNames(this.cfg, id);
      const record = readStateFile(names.stateFile) ?? {};
      return { id, driverData: { ...record, id, netns: names.netns, veth: names.veth, hostDir: names.hostDir } };
    });
  }

  /** What the name service answered so far; undefined until a host was given it. */
  nameServiceCounts(): NameServiceCounts | undefined {
    return this.ready?.access.nameServiceCounts();
  }

  /** Stops answering hosts' DNS queries (see HostAccess.nameService); hosts keep running. */
  async stopServing(): Promise<void> {
    const preparing = this.preparing;
    if (preparing) await (await preparing.catch(() => undefined))?.access.close();
  }

  /**
   * Removes what init() set up on the machine (the bridge and the cgroup parents), but only when no
   * host of this driver is left; returns whether it did. For test suites and uninstalls: a running
   * server keeps its bridge, since hosts outlive it.
   */
  async teardown(): Promise<boolean> {
    if ((await this.list()).length > 0) return false;
    const { tools, layout, reachability, access } = await this.prepared();
    await reachability.teardown();
    await access.teardown();
    if (existsSync(`/sys/class/net/${this.cfg.bridge}`)) {
      const result = await this.run(tools.ip, ['link', 'del', this.cfg.bridge]);
      if (result.code !== 0) this.cfg.logger.warn({ bridge: this.cfg.bridge }, `could not remove the bridge: ${describeFailure('ip', result)}`);
    }
    await this.baseViews.unmountAll();
    for (const dir of parentDirs(layout, this.cfg.cgroupName)) {
      try {
        rmdirSync(dir);
      } catch {
        // already gone, or a host's cgroup appeared meanwhile
      }
    }
    this.preparing = undefined;
    return true;
  }
}


function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
