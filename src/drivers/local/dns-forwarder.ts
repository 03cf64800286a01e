/**
 * Name service for hosts: the driver answers DNS at the bridge's gateway, port 53, as a container
 * runtime's embedded DNS does, and every host gets `nameserver <gateway>` in its /etc/resolv.conf (a
 * boot file, never part of an image). Its group mates' names it answers itself (group-names.ts).
 * Other names it relays, UDP and TCP, to the machine's name servers from the machine's own network:
 * a host's own packets to them would not get there, since the machine's resolver is often on
 * loopback (systemd-resolved's 127.0.0.53), which a host does not share, or on a private or
 * link-local address (a VPC's resolver, 169.254.169.253), which egress keeps closed (egress.ts).
 *
 * Every host may ask for its group mates' names (group-names.ts), answered here from memory. Only
 * hosts with egress have other names relayed (the caller says who): a host without egress could
 * otherwise carry data out of the machine in the names it asks for. Everyone else gets REFUSED. A host whose egress is narrowed to
 * some names (core/egress-allow.ts) is answered for those names only, and the addresses of each
 * answer are opened to it (ClientPolicy.learn) before it gets the answer, so its next connection
 * finds them open; it resolves over UDP only (over TCP the answers would pass unread). The relay does not cache or rewrite:
 * each UDP query goes out from a socket of its own (a fresh source port), and only an answer from
 * the server asked, with the query's id, comes back. A server silent for `timeoutMs` hands the
 * query to the next; when none answers the host gets SERVFAIL at once instead of waiting out its
 * own retries. TCP connections (answers too large for UDP) are piped to the first server that accepts.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { AUTHORITATIVE_ANSWER, decode, encode, RECURSION_AVAILABLE, RECURSION_DESIRED, type Answer, type StringAnswer } from 'dns-packet';
import { isIP, createConnection, createServer, type Server, type Socket } from 'node:net';
import { BerthError } from '../../core/errors.js';

export interface NameServer {
  address: string;
  port: number;
}

export const DNS_PORT = 53;

/** `1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`. */
export function parseNameServer(text: string): NameServer {
  const value = text.trim();
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  const v4 = /^([\d.]+)(?::(\d+))?$/.exec(value);
  const [address, port] = bracketed ? [bracketed[1] ?? '', bracketed[2]] : v4 ? [v4[1] ?? '', v4[2]] : [value, undefined];
  const portNumber = port === undefined ? DNS_PORT : Number(port);
  if (isIP(address) === 0 || address.includes('%') || !Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) {
    throw new BerthError('validation_failed', `${JSON.stringify(text)} is not a name server address`, 'Give an IP address, optionally with a port: 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53.');
  }
  return { address, port: portNumber };
}

/** The `nameserver` lines of a resolv.conf (link-local IPv6 ones with a zone are skipped: they cannot be dialled without it). */
export function nameServersOf(resolvConf: string): NameServer[] {
  const servers: NameServer[] = [];
  for (const line of resolvConf.split('\n')) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    if (match?.[1] && !match[1].includes('%') && isIP(match[1]) !== 0) servers.push({ address: match[1], port: DNS_PORT });
  }
  return servers;
}

/** This machine's name servers, as LocalDriverConfig.nameServers takes them; none when resolv.conf cannot be read. */
export function machineNameServers(resolvConfPath = '/etc/resolv.conf'): string[] {
  let text: string;
  try {
    text = readFileSync(resolvConfPath, 'utf8');
  } catch {
    return [];
  }
  return nameServersOf(text).map((s) => (isIP(s.address) === 6 ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`));
}

/**
 * Sockets bound to port 53 on every address (another DNS server, e.g. dnsmasq without bind-interfaces):
 * they keep the relay from listening on the bridge address. From /proc/net/{udp,tcp}{,6}: `proto addr`.
 */
export function wildcardDnsListeners(procNet = '/proc/net'): string[] {
  const found: string[] = [];
  for (const [file, wildcard] of [['udp', '00000000'], ['tcp', '00000000'], ['udp6', '00000000000000000000000000000000'], ['tcp6', '00000000000000000000000000000000']] as const) {
    let text: string;
    try {
      text = readFileSync(`${procNet}/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      // TCP sockets count when listening (0A); UDP ones are bound (07).
      if (local === `${wildcard}:0035` && (file.startsWith('udp') || state === '0A')) found.push(`${file} ${file.endsWith('6') ? '[::]' : '0.0.0.0'}:53`);
    }
  }
  return [...new Set(found)];
}

const RCODE_SERVFAIL = 2;
const RCODE_REFUSED = 5;
const HEADER = 12;

/** An answer with no records and `rcode`, echoing the query's id, opcode, RD flag and question. */
export function errorAnswer(query: Buffer, rcode: number): Buffer | undefined {
  if (query.length < HEADER) return undefined;
  const question = readQuestion(query);
  const header = Buffer.alloc(HEADER);
  query.copy(header, 0, 0, 2);
  header[2] = 0x80 | ((query[2] ?? 0) & 0x79);
  header[3] = 0x80 | rcode;
  if (!question) return header;
  header.writeUInt16BE(1, 4);
  return Buffer.concat([header, query.subarray(HEADER, question.end)]);
}

/**
 * A query's one question: its name, and where it ends (labels up to the root label, then type and
 * class, 4 bytes). No compression in a query. Undefined when there is not exactly one, readable.
 */
function readQuestion(query: Buffer): { name: string; end: number } | undefined {
  if (query.length < HEADER || query.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let at = HEADER;
  for (;;) {
    const length = query[at];
    if (length === undefined || length > 63) return undefined;
    if (length === 0) break;
    labels.push(query.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += length + 1;
  }
  return at + 5 > query.length ? undefined : { name: labels.join('.'), end: at + 5 };
}

function isQuery(msg: Buffer): boolean {
  return msg.length >= HEADER && ((msg[2] ?? 0) & 0x80) === 0;
}

/** How one host is answered. */
export interface ClientPolicy {
  /** Addresses the host finds `name` at without asking anyone (its group mates, group-names.ts); undefined: not a local name. */
  local?(name: string): string[] | undefined;
  /** Whether names that are not local are asked of the name servers (a host with egress); otherwise they are refused. */
  forward?: boolean;
  /** Whether the host may ask for `name` (as asked: any case, no trailing dot). Absent: any name. */
  mayAsk?(name: string): boolean;
  /** Told each name the host was refused (mayAsk said no): a narrowed host reaching for more is worth a look. */
  refused?(name: string): void;
  /** Called with each answer's IPv4 addresses and shortest TTL before the host gets it; a failure answers SERVFAIL. */
  learn?(addresses: string[], ttlSeconds: number): Promise<void>;
}

/** The name a query asks for (its one question), or undefined when it has none readable. */
export function questionName(query: Buffer): string | undefined {
  return readQuestion(query)?.name;
}

/** The IPv4 addresses of an answer's A records, and the shortest TTL among them. */
export function answerAddresses(answer: Buffer): { addresses: string[]; ttlSeconds: number } {
  const packet = decode(answer);
  const records = (packet.answers ?? []).filter((a: Answer): a is StringAnswer => a.type === 'A');
  const addresses = records.map((a) => a.data);
  return { addresses: [...new Set(addresses)], ttlSeconds: Math.min(...records.map((a) => a.ttl ?? 0)) };
}

/** How long a host may keep a local answer: a group changes when a claim or a release does. */
const LOCAL_TTL_S = 5;

/** The answer to a query for a local name: `addresses` as A records (none for another type). */
export function localAnswer(query: Buffer, addresses: readonly string[]): Buffer | undefined {
  let asked;
  try {
    asked = decode(query);
  } catch {
    return undefined;
  }
  const question = asked.questions?.[0];
  if (!question) return undefined;
  const answers = question.type === 'A' ? addresses.map((data) => ({ type: 'A' as const, class: 'IN' as const, name: question.name, ttl: LOCAL_TTL_S, data })) : [];
  return encode({ type: 'response', id: asked.id ?? 0, flags: AUTHORITATIVE_ANSWER | RECURSION_AVAILABLE | ((asked.flags ?? 0) & RECURSION_DESIRED), questions: [question], answers });
}

export interface DnsForwarderOptions {
  /** The address hosts send their queries to: the bridge's gateway. */
  address: string;
  /** Default 53; tests use another. */
  port?: number;
  upstreams: readonly NameServer[];
  /** How the host at this address is answered; undefined: it is refused (not a host of the bridge). */
  policy: (ip: string) => ClientPolicy | undefined;
  /** How long one upstream may take before the next is asked. Default 2000 ms. */
  timeoutMs?: number;
  /** Queries relayed at once; beyond it a host gets SERVFAIL. Default 512. */
  maxInFlight?: number;
  /** TCP connections at once. Default 64. */
  maxConnections?: number;
}

/** What the relay answered since it started, by how (NameServiceCounts in drivers/types.ts). */
export interface DnsCounts {
  /** A group mate's name, answered at the gateway. */
  local: number;
  /** Relayed to a name server, and its answer given. */
  relayed: number;
  /** Refused: not a host of the bridge, no egress, or a name its allow list does not name. */
  refused: number;
  /** SERVFAIL: no name server answered, too many queries at once, or the address could not be opened. */
  failed: number;
  /** TCP connections piped to a name server (large answers). */
  tcpConnections: number;
}

export class DnsForwarder {
  /** Since start; read by the driver's nameServiceCounts. */
  readonly counts: DnsCounts = { local: 0, relayed: 0, refused: 0, failed: 0, tcpConnections: 0 };
  private udp: dgram.Socket | undefined;
  private tcp: Server | undefined;
  private inFlight = 0;
  private readonly upstreamSockets = new Set<dgram.Socket>();
  private readonly connections = new Set<Socket>();

  constructor(private readonly opts: DnsForwarderOptions) {}

  /** Listens on UDP and TCP; on failure neither listens and the error says why. */
  async start(): Promise<void> {
    const port = this.opts.port ?? DNS_PORT;
    const udp = dgram.createSocket({ type: isIP(this.opts.address) === 6 ? 'udp6' : 'udp4' });
    const tcp = createServer((socket) => this.onConnection(socket));
    tcp.maxConnections = this.opts.maxConnections ?? 64;
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind({ address: this.opts.address, port, exclusive: true }, () => resolve());
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: this.opts.address, port }, () => resolve());
      });
    } catch (err) {
      udp.close();
      tcp.close();
      throw new BerthError('driver_unavailable', `cannot answer DNS at ${this.opts.address}:${port}: ${(err as Error).message}`, 'Stop what listens on that address and port (another DNS server bound to all addresses?) and restart berth server, or run it with --dns none.');
    }
    udp.on('error', () => undefined);
    udp.on('message', (msg, from) => this.onQuery(msg, from));
    tcp.on('error', () => undefined);
    this.udp = udp;
    this.tcp = tcp;
  }

  async close(): Promise<void> {
    const { udp, tcp } = this;
    this.udp = undefined;
    this.tcp = undefined;
    for (const socket of this.upstreamSockets) socket.close();
    this.upstreamSockets.clear();
    for (const connection of this.connections) connection.destroy();
    udp?.close();
    if (tcp) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  private answer(msg: Buffer, to: dgram.RemoteInfo): void {
    this.udp?.send(msg, to.port, to.address);
  }

  private onQuery(msg: Buffer, from: dgram.RemoteInfo): void {
    if (!isQuery(msg)) return;
    const refusal = (rcode: number) => {
      if (rcode === RCODE_REFUSED) this.counts.refused++;
      else this.counts.failed++;
      const answer = errorAnswer(msg, rcode);
      if (answer) this.answer(answer, from);
    };
    const policy = this.opts.policy(from.address);
    if (!policy) return refusal(RCODE_REFUSED);
    const name = questionName(msg);
    const local = name === undefined ? undefined : policy.local?.(name);
    if (local) {
      this.counts.local++;
      const answer = localAnswer(msg, local);
      if (answer) this.answer(answer, from);
      return;
    }
    if (!policy.forward) return refusal(RCODE_REFUSED);
    if (policy.mayAsk) {
      if (name === undefined || !policy.mayAsk(name)) {
        policy.refused?.(name ?? '(unreadable)');
        return refusal(RCODE_REFUSED);
      }
    }
    if (this.inFlight >= (this.opts.maxInFlight ?? 512)) return refusal(RCODE_SERVFAIL);
    this.inFlight++;
    this.relay(msg, from, 0, policy, () => this.inFlight--);
  }

  /** Hands an upstream's answer to the host, once the policy has learnt its addresses. */
  private deliver(query: Buffer, answer: Buffer, to: dgram.RemoteInfo, policy: ClientPolicy): Promise<void> {
    if (!policy.learn) {
      this.counts.relayed++;
      this.answer(answer, to);
      return Promise.resolve();
    }
    let found: { addresses: string[]; ttlSeconds: number };
    try {
      found = answerAddresses(answer);
    } catch {
      found = { addresses: [], ttlSeconds: 0 };
    }
    const learnt = found.addresses.length > 0 ? policy.learn(found.addresses, found.ttlSeconds) : Promise.resolve();
    return learnt.then(
      () => {
        this.counts.relayed++;
        this.answer(answer, to);
      },
      () => {
        this.counts.failed++;
        const failure = errorAnswer(query, RCODE_SERVFAIL);
        if (failure) this.answer(failure, to);
      },
    );
  }

  /** Asks upstream `index`, then the next ones in turn; `done` once the host has its answer. */
  private relay(query: Buffer, from: dgram.RemoteInfo, index: number, policy: ClientPolicy, done: () => void): void {
    const upstream = this.opts.upstreams[index];
    if (!upstream || !this.udp) {
      this.counts.failed++;
      const answer = errorAnswer(query, RCODE_SERVFAIL);
      if (answer) this.answer(answer, from);
      done();
      return;
    }
    const socket = dgram.createSocket(isIP(upstream.address) === 6 ? 'udp6' : 'udp4');
    this.upstreamSockets.add(socket);
    let settled = false;
    const finish = (next: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.upstreamSockets.delete(socket);
      socket.close();
      if (next) this.relay(query, from, index + 1, policy, done);
    };
    const timer = setTimeout(() => finish(true), this.opts.timeoutMs ?? 2000);
    socket.on('error', () => finish(true));
    socket.on('message', (answer, sender) => {
      if (sender.address !== upstream.address || sender.port !== upstream.port) return;
      if (answer.length < HEADER || answer.readUInt16BE(0) !== query.readUInt16BE(0)) return;
      finish(false);
      void this.deliver(query, answer, from, policy).finally(done);
    });
    socket.send(query, upstream.port, upstream.address, (err) => {
      if (err) finish(true);
    });
  }

  private onConnection(socket: Socket): void {
    const peer = socket.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    const policy = this.opts.policy(peer);
    // A narrowed host's answers must be read (see ClientPolicy.learn): it resolves over UDP only, as
    // local names are answered (their answers are small).
    if (!policy?.forward || policy.mayAsk || policy.learn) {
      socket.destroy();
      return;
    }
    this.counts.tcpConnections++;
    this.connections.add(socket);
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.connections.delete(socket));
    socket.pause();
    this.pipeTo(socket, 0);
  }

  /** Pipes the host's connection to the first upstream that accepts one. */
  private pipeTo(socket: Socket, index: number): void {
    const upstream = this.opts.upstreams[index];
    if (!upstream || socket.destroyed) {
      socket.destroy();
      return;
    }
    const outbound = createConnection({ host: upstream.address, port: upstream.port, timeout: this.opts.timeoutMs ?? 2000 });
    const failed = () => {
      outbound.destroy();
      this.pipeTo(socket, index + 1);
    };
    outbound.once('error', failed);
    outbound.once('timeout', failed);
    outbound.once('connect', () => {
      outbound.off('error', failed);
      outbound.off('timeout', failed);
      outbound.setTimeout(0);
      outbound.on('error', () => socket.destroy());
      outbound.on('close', () => socket.destroy());
      socket.on('close', () => outbound.destroy());
      socket.pipe(outbound).pipe(socket);
      socket.resume();
    });
  }
}
