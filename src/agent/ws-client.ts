/**
 * A minimal WebSocket client (RFC 6455): text frames, ping/pong, close, client masking, fragmented
 * messages. Hand-written on purpose: the agent runs in every host, and the `ws` package pulls in
 * http, https, tls, zlib and streams — about 7 MB more RSS per agent. `wss://` loads `tls` lazily.
 * The server side uses `ws`; the two are tested against each other.
 */
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { endianness } from 'node:os';
import { EventEmitter } from 'node:events';
import { connect as netConnect, isIP, type Socket } from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP_CONT = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
const MAX_MESSAGE = 16 * 1024 * 1024;

export interface WsClientOptions {
  headers?: Record<string, string>;
  handshakeTimeoutMs?: number;
  /** For wss://: the CA certificates (PEM) to trust instead of the system's roots. */
  ca?: string;
}

/**
 * Events: 'open', 'message' (text: string), 'unexpected-response' (status: number), 'close'
 * (code: number), 'error' (err: Error). 'close' always follows an error or a failed handshake.
 */
export class WsClient extends EventEmitter {
  private socket: Socket | undefined;
  private buffer: Buffer = Buffer.alloc(0);
  private open = false;
  private closed = false;
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;

  constructor(url: string, opts: WsClientOptions = {}) {
    super();
    void this.start(new URL(url), opts).catch((err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))));
  }

  get isOpen(): boolean {
    return this.open;
  }

  send(text: string): void {
    if (this.open) this.writeFrame(OP_TEXT, Buffer.from(text, 'utf8'));
  }

  close(code = 1000, reason = ''): void {
    if (!this.socket || this.closed) return;
    if (this.open) {
      const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
      payload.writeUInt16BE(code, 0);
      payload.write(reason, 2);
      this.writeFrame(OP_CLOSE, payload);
    }
    this.socket.end();
    this.finish(code);
  }

  /** Drops the connection at once, without a closing handshake. */
  terminate(): void {
    this.socket?.destroy();
    this.finish(1006);
  }

  private async start(url: URL, opts: WsClientOptions): Promise<void> {
    const secure = url.protocol === 'wss:';
    if (!secure && url.protocol !== 'ws:') throw new Error(`unsupported URL scheme ${url.protocol}`);
    const port = Number(url.port) || (secure ? 443 : 80);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // SNI carries names only (RFC 6066): an address is checked against the certificate's IP SANs.
    const tlsOptions = { host, port, ...(isIP(host) ? {} : { servername: host }), ...(opts.ca ? { ca: opts.ca } : {}) };
    const socket = secure ? (await import('node:tls')).connect(tlsOptions) : netConnect({ host, port });
    this.socket = socket;
    socket.setNoDelay(true);
    const key = randomBytes(16).toString('base64');
    const timer = setTimeout(() => this.fail(new Error('WebSocket handshake timed out')), opts.handshakeTimeoutMs ?? 5000);
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      const lines = [
        `GET ${url.pathname}${url.search} HTTP/1.1`,
        `Host: ${url.host}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
        ...Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
      ];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      if (!this.open) {
        const end = this.buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        clearTimeout(timer);
        if (!this.acceptHandshake(this.buffer.subarray(0, end).toString('latin1'), key)) return;
        this.buffer = this.buffer.subarray(end + 4);
      }
      this.readFrames();
    });
    socket.on('error', (err: Error) => this.fail(err));
    socket.on('close', () => {
      clearTimeout(timer);
      this.finish(1006);
    });
  }

  private acceptHandshake(head: string, key: string): boolean {
    const [statusLine = '', ...headerLines] = head.split('\r\n');
    const status = Number(statusLine.split(' ')[1]);
    if (status !== 101) {
      this.emit('unexpected-response', status);
      this.terminate();
      return false;
    }
    const accept = headerLines.find((l) => l.toLowerCase().startsWith('sec-websocket-accept:'))?.slice(21).trim();
    const expected = createHash('sha1').update(key + GUID).digest('base64');
    if (accept !== expected) {
      this.fail(new Error('WebSocket handshake: bad Sec-WebSocket-Accept'));
      return false;
    }
    this.open = true;
    this.emit('open');
    return true;
  }

  private readFrames(): void {
    while (this.buffer.length >= 2) {
      const b0 = this.buffer[0] ?? 0;
      const b1 = this.buffer[1] ?? 0;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      let length = b1 & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if ((b1 & 0x80) !== 0) return this.fail(new Error('WebSocket: the server sent a masked frame'));
      if (length > MAX_MESSAGE) return this.fail(new Error('WebSocket: frame too large'));
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.buffer = this.buffer.subarray(offset + length);
      this.onFrame(fin, opcode, payload);
      if (this.closed) return;
    }
  }

  private onFrame(fin: boolean, opcode: number, payload: Buffer): void {
    switch (opcode) {
      case OP_PING:
        this.writeFrame(OP_PONG, payload);
        return;
      case OP_PONG:
        return;
      case OP_CLOSE:
        this.close(payload.length >= 2 ? payload.readUInt16BE(0) : 1005);
        return;
      case OP_TEXT:
      case OP_BINARY:
      case OP_CONT: {
        this.fragments.push(Buffer.from(payload));
        this.fragmentBytes += payload.length;
        if (this.fragmentBytes > MAX_MESSAGE) return this.fail(new Error('WebSocket: message too large'));
        if (!fin) return;
        const message = Buffer.concat(this.fragments, this.fragmentBytes).toString('utf8');
        this.fragments = [];
        this.fragmentBytes = 0;
        this.emit('message', message);
        return;
      }
      default:
        this.fail(new Error(`WebSocket: unknown opcode ${opcode}`));
    }
  }

  private writeFrame(opcode: number, payload: Buffer): void {
    const socket = this.socket;
    if (!socket) return;
    const length = payload.length;
    const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10;
    const header = Buffer.allocUnsafe(headerLength + 4);
    header[0] = 0x80 | opcode;
    if (length < 126) {
      header[1] = 0x80 | length;
    } else if (length < 65536) {
      header[1] = 0x80 | 126;
      header.writeUInt16BE(length, 2);
    } else {
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(length), 2);
    }
    randomFillSync(header, headerLength, 4);
    // Header and body leave in one write (corked).
    socket.cork();
    socket.write(header);
    if (length > 0) socket.write(masked(payload, header, headerLength));
    socket.uncork();
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.emit('error', err);
    this.socket?.destroy();
    this.finish(1006);
  }

  private finish(code: number): void {
    if (this.closed) return;
    this.closed = true;
    this.open = false;
    this.emit('close', code);
  }
}

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * The payload XORed with the 4-byte mask at `mask[at]`, four bytes at a time. The agent runs
 * without V8's optimizing compilers (for its memory), where a byte-at-a-time loop cost ~60 ns a
 * byte: 0.02 ms for a small result, ~8 ms for one carrying 128 KiB of output.
 */
function masked(payload: Buffer, mask: Buffer, at: number): Buffer {
  const length = payload.length;
  // Its own ArrayBuffer, so the word view starts aligned.
  const out = Buffer.allocUnsafeSlow(length);
  payload.copy(out);
  const m0 = mask[at] ?? 0;
  const m1 = mask[at + 1] ?? 0;
  const m2 = mask[at + 2] ?? 0;
  const m3 = mask[at + 3] ?? 0;
  const word = (LITTLE_ENDIAN ? m0 | (m1 << 8) | (m2 << 16) | (m3 << 24) : (m0 << 24) | (m1 << 16) | (m2 << 8) | m3) >>> 0;
  const words = new Uint32Array(out.buffer, 0, length >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = (words[i] ?? 0) ^ word;
  const keys = [m0, m1, m2, m3];
  for (let i = words.length * 4; i < length; i++) out[i] = (out[i] ?? 0) ^ (keys[i & 3] ?? 0);
  return out;
}
