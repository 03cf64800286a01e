/**
 * The DNS relay for hosts with egress (dns-forwarder.ts), on loopback with real sockets: a test name
 * server upstream, queries sent as a stub resolver sends them.
 */
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildQuery, startTestDnsServer, type TestDnsServer } from '../../../test/helpers/dns-server.js';
import { freePort } from '../../../test/helpers/ports.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { answerAddresses, DnsForwarder, errorAnswer, nameServersOf, parseNameServer, questionName, wildcardDnsListeners, type ClientPolicy } from './dns-forwarder.js';

describe('name servers', () => {
  it('reads the nameserver lines of a resolv.conf', () => {
    const text = '# generated\nnameserver 10.255.255.53\nsearch example.internal\nnameserver ::1\nnameserver fe80::1%eth0\n  nameserver 127.0.0.53\n';
    expect(nameServersOf(text)).toEqual([
      { address: '10.255.255.53', port: 53 },
      { address: '::1', port: 53 },
      { address: '127.0.0.53', port: 53 },
    ]);
  });

  it('parses an address with or without a port, and refuses anything else', () => {
    expect(parseNameServer('192.0.2.53')).toEqual({ address: '192.0.2.53', port: 53 });
    expect(parseNameServer('192.0.2.53:5353')).toEqual({ address: '192.0.2.53', port: 5353 });
    expect(parseNameServer('[2001:db8::53]:54')).toEqual({ address: '2001:db8::53', port: 54 });
    expect(parseNameServer('2001:db8::53')).toEqual({ address: '2001:db8::53', port: 53 });
    for (const bad of ['dns.example', '192.0.2.53:0', '192.0.2.53:70000', '']) expect(() => parseNameServer(bad)).toThrow(/not a name server address/);
  });

  it('finds DNS servers bound to port 53 of every address, which would keep the relay from listening', () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-procnet-'));
    const head = '  sl  local_address rem_address   st\n';
    try {
      // UDP: one on every address (counts), one on loopback only (does not).
      writeFileSync(join(dir, 'udp'), `${head}   0: 00000000:0035 00000000:0000 07\n   1: 0100007F:0035 00000000:0000 07\n`);
      // TCP: a connection from port 53 (not listening) does not count.
      writeFileSync(join(dir, 'tcp'), `${head}   0: 00000000:0035 0100007F:9C40 01\n`);
      writeFileSync(join(dir, 'tcp6'), `${head}   0: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 0A\n`);
      expect(wildcardDnsListeners(dir)).toEqual(['udp 0.0.0.0:53', 'tcp6 [::]:53']);
      writeFileSync(join(dir, 'udp'), head);
      expect(wildcardDnsListeners(dir)).toEqual(['tcp6 [::]:53']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers an error with the query\'s id and question, or the header alone when the question is unreadable', () => {
    const query = buildQuery(0xbeef, 'a.example');
    const answer = errorAnswer(query, 5);
    expect(answer?.readUInt16BE(0)).toBe(0xbeef);
    expect((answer?.[2] ?? 0) & 0x81).toBe(0x81); // QR, RD echoed
    expect((answer?.[3] ?? 0) & 0x0f).toBe(5);
    expect(answer?.subarray(12)).toEqual(query.subarray(12));
    expect(errorAnswer(Buffer.concat([query.subarray(0, 12), Buffer.from([70, 1])]), 2)?.length).toBe(12);
    expect(errorAnswer(Buffer.alloc(5), 2)).toBeUndefined();
  });
});

function ask(port: number, query: Buffer, timeoutMs = 3000): Promise<Buffer | 'timeout'> {
  const socket = dgram.createSocket('udp4');
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.close();
      resolve('timeout');
    }, timeoutMs);
    socket.on('message', (msg) => {
      clearTimeout(timer);
      socket.close();
      resolve(msg);
    });
    socket.send(query, port, '127.0.0.1');
  });
}

const rcode = (msg: Buffer | 'timeout') => (msg === 'timeout' ? 'timeout' : (msg[3] ?? 0) & 0x0f);

describe('the DNS forwarder', () => {
  let upstream: TestDnsServer;
  let silent: TestDnsServer;
  let forwarder: DnsForwarder | undefined;
  let allowed = true;
  let narrowed: ClientPolicy | undefined;

  beforeAll(async () => {
    upstream = await startTestDnsServer({ 'upstream.test': '198.18.0.2' });
    silent = await startTestDnsServer({ 'upstream.test': '198.18.9.9' });
    silent.silent = true;
  });

  afterEach(async () => {
    await forwarder?.close();
    forwarder = undefined;
    allowed = true;
    narrowed = undefined;
  });

  afterAll(async () => {
    await upstream.close();
    await silent.close();
  });

  async function start(servers: TestDnsServer[], timeoutMs = 2000): Promise<number> {
    const port = await freePort();
    forwarder = new DnsForwarder({ address: '127.0.0.1', port, upstreams: servers.map((s) => ({ address: '127.0.0.1', port: s.port })), policy: () => (allowed ? (narrowed ?? { forward: true }) : undefined), timeoutMs });
    await forwarder.start();
    return port;
  }

  it('relays a host\'s query and the answer, as a stub resolver sees it', async () => {
    const port = await start([upstream]);
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([`127.0.0.1:${port}`]);
    expect(await resolver.resolve4('upstream.test')).toEqual(['198.18.0.2']);
    await expect(resolver.resolve4('nowhere.test')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    // Counted as the server's /metrics shows them (an NXDOMAIN is a name server's answer too).
    expect(forwarder?.counts).toEqual({ local: 0, relayed: 2, refused: 0, failed: 0, tcpConnections: 0 });
  });

  it('refuses a host without egress, and asks nobody', async () => {
    const port = await start([upstream]);
    allowed = false;
    const before = upstream.asked.length;
    const answer = await ask(port, buildQuery(7, 'upstream.test'));
    expect(rcode(answer)).toBe(5);
    expect(upstream.asked.length).toBe(before);
    expect(forwarder?.counts).toMatchObject({ refused: 1, relayed: 0 });
  });

  it('asks the next server when one is silent, and answers SERVFAIL when none answers', async () => {
    const port = await start([silent, upstream], 300);
    const answer = await ask(port, buildQuery(8, 'upstream.test'));
    expect(rcode(answer)).toBe(0);
    expect(answer !== 'timeout' && answer.subarray(-4).join('.')).toBe('198.18.0.2');
    await forwarder?.close();
    const lonely = await start([silent], 300);
    const started = performance.now();
    expect(rcode(await ask(lonely, buildQuery(9, 'upstream.test')))).toBe(2);
    expect(performance.now() - started).toBeLessThan(2000);
    expect(forwarder?.counts).toMatchObject({ failed: 1, relayed: 0 });
  });

  it('ignores what is not a query (an answer sent to it)', async () => {
    const port = await start([upstream]);
    const notQuery = buildQuery(10, 'upstream.test');
    notQuery[2] = 0x81;
    expect(await ask(port, notQuery, 500)).toBe('timeout');
  });

  it('pipes a TCP connection to the name server, and closes one from a host without egress', async () => {
    const port = await start([upstream]);
    const query = buildQuery(11, 'upstream.test');
    const framed = Buffer.concat([Buffer.from([0, query.length]), query]);
    const viaTcp = (): Promise<Buffer> =>
      new Promise((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.write(framed));
        let got = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          got = Buffer.concat([got, chunk]);
          if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
            socket.end();
            resolve(got.subarray(2));
          }
        });
        socket.on('error', reject);
        socket.on('close', () => resolve(got));
      });
    const answer = await viaTcp();
    expect(answer.readUInt16BE(0)).toBe(11);
    expect(answer.subarray(-4).join('.')).toBe('198.18.0.2');
    expect(upstream.asked.at(-1)).toEqual({ name: 'upstream.test', type: 1, via: 'tcp' });
    allowed = false;
    expect((await viaTcp()).length).toBe(0);
    expect(forwarder?.counts.tcpConnections).toBe(1);
  });

  it('answers a narrowed host for its names only, after learning their addresses; never over TCP', async () => {
    const port = await start([upstream]);
    const learnt: [string[], number][] = [];
    const refused: string[] = [];
    narrowed = {
      forward: true,
      mayAsk: (name) => name === 'upstream.test',
      refused: (name) => refused.push(name),
      learn: async (addresses, ttl) => {
        await new Promise((r) => setTimeout(r, 50));
        learnt.push([addresses, ttl]);
      },
    };
    const before = upstream.asked.length;
    expect(rcode(await ask(port, buildQuery(12, 'other.test')))).toBe(5);
    expect(upstream.asked.length).toBe(before);
    expect(refused).toEqual(['other.test']);
    const answer = await ask(port, buildQuery(13, 'upstream.test'));
    // The answer came only after the (slow) learning ended.
    expect(rcode(answer)).toBe(0);
    expect(learnt).toEqual([[['198.18.0.2'], 60]]);
    // A failure to open the addresses is the host's failure to resolve.
    narrowed = { forward: true, mayAsk: () => true, learn: () => Promise.reject(new Error('nft refused')) };
    expect(rcode(await ask(port, buildQuery(14, 'upstream.test')))).toBe(2);
    const overTcp = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.on('data', () => resolve('data'));
      socket.on('close', () => resolve('closed'));
      socket.on('error', () => resolve('closed'));
    });
    expect(overTcp).toBe('closed');
  });

  it('answers group mates\' names itself, to any host, and relays nothing else for a host without egress', async () => {
    const port = await start([upstream]);
    narrowed = { local: (name) => (name.toLowerCase() === 'api' ? ['10.9.0.3', '10.9.0.4'] : undefined) };
    const before = upstream.asked.length;
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([`127.0.0.1:${port}`]);
    expect((await resolver.resolve4('API')).sort()).toEqual(['10.9.0.3', '10.9.0.4']);
    expect(await resolver.resolve6('api').catch((err: NodeJS.ErrnoException) => err.code)).toBe('ENODATA');
    expect(rcode(await ask(port, buildQuery(16, 'upstream.test')))).toBe(5);
    expect(upstream.asked.length).toBe(before);
  });

  it('reads the name of a query and the addresses of an answer', async () => {
    expect(questionName(buildQuery(1, 'A.Example.org'))).toBe('A.Example.org');
    expect(questionName(Buffer.alloc(12))).toBeUndefined();
    const port = await start([upstream]);
    const answer = await ask(port, buildQuery(15, 'upstream.test'));
    expect(answer !== 'timeout' && answerAddresses(answer)).toEqual({ addresses: ['198.18.0.2'], ttlSeconds: 60 });
  });

  it('says why it cannot listen', async () => {
    const port = await start([upstream]);
    const second = new DnsForwarder({ address: '127.0.0.1', port, upstreams: [{ address: '127.0.0.1', port: upstream.port }], policy: () => ({}) });
    await expect(second.start()).rejects.toThrow(/cannot answer DNS at 127\.0\.0\.1:\d+/);
  });
});
