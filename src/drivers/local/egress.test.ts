/**
 * Egress (HostResources.egress, egress.ts) on this machine with real hosts (root on Linux and nft
 * needed; skipped otherwise). "Beyond the machine" is an upstream this test makes itself: a network
 * namespace behind a veth pair, with a public-looking address (198.18.0.2, the benchmarking range)
 * and a private one (10.246.0.2), answering with the address it sees a connection come from.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostSpec, LaunchedHost } from '../types.js';
import { egressTableScript } from './egress.js';
import { countLocalLeftovers, LocalDriver, type LocalDriverConfig } from './index.js';
import { findTool } from './preflight.js';
import { startUpstream, type Upstream } from '../../../test/helpers/upstream.js';
import { startTestDnsServer, type TestDnsServer } from '../../../test/helpers/dns-server.js';
import { inHost, runTool, sleeperDriverConfig, startTestDriver, testSpec } from './test-helpers.js';

describe('the egress table', () => {
  it('lets answers into the bridge and egress hosts out of it, minus the denied ranges; it masquerades them', () => {
    const script = egressTableScript('br0', ['10.0.0.0/8', '169.254.0.0/16'], ['10.9.0.5', '10.9.0.5']);
    expect(script).toContain('table inet berth_br0_egress {}\ndelete table inet berth_br0_egress\n');
    expect(script).toContain('elements = { 10.9.0.5 }\n');
    expect(script).toContain('elements = { 10.0.0.0/8, 169.254.0.0/16 }\n');
    expect(script).toContain('oifname "br0" iifname != "br0" ct state established,related accept\n    oifname "br0" iifname != "br0" reject');
    expect(script.indexOf('@egress_deny reject')).toBeLessThan(script.indexOf('@egress_hosts accept'));
    expect(script).toContain('iifname "br0" oifname != "br0" ip saddr @egress_hosts masquerade');
  });

  it('sends narrowed hosts through their ranges and resolved addresses only', () => {
    const script = egressTableScript('br0', [], ['10.9.0.5', '10.9.0.6'], [{ ip: '10.9.0.6', cidrs: ['203.0.113.0/24', '198.51.100.9/32'] }]);
    expect(script).toContain('set restricted {\n    type ipv4_addr;\n    elements = { 10.9.0.6 }\n');
    expect(script).toContain('elements = { 10.9.0.6 . 203.0.113.0/24, 10.9.0.6 . 198.51.100.9/32 }');
    expect(script.indexOf('@restricted jump narrowed')).toBeLessThan(script.indexOf('ip saddr @egress_hosts accept'));
    expect(script).toMatch(/chain narrowed \{\n {4}ct state established,related accept\n {4}ip saddr \. ip daddr @allowed accept\n {4}ip saddr \. ip daddr @resolved accept\n {4}reject/);
  });
});

const canRun = process.platform === 'linux' && process.getuid?.() === 0 && findTool('nft') !== undefined;
const root = mkdtempSync('/tmp/berth-egress-test-');
const PORT = 9600;
/** The machine's name server, as far as hosts are concerned: a test server on loopback. */
const DNS_PORT = 9602;
/** What the driver warned about (a narrowed host's refused names among it). */
const warnings: string[] = [];
const logger = { debug: () => undefined, info: () => undefined, warn: (_obj: Record<string, unknown>, msg: string) => void warnings.push(msg) };
const config: LocalDriverConfig = { ...sleeperDriverConfig(root, { bridge: 'berthegr0', subnet: '10.245.0.0/24', cgroupName: 'berthegr' }), nameServers: [`127.0.0.1:${DNS_PORT}`], logger };
const run = randomBytes(3).toString('hex');
const PUBLIC = '198.18.0.2';
const PRIVATE = '10.246.0.2';

const spec = (name: string, egress?: boolean, egressAllow?: string[]): HostSpec => testSpec(run, name, 'ws://10.245.0.1:7071/v1/agent', { ...(egress ? { egress } : {}), ...(egressAllow ? { egressAllow } : {}) });

/** What a host gets when it opens a connection (node in the host, the machine's root as image). */
async function dial(host: LaunchedHost, address: string, port = PORT): Promise<string> {
  const js = `const s=require('net').connect({host:${JSON.stringify(address)},port:${port}});s.setTimeout(3000,()=>{console.log('timeout');process.exit()});s.on('data',d=>{console.log('answer:'+d);process.exit()});s.on('error',e=>{console.log(e.code);process.exit()})`;
  return (await inHost(host, `node -e ${JSON.stringify(js)}`)).stdout.trim();
}

describe.skipIf(!canRun)('a host with egress reaches beyond the machine; others do not', () => {
  let driver: LocalDriver;
  let baseline: ReturnType<typeof countLocalLeftovers>;
  let upstream: Upstream | undefined;
  let names: TestDnsServer | undefined;
  let forwarding = '';

  beforeAll(async () => {
    forwarding = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    ({ driver, baseline } = await startTestDriver(config));
    // Its private address is in the default denied ranges; the route back lets it try to open connections to hosts.
    upstream = await startUpstream('198.18.0', PORT, { extra: [['10.246.0.1/24', `${PRIVATE}/24`]], routeBack: '10.245.0.0/24' });
    names = await startTestDnsServer({ 'upstream.test': PUBLIC }, '127.0.0.1', DNS_PORT);
  }, 60_000);

  afterAll(async () => {
    for (const host of await driver.list()) await driver.terminate(host.id, host.driverData);
    await upstream?.close();
    await names?.close();
    expect(countLocalLeftovers(config)).toEqual(baseline);
    expect(await driver.teardown()).toBe(true);
    expect((await runTool('nft', ['list', 'table', 'inet', 'berth_berthegr0_egress'])).code).not.toBe(0);
    writeFileSync('/proc/sys/net/ipv4/ip_forward', forwarding);
    rmSync(root, { recursive: true, force: true });
  });

  it('reaches the upstream under the machine\'s address; private ranges, other hosts and other hosts\' egress stay closed', async () => {
    const out = await driver.launch(spec('out', true));
    const plain = await driver.launch(spec('plain'));
    expect(await dial(out, PUBLIC)).toBe('answer:from 198.18.0.1');
    expect(await dial(out, PRIVATE)).toBe('EHOSTUNREACH');
    expect(await dial(plain, PUBLIC)).toBe('EHOSTUNREACH');
    // Egress is not a way around the bridge: another host outside its group stays out of reach.
    await inHost(plain, `nohup node -e "require('net').createServer(s=>s.end('plain')).listen(${PORT})" >/dev/null 2>&1 &`);
    await new Promise((r) => setTimeout(r, 300));
    // (Within the subnet a host asks ARP, which the machine answers only for group mates: no answer.)
    expect(['timeout', 'EHOSTUNREACH']).toContain(await dial(out, plain.ip));
    // Nothing from beyond the machine opens a connection to a host, egress or not (the upstream has a route to the bridge).
    await inHost(out, `nohup node -e "require('net').createServer(s=>s.end('out')).listen(${PORT})" >/dev/null 2>&1 &`);
    await new Promise((r) => setTimeout(r, 300));
    const inbound = await runTool('ip', ['netns', 'exec', upstream?.ns ?? '', process.execPath, '-e', `const s=require('net').connect(${PORT},${JSON.stringify(out.ip)});s.setTimeout(2000,()=>{console.log('timeout');process.exit()});s.on('data',d=>{console.log('answer:'+d);process.exit()});s.on('error',e=>{console.log(e.code);process.exit()})`]);
    expect(inbound.stdout.trim()).toBe('EHOSTUNREACH');
    await Promise.all([driver.terminate(out.id, out.driverData), driver.terminate(plain.id, plain.driverData)]);
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);

  it('resolves names beyond the machine for a host with egress only', async () => {
    const out = await driver.launch(spec('named', true));
    const plain = await driver.launch(spec('unnamed'));
    expect((await inHost(out, 'cat /etc/resolv.conf')).stdout).toContain('nameserver 10.245.0.1\n');
    expect((await inHost(out, 'getent hosts upstream.test')).stdout.trim().split(/\s+/)).toEqual([PUBLIC, 'upstream.test']);
    expect(await dial(out, 'upstream.test')).toBe('answer:from 198.18.0.1');
    expect((await inHost(out, 'getent hosts nowhere.test')).code).not.toBe(0);
    // A host without egress asks the gateway too (for its group mates' names), which relays nothing for it.
    expect((await inHost(plain, 'cat /etc/resolv.conf')).stdout).toContain('nameserver 10.245.0.1\n');
    expect((await inHost(plain, 'getent hosts upstream.test')).code).not.toBe(0);
    const asked = names?.asked.length ?? 0;
    const js = `const r=new (require('dns').promises.Resolver)({timeout:1000,tries:1});r.setServers(['10.245.0.1']);r.resolve4('upstream.test').then(a=>console.log('answer:'+a),e=>console.log(e.code))`;
    expect((await inHost(plain, `node -e ${JSON.stringify(js)}`)).stdout.trim()).toBe('EREFUSED');
    expect(names?.asked.length).toBe(asked);
    await Promise.all([driver.terminate(out.id, out.driverData), driver.terminate(plain.id, plain.driverData)]);
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);

  it('narrows egress to the names and ranges a host is allowed', async () => {
    const named = await driver.launch(spec('allow-name', true, ['upstream.test']));
    const ranged = await driver.launch(spec('allow-range', true, ['198.18.0.0/24']));
    const elsewhere = await driver.launch(spec('allow-other', true, ['203.0.113.0/24', '*.example.org']));
    // The named host reaches its name's address once it resolved it, not before.
    expect(await dial(named, PUBLIC)).toBe('EHOSTUNREACH');
    const asked = names?.asked.length ?? 0;
    expect((await inHost(named, 'getent hosts other.test')).code).not.toBe(0);
    expect(names?.asked.length).toBe(asked); // refused by the relay: the name server never saw it
    expect(warnings).toContainEqual(`host ${named.ip} asked for other.test, which its egress allow list does not name: refused`);
    expect(await dial(named, 'upstream.test')).toBe('answer:from 198.18.0.1');
    expect(await dial(named, PUBLIC)).toBe('answer:from 198.18.0.1');
    // What it resolved is its own: another narrowed host does not get it.
    expect(await dial(elsewhere, PUBLIC)).toBe('EHOSTUNREACH');
    expect((await inHost(elsewhere, 'getent hosts upstream.test')).code).not.toBe(0);
    // A range needs no name; names not listed stay unanswered.
    expect(await dial(ranged, PUBLIC)).toBe('answer:from 198.18.0.1');
    expect((await inHost(ranged, 'getent hosts upstream.test')).code).not.toBe(0);
    await Promise.all([named, ranged, elsewhere].map((h) => driver.terminate(h.id, h.driverData)));
    expect(countLocalLeftovers(config)).toEqual(baseline);
  }, 60_000);

  it('keeps egress across a restart of the driver, and takes it away on reset and terminate', async () => {
    const host = await driver.launch(spec('kept', true));
    const restarted = new LocalDriver(config);
    await restarted.init();
    expect(await dial(host, PUBLIC)).toBe('answer:from 198.18.0.1');
    const reset = await restarted.reset(spec('kept'), host.driverData);
    expect(await dial(reset, PUBLIC)).toBe('EHOSTUNREACH');
    const again = await restarted.reset(spec('kept', true), reset.driverData);
    expect(await dial(again, PUBLIC)).toBe('answer:from 198.18.0.1');
    await restarted.terminate(again.id, again.driverData);
    expect(countLocalLeftovers(config).egressGrants).toBe(baseline.egressGrants);
  }, 60_000);
});
