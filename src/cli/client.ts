/**
 * The CLI's HTTP client. It finds the server through BERTH_URL and BERTH_TOKEN, or, on the server's
 * own machine, through the data dir (server.json and token), so a local user needs neither.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError, type ErrorBody } from '../core/errors.js';

export interface ClientConfig {
  url: string;
  token: string;
}

export function resolveClientConfig(opts: { url?: string | undefined; token?: string | undefined; dataDir: string }): ClientConfig {
  let url = opts.url;
  let token = opts.token;
  if (!url) {
    try {
      const info = JSON.parse(readFileSync(join(opts.dataDir, 'server.json'), 'utf8')) as { url?: string };
      url = info.url;
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
  return { url: url.replace(/\/$/, ''), token };
}

export class ApiClient {
  constructor(private readonly config: ClientConfig) {}

  /** The address of the dashboard with the token, to open once in a browser (it then keeps a cookie). */
  dashboardUrl(): string {
    return `${this.config.url}/dashboard?token=${encodeURIComponent(this.config.token)}`;
  }

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', path, undefined, signal);
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
    const res = await this.fetch('GET', path, undefined, opts.signal, { accept: 'text/event-stream', ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}) });
    if (!res.ok) throw await toError(res);
    opts.onOpen?.();
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buffered = '';
    let id: string | undefined;
    let data: string[] = [];
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).replace(/\r$/, '');
        buffered = buffered.slice(nl + 1);
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
  }

  private async *ndjson(method: string, path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<unknown> {
    const res = await this.fetch(method, path, body, signal);
    if (!res.ok) throw await toError(res);
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of res.body) {
      buffered += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line) as unknown;
      }
    }
    // A last event without its newline (the server does end each with one; a proxy might not).
    buffered += decoder.decode();
    if (buffered.trim()) yield JSON.parse(buffered) as unknown;
  }

  private async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.fetch(method, path, body, signal);
    if (!res.ok) throw await toError(res);
    return (await res.json()) as T;
  }

  private async fetch(method: string, path: string, body: unknown, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<Response> {
    try {
      return await fetch(`${this.config.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.config.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      throw new BerthError('server_unreachable', `cannot reach the berth server at ${this.config.url}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : String(err)}`, 'Start it with `berth server`, or check BERTH_URL.');
    }
  }
}

async function toError(res: Response): Promise<BerthError> {
  let body: Partial<ErrorBody> = {};
  try {
    body = (await res.json()) as Partial<ErrorBody>;
  } catch {
    // not JSON
  }
  const err = new BerthError(body.code ?? 'internal', body.message ?? `HTTP ${res.status}`, body.hint ?? '', body.details);
  Object.defineProperty(err, 'status', { value: res.status });
  return err;
}
