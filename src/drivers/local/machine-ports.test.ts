/**
 * Which of the machine's ports a host reaches (HostResources.machinePorts, machine-ports.ts), on
 * this machine with real hosts (root on Linux and nft needed; skipped otherwise): its agent channel
 * and its grants, nothing else of the machine, over IPv4 or IPv6; what the machine opens towards a
 * host still works; a reset or a terminate takes a grant away; a restarted driver keeps them.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostSpec, LaunchedHost } from '../types.js';
import { countLocalLeftovers, LocalDriver, type LocalDriverConfig } from './index.js';
import { agentEndpoint, grantPairs, tableScript } from './machine-ports.js';
import { findTool } from './preflight.js';
import { inHost, runTool, sleeperDriverConfig, startTestDriver, testSpec } from './test-helpers.js';

describe('the machine ports table', () => {
  it('lets a host dial its agent and its grants at the gateway, and rejects the rest', () => {
    const script = tableScript('br-x.0', '10.9.0.1', [{ ip: '10.9.0.1', port: 7071 }, { ip: '10.9.0.1', port: 7071 }], [{ ip: '10.9.0.5', ports: [5432, 5432, 80] }]);
    expect(script).toContain('table inet berth_br_x_0 {}\ndelete table inet berth_br_x_0\n');
    expect(script).toContain('elements = { 10.9.0.1 . 7071 }\n');
    expect(script).toContain('elements = { 10.9.0.5 . 5432, 10.9.0.5 . 80 }\n');
    expect(script).toContain('iifname "br-x.0" jump from_hosts');
    expect(script).toContain('ip daddr 10.9.0.1 ip saddr . tcp dport @granted accept');
    expect(script.trim().split('\n').at(-3)?.trim()).toBe('reject with icmpx admin-prohibited');
    expect(grantPairs([{ ip: '10.9.0.7', ports: [] }])).toEqual([]);
  });

  it("reads where an agent dials from its URL: the gateway when the URL names a host", () => {
    expect(agentEndpoint('ws://10.9.0.1:7071/v1/agent', '10.9.0.1')).toEqual({ ip: '10.9.0.1', port: 7071 });
    expect(agentEndpoint('ws://berth.internal/v1/agent', '10.9.0.1')).toEqual({ ip: '10.9.0.1', port: 80 });
    expect(agentEndpoint('wss://10.9.0.2/v1/agent', '10.9.0.1')).toEqual({ ip: '10.9.0.2', port: 443 });
    expect(agentEndpoint('not a url', '10.9.0.1')).toBeUndefined();
  });
});

const canRun = process.platform === 'linux' && process.getuid?.() === 0 && findTool('nft') !== undefined;
const root = mkdtempSync('/tmp/berth-machine-ports-test-');
const config: LocalDriverConfig = sleeperDriverConfig(root, { bridge: 'berthmpt0', subnet: '10.241.0.0/24', cgroupName: 'berthmpt' });
const run = randomBytes(3).toString('hex');
const GATEWAY = '10.241.0.1';
const AGENT_PORT = 9401;
const GRANTED_PORT = 9402;
const CLOSED_PORT = 9403;
const CONFIGURED_AGENT_PORT = 9404;

const spec = (name: string, machinePorts?: number[]): HostSpec => testSpec(run, name, `ws://${GATEWAY}:${AGENT_PORT}/v1/agent`, machinePorts ? { machinePorts } : {});

/** What a host gets when it opens a connection to `address` port `port` (node in the host, the machine's root as image). */
async function dial(host: LaunchedHost, address: string, port: number): Promise<string> {
  const js = `const s=require('net').connect({host:${JSON.stringify(address)},port:${port}});s.setTimeout(3000,()=>{console.log('timeout');process.exit()});s.on('data',d=>{console.log('answer:'+d);process.exit()});s.on('error',e=>{console.log(e.code);process.exit()})`;
  return (await inHost(host, `node -e ${JSON.stringify(js)}`)).stdout.trim();
}

describe.skipIf(!canRun)("a host reaches the machine's ports it was granted, and no others", () => {
  let driver: LocalDriver;
  let baseline: ReturnType<typeof countLocalLeftovers>;
  const servers: Server[] = [];
  let bridgeV6 = '';

  const listen = (port: number, host: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const server = createServer((socket) => socket.end(`port ${port}`));
      servers.push(server);
      server.once('error', reject).listen(port, host, () => resolve());
    });

  beforeAll(async () => {
    ({ driver, baseline } = await startTestDriver(config));
    // On every address, IPv6 too, as a careless service on a machine listens.
    for (const port of [AGENT_PORT, GRANTED_PORT, CLOSED_PORT, CONFIGURED_AGENT_PORT]) await listen(port, '::');
    const shown = await runTool('ip', ['-j', '-6', 'addr', 'show', 'dev', 'berthmpt0']);
    const links = JSON.parse(shown.stdout || '[]') as { addr_info?: { local?: string; scope?: string }[] }[];
    bridgeV6 = links.flatMap((l) => l.addr_info ?? []).find((a) => a.scope === 'link')?.local ?? '';
  }, 60_000);

  afterAll(async () => {
    for (const host of await driver.list()) await driver.terminate(host.id, host.driverData);
    for (const server of servers) server.close();
    expect(countLocalLeftovers(config)).toEqual(baseline);
    expect(await driver.teardown()).toBe(true);
    expect((await runTool('nft', ['list', 'table', 'inet', 'berth_berthmpt0'])).code).not.toBe(0);
    rmSync(root, { recursive: true, force: true });
  });

  it('reaches its agent channel and its grant; every other port of the machine is closed to it', async () => {
    const granted = await driver.launch(spec('granted', [GRANTED_PORT]));
    const plain = await driver.launch(spec('plain'));
    expect(await dial(granted, GATEWAY, AGENT_PORT)).toBe(`answer:port ${AGENT_PORT}`);
    expect(await dial(granted, GATEWAY, GRANTED_PORT)).toBe(`answer:port ${GRANTED_PORT}`);
    expect(await dial(granted, GATEWAY, CLOSED_PORT)).toBe('EHOSTUNREACH');
    expect(await dial(plain, GATEWAY, AGENT_PORT)).toBe(`answer:port ${AGENT_PORT}`);
    expect(await dial(plain, GATEWAY, GRANTED_PORT)).toBe('EHOSTUNREACH');
    // Nor around the rules over IPv6 (the bridge's link-local address).
    if (bridgeV6) expect(await dial(granted, `${bridgeV6}%eth0`, GRANTED_PORT)).toBe('EHOSTUNREACH');
    // What the machine opens towards a host is answered (the router's and health checks' way).
    await inHost(plain, `nohup node -e "require('net').createServer(s=>s.end('from host')).listen(9500)" >/dev/null 2>&1 &`);
    const answer = await new Promise<string>((resolve) => {
      const attempt = (left: number): void => {
        const socket = connect(9500, plain.ip);
        socket.on('data', (d) => resolve(String(d)));
        socket.on('error', () => (left > 0 ? setTimeout(() => attempt(left - 1), 100) : resolve('unreachable')));
      };
      attempt(30);
    });
    expect(answer).toBe('from host');
    await Promise.all([driver.terminate(granted.id, granted.driverData), driver.terminate(plain.id, plain.driverData)]);
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);

  it('takes a grant away on reset and terminate, and keeps it across a restart of the driver', async () => {
    const host = await driver.launch(spec('kept', [GRANTED_PORT]));
    // A new driver (a restarted server) rebuilds the table from its hosts' records.
    const restarted = new LocalDriver(config);
    await restarted.init();
    expect(await dial(host, GATEWAY, GRANTED_PORT)).toBe(`answer:port ${GRANTED_PORT}`);
    const reset = await restarted.reset(spec('kept'), host.driverData);
    expect(await dial(reset, GATEWAY, GRANTED_PORT)).toBe('EHOSTUNREACH');
    expect(await dial(reset, GATEWAY, AGENT_PORT)).toBe(`answer:port ${AGENT_PORT}`);
    const again = await restarted.reset(spec('kept', [GRANTED_PORT]), reset.driverData);
    expect(await dial(again, GATEWAY, GRANTED_PORT)).toBe(`answer:port ${GRANTED_PORT}`);
    await restarted.terminate(again.id, again.driverData);
    expect(countLocalLeftovers(config).machinePortGrants).toBe(baseline.machinePortGrants);
  }, 60_000);

  it('lets hosts dial the agent port the configuration names, also one whose record names none (launched before records did)', async () => {
    const configured = new LocalDriver({ ...config, agentPort: CONFIGURED_AGENT_PORT });
    await configured.init();
    const legacy = await configured.launch(testSpec(run, 'legacy', 'not a url'));
    expect(await dial(legacy, GATEWAY, CONFIGURED_AGENT_PORT)).toBe(`answer:port ${CONFIGURED_AGENT_PORT}`);
    expect(await dial(legacy, GATEWAY, CLOSED_PORT)).toBe('EHOSTUNREACH');
    await configured.terminate(legacy.id, legacy.driverData);
  }, 60_000);
});
