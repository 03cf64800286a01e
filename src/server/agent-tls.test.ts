/**
 * The agent channel over TLS, with certificates made by openssl: what agents are told to trust
 * (the CA file, or a self-signed certificate itself), every certificate they would refuse refused
 * before the server starts, and the channel itself — an agent with that trust connects over wss://
 * and enrols over https://, one without it is refused and says why, and a renewal the agents would
 * not accept is not served.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { makeCa, makeCertificate } from '../../test/helpers/certs.js';
import { rejection } from '../../test/helpers/errors.js';
import { waitFor } from '../../test/helpers/wait.js';
import { AgentGateway, type GatewayHandlers } from '../agents/gateway.js';
import { AgentConnection } from '../agent/connection.js';
import { enrol } from '../agent/enrol.js';
import { AGENT_ENROL_PATH, AGENT_PATH, PROTOCOL_VERSION } from '../protocol/messages.js';
import { agentTlsUse, loadAgentTls } from './agent-tls.js';

const ADDRESS = '127.0.0.1';

describe('the agent channel over TLS', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-agent-tls-'));
  const ca = makeCa(dir, 'fleet');
  const issued = makeCertificate(dir, 'issued', [ADDRESS, 'control.berth.test'], ca);
  const self = makeCertificate(dir, 'self', [ADDRESS]);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('tells agents to trust the CA file, or a self-signed certificate itself', async () => {
    const withCa = await loadAgentTls({ ...issued, caFile: ca.certFile }, ADDRESS);
    expect(withCa.ca).toBe(ca.cert.toString().trim() + '\n');
    expect(withCa.pair.names).toContain('IP Address:127.0.0.1');
    const selfSigned = await loadAgentTls(self, ADDRESS);
    expect(selfSigned.ca?.trim()).toBe(self.cert.toString().trim());
    // A name agents dial is checked as a name; an address that is every address is not checked.
    expect((await loadAgentTls({ ...issued, caFile: ca.certFile }, 'control.berth.test')).ca).toBeDefined();
    expect(agentTlsUse('0.0.0.0').covers).toBeUndefined();
  });

  it('refuses, before anything starts, a certificate agents would not accept, saying what to give', async () => {
    const notCovered = await rejection(loadAgentTls(self, '10.99.0.1'));
    expect(notCovered.code).toBe('validation_failed');
    expect(notCovered.message).toContain('does not cover 10.99.0.1, the address agents dial');
    expect(notCovered.hint).toContain('an IP address SAN');
    // Issued by a private CA, with no CA file: agents would check it against the public roots.
    const noCa = await rejection(loadAgentTls(issued, ADDRESS));
    expect(noCa.message).toMatch(/agents would not accept the agent channel's certificate .*: unable to (verify the first certificate|get local issuer certificate)/);
    expect(noCa.hint).toContain('--agent-tls-ca');
    // The CA file names another CA.
    const other = makeCa(dir, 'other');
    expect((await rejection(loadAgentTls({ ...issued, caFile: other.certFile }, ADDRESS))).message).toMatch(/unable to (verify the first certificate|get local issuer certificate)/);
    writeFileSync(join(dir, 'not-pem'), 'hello\n');
    expect((await rejection(loadAgentTls({ ...issued, caFile: join(dir, 'not-pem') }, ADDRESS))).message).toContain('holds no PEM certificate');
    expect((await rejection(loadAgentTls({ ...issued, caFile: join(dir, 'missing.pem') }, ADDRESS))).message).toContain('cannot be read');
  });

  it('connects an agent that trusts the CA over wss://, enrols over https://, and refuses one that does not', async () => {
    const tls = await loadAgentTls({ ...issued, caFile: ca.certFile }, ADDRESS);
    const hellos: string[] = [];
    const handlers: GatewayHandlers = { authenticate: (_hostId, token) => Promise.resolve(token === 'secret' ? { tenantId: 'default' } : undefined), onHello: (hostId) => hellos.push(hostId), onMessage: () => {}, onDisconnect: () => {} };
    const enrolled = { hostId: 'h-9', token: 'secret', serverUrl: 'wss://127.0.0.1/v1/agent' };
    const gateway = new AgentGateway({ host: ADDRESS, port: 0, tls: tls.pair, enrol: () => Promise.resolve(enrolled) }, handlers);
    const { port } = await gateway.listen();
    const serverUrl = `wss://${ADDRESS}:${port}${AGENT_PATH}`;
    const agent = (hostId: string, trust: string | undefined, log: (line: string) => void) =>
      new AgentConnection({ serverUrl, ca: trust, hostId, token: 'secret', log, onMessage: () => {}, hello: () => ({ type: 'hello', protocol: PROTOCOL_VERSION, hostId, agentVersion: 'test', bootId: hostId, pid: 1, invocations: [] }) });
    const trusting = agent('h-1', tls.ca, () => {});
    const refusedLog: string[] = [];
    const untrusting = agent('h-2', undefined, (line) => refusedLog.push(line));
    try {
      trusting.start();
      untrusting.start();
      await waitFor('the trusting agent to say hello', () => Promise.resolve(hellos.includes('h-1') ? true : undefined));
      await waitFor('the other to give up a few times', () => Promise.resolve(refusedLog.length > 0 ? true : undefined));
      await new Promise((r) => setTimeout(r, 200)); // more attempts: still one line
      expect(hellos).toEqual(['h-1']);
      expect(refusedLog).toEqual([expect.stringMatching(/^the server's certificate is refused: unable to (verify the first certificate|get local issuer certificate)$/)]);

      const identity = await enrol({ enrolUrl: `https://${ADDRESS}:${port}${AGENT_ENROL_PATH}`, tenantId: 'default', pool: 'p', token: 't', machineId: 'i-1', ...(tls.ca ? { ca: tls.ca } : {}) }, { identityPath: join(dir, 'agent.json'), log: () => {} });
      expect(identity).toEqual(enrolled);
      // Without the CA, the pool's secret is never sent: the attempt fails at the handshake.
      const logs: string[] = [];
      const abort = new AbortController();
      const noTrust = enrol({ enrolUrl: `https://${ADDRESS}:${port}${AGENT_ENROL_PATH}`, tenantId: 'default', pool: 'p', token: 't', machineId: 'i-2' }, { identityPath: join(dir, 'agent2.json'), log: (l) => logs.push(l), signal: abort.signal, retryMs: 20 });
      await waitFor('the enrolment to fail its handshake', () => Promise.resolve(logs.length > 0 ? true : undefined));
      abort.abort();
      await expect(noTrust).rejects.toThrow();
      expect(logs[0]).toMatch(/unable to (verify the first certificate|get local issuer certificate)/);
    } finally {
      trusting.stop();
      untrusting.stop();
      await gateway.close();
    }
  });

  it('serves a renewal the agents accept, rolls the CA over through the agents, and refuses what would strand them', async () => {
    const live = { certFile: join(dir, 'live.crt'), keyFile: join(dir, 'live.key'), caFile: join(dir, 'live-ca.pem') };
    const install = (c: { cert: Buffer; key: Buffer }) => {
      writeFileSync(live.keyFile, c.key);
      writeFileSync(live.certFile, c.cert);
    };
    install(issued);
    writeFileSync(live.caFile, ca.cert);
    const tls = await loadAgentTls(live, ADDRESS);
    const hellos: string[] = [];
    const gateway = new AgentGateway({ host: ADDRESS, port: 0, tls: tls.pair, trust: () => tls.ca }, { authenticate: () => Promise.resolve({ tenantId: 'default' }), onHello: (id) => hellos.push(id), onMessage: () => {}, onDisconnect: () => {} });
    const { port } = await gateway.listen();
    const logs: string[] = [];
    const watched = tls.watch(ADDRESS, gateway, (line) => logs.push(line), 50);
    const served = (trust: Buffer | string) =>
      new Promise<PeerCertificate>((resolve, reject) => {
        const socket = connect({ host: ADDRESS, port, ca: trust, checkServerIdentity: () => undefined }, () => {
          resolve(socket.getPeerCertificate());
          socket.destroy();
        });
        socket.on('error', reject);
      });
    const told: string[] = [];
    const agent = new AgentConnection({ serverUrl: `wss://${ADDRESS}:${port}${AGENT_PATH}`, ca: tls.ca, hostId: 'h-1', token: 't', log: () => {}, onTrust: (bundle) => told.push(bundle), onMessage: () => {}, hello: () => ({ type: 'hello', protocol: PROTOCOL_VERSION, hostId: 'h-1', agentVersion: 'test', bootId: 'b', pid: 1, invocations: [] }) });
    try {
      watched.start();
      agent.start();
      await waitFor('the agent connected', () => Promise.resolve(hellos.length > 0 ? true : undefined));
      // A renewal from the same CA is served; one the agents would refuse (self-signed) is not.
      install(makeCertificate(dir, 'renewed', [ADDRESS], ca));
      await waitFor('the renewal to be served', async () => ((await served(ca.cert)).fingerprint256 !== tls.pair.fingerprint ? true : undefined));
      const renewed = watched.pair.fingerprint;
      install(self);
      await waitFor('the refusal to be logged', () => Promise.resolve(logs.some((l) => l.includes('the previous certificate keeps serving')) ? true : undefined));
      expect(logs.at(-1)).toContain('self-signed certificate');
      expect((await served(ca.cert)).fingerprint256).toBe(renewed);
      expect(told).toEqual([]); // the welcome's trust was what the agent had

      // The roll-over: the next CA beside the old, told to the connected agent; then a certificate of the next is served.
      const next = makeCa(dir, 'next');
      const both = `${ca.cert.toString().trim()}\n${next.cert.toString().trim()}\n`;
      writeFileSync(live.caFile, both);
      await waitFor('the agent told the bundle', () => Promise.resolve(told.length > 0 ? true : undefined));
      expect(told).toEqual([both]);
      expect(tls.ca).toBe(both);
      install(makeCertificate(dir, 'of-next', [ADDRESS], next));
      await waitFor('the next CA\'s certificate served', () => served(next.cert).then((c) => (c.issuer.CN === 'next test CA' ? true : undefined), () => undefined));
      // A CA file without the CA of the certificate served now would strand every agent: not taken.
      writeFileSync(live.caFile, ca.cert);
      await waitFor('the refusal to be logged', () => Promise.resolve(logs.some((l) => l.includes('does not trust the certificate served now')) ? true : undefined));
      expect(tls.ca).toBe(both);
      // Dropping the old CA is.
      writeFileSync(live.caFile, next.cert);
      await waitFor('the agent told the next CA alone', () => Promise.resolve(told.length === 2 ? true : undefined));
      expect(told[1]?.trim()).toBe(next.cert.toString().trim());
    } finally {
      agent.stop();
      watched.stop();
      await gateway.close();
    }
  });
});
