/**
 * A small authoritative DNS server for tests, on loopback: A records from a map (NXDOMAIN for other
 * names, an empty answer for other types), over UDP and TCP on one port. It counts what it was asked,
 * and can be told to stay silent (an upstream that does not answer).
 */
import dgram from 'node:dgram';
import { createServer, type AddressInfo, type Server } from 'node:net';

export interface TestDnsServer {
  port: number;
  /** Names asked, in order, with their type (1 = A, 28 = AAAA) and transport. */
  asked: { name: string; type: number; via: 'udp' | 'tcp' }[];
  silent: boolean;
  close(): Promise<void>;
}

/** Reads the one question of a query: name, type and where the question ends. */
export function readQuestion(msg: Buffer): { name: string; type: number; end: number } | undefined {
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const length = msg[at];
    if (length === undefined || length > 63) return undefined;
    if (length === 0) break;
    labels.push(msg.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += length + 1;
  }
  if (at + 5 > msg.length) return undefined;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(at + 1), end: at + 5 };
}

/** A query for `name` (RD set), as a stub resolver sends it. */
export function buildQuery(id: number, name: string, type = 1): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header[2] = 0x01;
  header.writeUInt16BE(1, 4);
  const labels = name.split('.').filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3);
  return Buffer.concat([header, ...labels, tail]);
}

function answerFor(query: Buffer, records: Record<string, string>): Buffer | undefined {
  const question = readQuestion(query);
  if (!question || query.length < 12) return undefined;
  const address = records[question.name];
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  header[2] = 0x84 | ((query[2] ?? 0) & 0x01); // QR, AA, RD echoed
  header[3] = 0x80 | (address === undefined ? 3 : 0); // RA; NXDOMAIN for unknown names
  header.writeUInt16BE(1, 4);
  const parts = [header, query.subarray(12, question.end)];
  if (address !== undefined && question.type === 1) {
    header.writeUInt16BE(1, 6);
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    rr.writeUInt16BE(1, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(60, 6);
    rr.writeUInt16BE(4, 10);
    address.split('.').forEach((octet, i) => (rr[12 + i] = Number(octet)));
    parts.push(rr);
  }
  return Buffer.concat(parts);
}

/** `fixedPort` 0: a port free for UDP, then tried for TCP; another is tried when TCP has it taken. */
export async function startTestDnsServer(records: Record<string, string>, host = '127.0.0.1', fixedPort = 0): Promise<TestDnsServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(records, host, fixedPort);
    } catch (err) {
      if (fixedPort !== 0 || attempt >= 10 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
}

async function startOnce(records: Record<string, string>, host: string, fixedPort: number): Promise<TestDnsServer> {
  const udp = dgram.createSocket('udp4');
  const state: TestDnsServer = { port: 0, asked: [], silent: false, close: () => Promise.resolve() };
  const note = (msg: Buffer, via: 'udp' | 'tcp') => {
    const q = readQuestion(msg);
    if (q) state.asked.push({ name: q.name, type: q.type, via });
  };
  udp.on('message', (msg, from) => {
    note(msg, 'udp');
    const answer = state.silent ? undefined : answerFor(msg, records);
    if (answer) udp.send(answer, from.port, from.address);
  });
  await new Promise<void>((resolve) => udp.bind(fixedPort, host, () => resolve()));
  const port = udp.address().port;
  const tcp: Server = createServer((socket) => {
    let buffered = Buffer.alloc(0);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const msg = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        buffered = buffered.subarray(2 + msg.length);
        note(msg, 'tcp');
        const answer = state.silent ? undefined : answerFor(msg, records);
        if (!answer) continue;
        const length = Buffer.alloc(2);
        length.writeUInt16BE(answer.length);
        socket.write(Buffer.concat([length, answer]));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', (err) => {
      udp.close();
      reject(err);
    });
    tcp.listen(port, host, () => resolve());
  });
  state.port = (tcp.address() as AddressInfo).port;
  state.close = async () => {
    udp.close();
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  };
  return state;
}
