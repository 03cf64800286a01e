/**
 * The CLI's HTTP client. It finds the server through BERTH_URL and BERTH_TOKEN, or, on the server's
 * own machine, through the data dir (server.json and token), so a local user needs neither. An API
 * served over HTTPS with a certificate of a private CA (or self-signed) is trusted through
 * BERTH_CA_FILE, or on the server's machine through the certificate file server.json names.
 */
import { existsSync, readFileSync } from 'node:fs';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { BerthError, type ErrorBody } from '../core/errors.js';

export interface ClientConfig {
  url: string;
  token: string;
  /** PEM certificates trusted besides the well-known CAs (an API with a private CA's certificate). */
  ca?: string;
}

export function resolveClientConfig(opts: { url?: string | undefined; token?: string | undefined; dataDir: string; caFile?: string | undefined }): ClientConfig {
  let url = opts.url;
  let token = opts.token;
  let caFile = opts.caFile;
  if (!url) {
    try {
      const info = JSON.parse(readFileSync(join(opts.dataDir, 'server.json'), 'utf8')) as { url?: string; tlsCertFile?: string };
      url = info.url;
      caFile ??= info.tlsCertFile;
    } catch {
      // fall through to the error below
    }
  }
  if (!url) {
    throw new BerthError('server_unreachable', `no berth server is running for ${opts.dataDir}`, 'Start one with `berth server`, or set BERTH_URL (and BERTH_TOKEN) to reach a remote one.');
  }
  if (!token) {
    const file = join(opts.dataDir, 'token');
    if (existsSync(file)) token = readFileSync(file, 'utf8').trim();
  }
  if (!token) throw new BerthError('unauthorized', 'no API token', `Set BERTH_TOKEN, or run on the server's machine where ${join(opts.dataDir, 'token')} exists.`);
  let ca: string | undefined;
  if (caFile) {
    try {
      ca = readFileSync(caFile, 'utf8');
    } catch (err) {
      throw new BerthError('validation_failed', `the CA file ${caFile} cannot be read: ${err instanceof Error ? err.message : String(err)}`, 'Set BERTH_CA_FILE to a readable PEM file (the certificate of the CA that issued the server\'s), or unset it.');
    }
  }
  return { url: url.replace(/\/$/, ''), token, ...(ca ? { ca } : {}) };
}

export class ApiClient {
  /** With a CA of its own: an agent that trusts it (and the well-known CAs) too. */
  private readonly httpsAgent: https.Agent;
  private readonly trusted: string[] | undefined;

  constructor(private readonly config: ClientConfig) {
    this.trusted = config.ca ? [...rootCertificates, config.ca] : undefined;
    this.httpsAgent = this.trusted ? new https.Agent({ keepAlive: true, ca: this.trusted }) : sharedHttpsAgent;
  }

  /** The server's address (never the token). */
  get url(): string {
    return this.config.url;
  }

  /** The address of the dashboard with the token, to open once in a browser (it then keeps a cookie). */
  dashboardUrl(): string {
    return `${this.config.url}/dashboard?token=${encodeURIComponent(this.config.token)}`;
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', path, undefined, signal);
  }

  /** A GET whose answer is not JSON (a recording), as text. */
  async getText(path: string, signal?: AbortSignal): Promise<string> {
    const res = await this.send('GET', path, undefined, signal);
    if (!ok(res)) throw await toError(res);
    return readText(res);
  }

  post<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    return this.request<T>('POST', path, body ?? {}, signal);
  }

  put<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    return this.request<T>('PUT', path, body, signal);
  }

  patch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, body);
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /** Streams newline-delimited JSON events until the server ends the response. */
  async *stream(path: string, signal?: AbortSignal): AsyncGenerator<unknown> {
    yield* this.ndjson('GET', path, undefined, signal);
  }

  /** POSTs `body` and streams the newline-delimited JSON events of the answer (a 4xx/5xx before streaming throws). */
  async *streamPost(path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<unknown> {
    yield* this.ndjson('POST', path, body ?? {}, signal);
  }

  /**
   * Reads a text/event-stream answer: each message's `id` and `data` (comments and `retry` are
   * skipped) until the server ends it. `lastEventId` resumes after that id; `onOpen` is called once
   * the server has answered 2xx.
   */
  async *sse(path: string, opts: { signal?: AbortSignal; lastEventId?: string; onOpen?: () => void } = {}): AsyncGenerator<{ id: string | undefined; data: string }> {
    const res = await this.send('GET', path, undefined, opts.signal, { accept: 'text/event-stream', ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}) });
    if (!ok(res)) throw await toError(res);
    opts.onOpen?.();
    let id: string | undefined;
    let data: string[] = [];
    for await (const raw of lines(res)) {
      const line = raw.replace(/\r$/, '');
      if (line === '') {
        if (data.length > 0) yield { id, data: data.join('\n') };
        id = undefined;
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id') id = value;
        else if (field === 'data') data.push(value);
      }
    }
  }

  /**
   * Opens a WebSocket to the API (a shell session). A refusal before the upgrade throws the
   * server's error, as any call does. `ws` is loaded only here: most CLI commands never need it.
   */
  async openSocket(path: string): Promise<import('ws').WebSocket> {
    const { WebSocket } = await import('ws');
    const url = `${this.config.url.replace(/^http/, 'ws')}${path}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.config.token}` }, perMessageDeflate: false, ...(this.trusted ? { ca: this.trusted } : {}) });
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res) => void toError(res).then(reject));
      ws.once('error', (err) => reject(new BerthError('server_unreachable', `cannot reach the berth server at ${this.config.url}: ${err.message}`, 'Start it with `berth server`, or check BERTH_URL.')));
    });
  }

  private async *ndjson(method: string, path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<unknown> {
    const res = await this.send(method, path, body, signal);
    if (!ok(res)) throw await toError(res);
    // A last event without its newline counts too (the server does end each with one; a proxy might not).
    for await (const line of lines(res, { last: true })) if (line.trim()) yield JSON.parse(line) as unknown;
  }

  private async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.send(method, path, body, signal);
    if (!ok(res)) throw await toError(res);
    return JSON.parse(await readText(res)) as T;
  }

  /**
   * One request over node:http(s) with a kept-alive connection. Not fetch(): its first call loads
   * undici (~30 ms of a one-shot CLI command), and each call costs about three times the CPU, which
   * on a 2-core machine added 0.5-1.8 ms to a 4-6 ms Run Command round trip (docs/benchmarks.md).
   */
  private send(method: string, path: string, body: unknown, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<IncomingMessage> {
    const url = new URL(`${this.config.url}${path}`);
    const payload = body !== undefined ? JSON.stringify(body) : undefined;
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const unreachable = (err: Error): void =>
        reject(new BerthError('server_unreachable', `cannot reach the berth server at ${this.config.url}: ${err.message}`, 'Start it with `berth server`, or check BERTH_URL.'));
      // An aborted request rejects with the signal's reason: the caller stopped it, the server is fine.
      if (signal?.aborted) return reject(abortError(signal));
      const req = transport.request(url, {
        method,
        agent: url.protocol === 'https:' ? this.httpsAgent : httpAgent,
        headers: {
          authorization: `Bearer ${this.config.token}`,
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}),
          ...headers,
        },
        ...(signal ? { signal } : {}),
      });
      req.once('response', resolve);
      req.once('error', (err) => (signal?.aborted ? reject(abortError(signal)) : unreachable(err)));
      req.end(payload);
    });
  }
}

/**
 * Kept-alive connections, reused by the calls of one process (a CLI command's polls, a benchmark's
 * loop); unref'd by Node when idle, so they never hold a finished command's process open.
 */
const httpAgent = new http.Agent({ keepAlive: true });
const sharedHttpsAgent = new https.Agent({ keepAlive: true });

function ok(res: IncomingMessage): boolean {
  const status = res.statusCode ?? 0;
  return status >= 200 && status < 300;
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('the request was aborted');
}

async function readText(res: IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const chunk of res) text += chunk as string;
  return text;
}

/** The lines of a streamed answer as they arrive; with `last`, also a final line without its newline. */
async function* lines(res: IncomingMessage, opts: { last?: boolean } = {}): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let buffered = '';
  for await (const chunk of res) {
    buffered += decoder.write(chunk as Buffer);
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      yield buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
    }
  }
  buffered += decoder.end();
  if (opts.last && buffered !== '') yield buffered;
}

async function toError(res: IncomingMessage): Promise<BerthError> {
  let body: Partial<ErrorBody> = {};
  try {
    body = JSON.parse(await readText(res)) as Partial<ErrorBody>;
  } catch {
    // not JSON
  }
  const status = res.statusCode ?? 0;
  const err = new BerthError(body.code ?? 'internal', body.message ?? `HTTP ${status}`, body.hint ?? '', body.details);
  Object.defineProperty(err, 'status', { value: status });
  return err;
}
