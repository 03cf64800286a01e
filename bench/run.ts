/**
 * `npm run bench`: the foundation's speed and memory, measured on real hosts, each figure beside a
 * baseline taken in the same run:
 *   - host launch -> agent ready (API call until the agent has enrolled), vs a bare `node` start;
 *   - Run Command round trip for `true` (API call until the result is stored), vs a bare bash spawn;
 *   - the agent's idle RSS and CPU; what TLS on the agent channel adds to a launch, a round trip and RSS;
 *   - warm claim vs the cold path (launch + the same init), and sustained claims/s (bench/claims.ts).
 * Prints a Markdown report and writes it to bench/results/latest.md.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import type { HostView } from '../src/hosts/views.js';
import { packageRoot } from '../src/cli/paths.js';
import { agentPidOf, startServer } from '../test/helpers/server.js';
import { CommandsRepo } from '../src/store/commands-repo.js';
import { HostsRepo } from '../src/store/hosts-repo.js';
import { DEFAULT_TENANT } from '../src/store/migrations.js';
import { openStore } from '../src/store/store.js';
import { awsBench } from './aws.js';
import { awsSsmBench } from './aws-ssm.js';
import { metricsBench } from './metrics.js';
import { dashboardBench } from './dashboard.js';
import { claimBench } from './claims.js';
import { imageBench } from './images.js';
import { serviceBench } from './services.js';
import { spinupBench } from './spinup.js';
import { routerTlsBench } from './router-tls.js';
import { agentTlsBench } from './agent-tls.js';
import { ms, summarize, type Summary } from './stats.js';
import { diskLaunchBench } from './disk.js';
import { hostStatsBench } from './host-stats.js';
import { machinePortsBench } from './machine-ports.js';
import { dnsBench } from './dns.js';
import { shellBench } from './shell.js';
import { agentStartBench } from './agent-start.js';

const execFileAsync = promisify(execFile);

/** Hosts with egress resolve names through a test name server on loopback, at this port (bench/dns.ts). */
const DNS_PORT = 9604;
const NET = { bridge: 'berthbench0', subnet: '10.220.0.0/22', cgroupName: 'berthbench', nameServers: [`127.0.0.1:${DNS_PORT}`] };
const LAUNCHES = Number(process.env['BENCH_LAUNCHES'] ?? 60);
const CLI_RUNS = 20;
const DISK_LAUNCHES = Number(process.env['BENCH_DISK_LAUNCHES'] ?? 20);
const ROUND_TRIPS = Number(process.env['BENCH_ROUND_TRIPS'] ?? 600);
const IDLE_SECONDS = Number(process.env['BENCH_IDLE_SECONDS'] ?? 10);
/** Trips that each come after the machine sat idle this long (see the round trip after idle). */
const IDLE_GAP_MS = 500;
const GAP_TRIPS = Number(process.env['BENCH_GAP_TRIPS'] ?? 40);
/**
 * Seconds after work before the idle window: going idle, the agent runs its compacting GC 2 s after
 * its last command, and V8's memory reducer one or two more some 8-15 s later (each 15-25 ms of CPU).
 */
const IDLE_SETTLE_SECONDS = 20;
const IMAGES = { bakes: Number(process.env['BENCH_BAKES'] ?? 3), launches: Number(process.env['BENCH_IMAGE_LAUNCHES'] ?? 40) };
const SERVICES = { crashes: Number(process.env['BENCH_SERVICE_CRASHES'] ?? 30), idleSeconds: Number(process.env['BENCH_IDLE_SECONDS'] ?? 10) };
/**
 * Run only these parts: `npm run bench -- spinup claims`, or BENCH_ONLY=foundation,claims (parts:
 * foundation, claims, images, services, spinup, aws, metrics, dashboard); default all.
 */
const PARTS = ['foundation', 'claims', 'images', 'services', 'spinup', 'aws', 'metrics', 'dashboard'];
const LOCAL_PARTS = PARTS.filter((p) => p !== 'aws' && p !== 'metrics' && p !== 'dashboard');
const named = process.argv.slice(2).filter((arg) => PARTS.includes(arg));
const ONLY = new Set(named.length > 0 ? named : (process.env['BENCH_ONLY'] ?? PARTS.join(',')).split(','));
const SPINUP = {
  slow: Number(process.env['BENCH_SPINUP_SLOW'] ?? 5),
  fast: Number(process.env['BENCH_SPINUP_FAST'] ?? 30),
  ...(process.env['BENCH_SPINUP_VARIANTS'] ? { variants: process.env['BENCH_SPINUP_VARIANTS'].split(',') } : {}),
};
const CLAIMS = {
  warm: Number(process.env['BENCH_WARM_CLAIMS'] ?? 200),
  cold: Number(process.env['BENCH_COLD_CLAIMS'] ?? 50),
  sustainedSeconds: Number(process.env['BENCH_SUSTAINED_SECONDS'] ?? 10),
  concurrency: Number(process.env['BENCH_CLAIM_CONCURRENCY'] ?? 16),
};
/** Run against a PostgreSQL server instead of the embedded store (its database is used as is). */
const DATABASE_URL = process.env['BENCH_DATABASE_URL'];

function progress(line: string): void {
  process.stderr.write(`\r\x1b[2K${line}`);
}

async function main(): Promise<void> {
  const rows: string[] = [];
  if (LOCAL_PARTS.some((part) => ONLY.has(part))) {
    const srv = await startServer(NET, DATABASE_URL ? { databaseUrl: DATABASE_URL } : {});
    try {
      if (ONLY.has('foundation')) {
        rows.push(...(await foundationBench(srv)), ...(await diskLaunchBench(srv, { launches: DISK_LAUNCHES, progress })), ...(await hostStatsBench(srv, { hosts: 10, rounds: 20, progress })));
        rows.push(...(await machinePortsBench(srv, { bridge: NET.bridge, rounds: 12, perRound: 100, progress })));
        rows.push(...(await dnsBench(srv, { dnsPort: DNS_PORT, gateway: '10.220.0.1', queries: 1000, progress })));
        rows.push(...(await shellBench(srv, { opens: 40, echoes: 1000, floodBytes: 64 * 1024 * 1024, progress })));
        rows.push(...(await agentTlsBench(srv, { launches: Number(process.env['BENCH_AGENT_TLS_LAUNCHES'] ?? 30), trips: Number(process.env['BENCH_AGENT_TLS_TRIPS'] ?? 200), progress })));
      }
      if (ONLY.has('claims')) rows.push(...(await claimBench(srv, { ...CLAIMS, progress })));
      if (ONLY.has('images')) rows.push(...(await imageBench(srv, { ...IMAGES, progress })));
      if (ONLY.has('services')) rows.push(...(await serviceBench(srv, { ...SERVICES, progress })));
      if (ONLY.has('spinup')) {
        rows.push(...(await spinupBench(srv, { ...SPINUP, progress })));
        rows.push(...(await routerTlsBench({ requests: Number(process.env['BENCH_ROUTER_REQUESTS'] ?? 2000), connections: Number(process.env['BENCH_ROUTER_CONNECTIONS'] ?? 400), progress })));
      }
    } finally {
      await srv.stop();
    }
  }
  if (ONLY.has('dashboard')) rows.push(...(await dashboardBench({ loads: Number(process.env['BENCH_DASHBOARD_LOADS'] ?? 20), claims: Number(process.env['BENCH_METRICS_CLAIMS'] ?? 20_000), progress })));
  if (ONLY.has('metrics')) rows.push(...(await metricsBench({ scrapes: Number(process.env['BENCH_METRICS_SCRAPES'] ?? 50), claims: Number(process.env['BENCH_METRICS_CLAIMS'] ?? 20_000), progress })));
  if (ONLY.has('aws')) {
    rows.push(...(await awsBench({ claims: Number(process.env['BENCH_AWS_CLAIMS'] ?? 40), progress })));
    rows.push(...(await awsSsmBench({ commands: Number(process.env['BENCH_AWS_SSM_COMMANDS'] ?? 30), progress })));
  }
  progress('store writes in isolation…');
  const writes = await isolatedStoreWrites(300);
  progress('');
  rows.push(
    `| baseline: store write in isolation (command create, then result update; PGlite in memory, no server) | ${writes.create.n} | ${ms(writes.create.p50)} / ${ms(writes.update.p50)} | ${ms(writes.create.p99)} / ${ms(writes.update.p99)} | | |`,
  );
  const report = [
    `### ${new Date().toISOString().slice(0, 10)} — ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, store: ${DATABASE_URL ? 'PostgreSQL' : 'PGlite'}`,
    '',
    '| measure | n | p50 | p99 | target / ratio | |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
  process.stdout.write(`${report}\n`);
  mkdirSync(join(packageRoot(), 'bench', 'results'), { recursive: true });
  writeFileSync(join(packageRoot(), 'bench', 'results', 'latest.md'), report);
}

function verdict(ok: boolean): string {
  return ok ? 'met' : 'MISSED';
}

async function isolatedStoreWrites(n: number): Promise<{ create: Summary; update: Summary }> {
  const store = await openStore({ dataDir: 'memory://' });
  try {
    await new HostsRepo(store.db).insert({ id: 'h-bench', tenantId: DEFAULT_TENANT, driver: 'local', image: '/', hostname: 'h', tags: {}, resources: {}, agentTokenHash: 'x' });
    const commands = new CommandsRepo(store.db);
    const create: number[] = [];
    const update: number[] = [];
    for (let i = 0; i < n; i++) {
      let t0 = performance.now();
      await commands.create({ id: `c-${i}`, tenantId: DEFAULT_TENANT, document: 'RunShellScript', parameters: { commands: ['true'] }, targets: {}, deliveryTimeoutS: 30, invocations: [{ hostId: 'h-bench', status: 'Pending', statusDetail: '' }] });
      create.push(performance.now() - t0);
      t0 = performance.now();
      const empty = { text: '', truncated: false, bytes: 0 };
      await commands.updateInvocation(`c-${i}`, 'h-bench', ['Pending'], { status: 'Success', statusDetail: '', exitCodes: [0], stdout: empty, stderr: empty, finishedAt: new Date() });
      update.push(performance.now() - t0);
    }
    return { create: summarize(create), update: summarize(update) };
  } finally {
    await store.close();
  }
}

function bashSpawnFloor(n: number): Summary {
  const script = `const {spawnSync}=require('child_process');const s=[];for(let i=0;i<${n};i++){const t=performance.now();spawnSync('/bin/bash',['-c','true']);s.push(performance.now()-t)}process.stdout.write(JSON.stringify(s))`;
  return summarize(JSON.parse(execFileSync(process.execPath, ['-e', script], { env: {} }).toString()) as number[]);
}

function timeSync(n: number, fn: () => unknown): Summary {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn();
    samples.push(performance.now() - t0);
  }
  return summarize(samples);
}

/**
 * RSS and CPU of each host's agent process (the child of the host's init) once idle. The first
 * IDLE_SETTLE_SECONDS after work are the agent going idle (its GCs, see IDLE_SETTLE_SECONDS): their
 * CPU is reported apart, as a one-off, and the idle CPU is that of the `seconds` after. CPU time from /proc/<pid>/schedstat (nanoseconds; /proc/<pid>/stat counts 10 ms ticks).
 */
async function measureIdle(dataDir: string, hosts: HostView[], seconds: number): Promise<{ agents: number; rssMiB: number; anonMiB: number; fileMiB: number; cpuPercent: number; settleCpuMs: number }> {
  const pids = hosts.map((h) => agentPidOf(dataDir, h.id));
  const cpuNs = (pid: number) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
  const start = pids.map(cpuNs);
  await new Promise((r) => setTimeout(r, IDLE_SETTLE_SECONDS * 1000));
  const before = pids.map(cpuNs);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = pids.map(cpuNs);
  const cpu = pids.map((_, i) => (((after[i] ?? 0) - (before[i] ?? 0)) / 1e9 / seconds) * 100);
  const settle = pids.map((_, i) => ((before[i] ?? 0) - (start[i] ?? 0)) / 1e6);
  const field = (pid: number, name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  const rss = pids.map((pid) => field(pid, 'VmRSS'));
  const worst = pids[rss.indexOf(Math.max(...rss))] ?? 0;
  return { agents: pids.length, rssMiB: Math.max(...rss), anonMiB: field(worst, 'RssAnon'), fileMiB: field(worst, 'RssFile'), cpuPercent: Math.max(...cpu), settleCpuMs: Math.max(...settle) };
}

/** CPU time the machine spent so far (user, nice, system, irq, softirq), ms. */
function machineCpuMs(): number {
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  return ((user + nice + system + irq + softirq) * 1000) / CLOCK_TICKS;
}

/** A process's own CPU time (user + system), ms. */
function processCpuMs(pid: number): number {
  const fields = (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

/** Linux's USER_HZ: /proc reports CPU time in these ticks. */
const CLOCK_TICKS = 100;

/** Launch -> ready, Run Command round trip, idle agent: each beside its baseline. */
async function foundationBench(srv: Awaited<ReturnType<typeof startServer>>): Promise<string[]> {
  // Baselines, same run: the floors a host start and a command run cannot go below — a bare node
  // start, and a bash spawn from a small process (as the agent is; a big process forks slower).
  const nodeStart = timeSync(30, () => spawnSync(process.execPath, ['-e', '0'], { env: {} }));
  const bashTrue = bashSpawnFloor(200);
  const agentStart = agentStartBench(progress);

  const launch: number[] = [];
  const hosts: HostView[] = [];
  // What a host costs in CPU: the loop launches one and terminates one per turn (after the first 3).
  const machineBefore = machineCpuMs();
  const serverBefore = process.cpuUsage();
  let agentsAtReady = 0;
  for (let i = 0; i < LAUNCHES; i++) {
    progress(`launch -> ready ${i + 1}/${LAUNCHES}`);
    const t0 = performance.now();
    const res = await srv.api.post<HostView>('/v1/hosts', {});
    launch.push(performance.now() - t0);
    if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
    agentsAtReady += processCpuMs(agentPidOf(srv.dataDir, res.body.id));
    hosts.push(res.body);
    // Keep a few to measure idle agents and run commands on; remove the rest as we go.
    if (hosts.length > 3) {
      const old = hosts.shift();
      if (old) await srv.api.delete(`/v1/hosts/${old.id}`);
    }
  }
  const machinePerCycle = (machineCpuMs() - machineBefore) / LAUNCHES;
  const serverUsage = process.cpuUsage(serverBefore);
  const serverPerCycle = (serverUsage.user + serverUsage.system) / 1000 / LAUNCHES;
  const target = hosts[hosts.length - 1];
  if (!target) throw new Error('no host');

  // The client runs in its own process, as a real one would, so it does not share the server's loop.
  // Asynchronously: the server shares this process's event loop.
  const clientLoop = async (client: 'berth' | 'fetch', host: HostView, n: number, gapMs = 0): Promise<number[]> => {
    const { stdout } = await execFileAsync(process.execPath, [join(packageRoot(), 'bench', 'client-loop.mjs'), srv.server.url, srv.server.token, host.id, String(n)], {
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, BENCH_CLIENT: client, BENCH_GAP_MS: String(gapMs) },
    });
    return JSON.parse(stdout) as number[];
  };
  // Beside it, the same trips from a client built on fetch(): what a client's own cost adds here.
  // The two take turns in halves, so a slow spell of this machine falls on both; the fetch client
  // uses another host, so the idle figures below are of an agent that ran one series, as before.
  const roundTrip: number[] = [];
  const fetchTrip: number[] = [];
  const agentTrips: number[] = [];
  const half = Math.ceil(ROUND_TRIPS / 2);
  for (let turn = 1; turn <= 2; turn++) {
    progress(`round trip ${turn}/2: x${half} through berth's client, in its own process…`);
    const before = srv.server.commands.roundTrips.recent().length;
    roundTrip.push(...(await clientLoop('berth', target, half)));
    agentTrips.push(...srv.server.commands.roundTrips.recent().slice(before));
    progress(`round trip ${turn}/2: x${half} through a plain fetch() client…`);
    fetchTrip.push(...(await clientLoop('fetch', hosts[0] ?? target, half)));
  }
  const agentTrip = summarize(agentTrips);
  const viaFetch = summarize(fetchTrip);
  // The same trips, each after the machine sat idle for a while, as a claim on a quiet pool comes:
  // every process on the path (client, server, agent, its shell) wakes up cold.
  progress(`round trip after ${IDLE_GAP_MS} ms idle, x${GAP_TRIPS}…`);
  const beforeGap = srv.server.commands.roundTrips.recent().length;
  const gapTrip = summarize(await clientLoop('berth', target, GAP_TRIPS, IDLE_GAP_MS));
  const gapAgent = summarize(srv.server.commands.roundTrips.recent().slice(beforeGap));

  progress(`agent idle for ${IDLE_SETTLE_SECONDS} + ${IDLE_SECONDS} s…`);
  const idle = await measureIdle(srv.dataDir, hosts, IDLE_SECONDS);
  // What a person waits for at the terminal: a fresh CLI process, its request, its output.
  const cli: number[] = [];
  for (let i = 0; i < CLI_RUNS; i++) {
    progress(`CLI one-shot command ${i + 1}/${CLI_RUNS}`);
    const t0 = performance.now();
    await execFileAsync(process.execPath, [join(packageRoot(), 'bin', 'berth.js'), 'host', 'ls', '--json'], {
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', BERTH_URL: srv.server.url, BERTH_TOKEN: srv.server.token },
    });
    cli.push(performance.now() - t0);
  }
  const cliS = summarize(cli);
  progress('');

  for (const host of hosts) await srv.api.delete(`/v1/hosts/${host.id}`);
  const launchS = summarize(launch);
  const rtS = summarize(roundTrip);
  return [
    `| host launch -> agent ready | ${launchS.n} | ${ms(launchS.p50)} | ${ms(launchS.p99)} | p50 <= 150 ms | ${verdict(launchS.p50 <= 150)} |`,
    `| CPU per host (a launch, and a terminate for all but 3), machine-wide; of which this process (server and its in-process client) / the new agent until ready | ${LAUNCHES} | ${ms(machinePerCycle)}; ${ms(serverPerCycle)} / ${ms(agentsAtReady / LAUNCHES)} | | hosts replaced per s that ${cpus().length} cores allow: ${((cpus().length * 1000) / machinePerCycle).toFixed(1)} | |`,
    `| baseline: bare \`node -e 0\` start | ${nodeStart.n} | ${ms(nodeStart.p50)} | ${ms(nodeStart.p99)} | launch p50 / this = ${(launchS.p50 / nodeStart.p50).toFixed(2)}x | |`,
    ...agentStart,
    `| Run Command round trip (\`true\`), berth's API client in its own process | ${rtS.n} | ${ms(rtS.p50)} | ${ms(rtS.p99)} | p50 <= 5 ms | ${verdict(rtS.p50 <= 5)} |`,
    `| the same through a plain \`fetch()\` client (undici), same server, another host | ${viaFetch.n} | ${ms(viaFetch.p50)} | ${ms(viaFetch.p99)} | fetch / berth's client p50 = ${(viaFetch.p50 / rtS.p50).toFixed(2)}x | |`,
    `| of which the agent's part: run sent -> result received by the server | ${agentTrip.n} | ${ms(agentTrip.p50)} | ${ms(agentTrip.p99)} | ${((100 * agentTrip.p50) / rtS.p50).toFixed(0)} % of the round trip | |`,
    `| the same round trip, each after ${IDLE_GAP_MS} ms of the machine idle (as a claim on a quiet pool comes); of which the agent's part | ${gapTrip.n} | ${ms(gapTrip.p50)}; ${ms(gapAgent.p50)} | ${ms(gapTrip.p99)}; ${ms(gapAgent.p99)} | after idle / back to back p50 = ${(gapTrip.p50 / rtS.p50).toFixed(2)}x | |`,
    `| baseline: \`bash -c true\` spawned by a small node process | ${bashTrue.n} | ${ms(bashTrue.p50)} | ${ms(bashTrue.p99)} | round trip p50 / this = ${(rtS.p50 / bashTrue.p50).toFixed(2)}x | |`,
    `| CLI one-shot command (\`berth host ls --json\`: a fresh process, its request, its output) | ${cliS.n} | ${ms(cliS.p50)} | ${ms(cliS.p99)} | this / bare node start = ${(cliS.p50 / nodeStart.p50).toFixed(2)}x | |`,
    `| agent idle RSS (max of ${idle.agents}) | ${idle.agents} | ${idle.rssMiB.toFixed(1)} MiB (${(idle.rssMiB * 1.048576).toFixed(1)} MB) | | <= 50 MB | ${verdict(idle.rssMiB * 1.048576 <= 50)} |`,
    `| of which private (RssAnon) / shared node binary pages (RssFile) | ${idle.agents} | ${idle.anonMiB.toFixed(1)} / ${idle.fileMiB.toFixed(1)} MiB | | | |`,
    `| agent idle CPU over ${IDLE_SECONDS} s (max), after ${IDLE_SETTLE_SECONDS} s of going idle | ${idle.agents} | ${(idle.cpuPercent).toFixed(3)} % | | ~0 | ${verdict(idle.cpuPercent < 0.5)} |`,
    `| before it: going idle after work (one-off: the agent's idle GC, V8's memory reducer), CPU in the first ${IDLE_SETTLE_SECONDS} s (max) | ${idle.agents} | ${idle.settleCpuMs.toFixed(1)} ms | | | |`,
  ];
}

main().catch((err: unknown) => {
  process.stderr.write(`\nbench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
